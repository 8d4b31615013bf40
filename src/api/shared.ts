/**
 * What the API's route modules share: the dependencies createApp is given, the request variables,
 * the error body every refusal uses, the scope check's type and the OpenAPI security requirement.
 */
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { Logger } from 'pino';
import type { EventBus } from '../events/bus.js';
import type { Engine } from '../service/engine.js';
import type { JobSystem } from '../service/job-system.js';
import type { Metrics } from '../service/metrics.js';
import type { ApiToken } from './auth.js';
import { ErrorSchema } from './schemas.js';
import type { Session, Sessions } from './session.js';

export interface AppDeps {
  engine: Engine;
  /** The events the service published and its webhooks' deliveries. */
  events: EventBus;
  jobs: JobSystem;
  /** This replica's name (replicas sharing PostgreSQL), for /readyz. */
  replica?: string | undefined;
  metrics: Metrics;
  tokens: ApiToken[];
  logger: Logger;
  version: string;
  /** False while starting or shutting down (GET /readyz answers 503). */
  ready: () => boolean;
  maxUpload: number;
  /** Web console sessions (cookies signed with the server's session key); none: no console sign-in. */
  sessions?: Sessions | undefined;
  /** Takes the server's own paths out of error messages (see pathRedactor). */
  redact?: ((text: string) => string) | undefined;
}

export type Env = {
  Variables: {
    /** The valid API token the request presented (absent: none, or not a valid one). */
    token: ApiToken;
    /** The request presented a bearer token (valid or not): a 401 then says it is not valid. */
    presented: boolean;
    requestId: string;
    /** The web console session the request came with (instead of a bearer token). */
    session: Session;
    /** The endpoint the metrics count a request under, where the route's own path would name too much (/v2/). */
    endpoint: string;
  };
};

/** The Hono app every route module adds to (one app: validation, errors and middleware are its own). */
export type ApiApp = OpenAPIHono<Env>;

export const security = [{ Bearer: [] }];

export function errorBody(code: string, message: string, requestId?: string) {
  return { error: { code, message }, ...(requestId ? { requestId } : {}) };
}

/** An OpenAPI response with a JSON body of `schema`. */
export function json<S>(description: string, schema: S) {
  return { description, content: { 'application/json': { schema } } } as const;
}

export const errorResponses = {
  400: json('Invalid request', ErrorSchema),
  401: json('No valid API token', ErrorSchema),
  403: json("The token's scopes do not allow this, or the registry is not allowed", ErrorSchema),
  404: json('Not found', ErrorSchema),
  500: json('The service failed (the message says where; no server path in it)', ErrorSchema),
} as const;

/** What a route that talks to a registry (or queues a job) can answer besides: a full queue, a registry that failed. */
export const registryResponses = {
  429: json(
    'Too many jobs waiting (server.max-queued), or the registry rate-limited this service',
    ErrorSchema,
  ),
  502: json('The registry (or its token service) answered with an error or not at all', ErrorSchema),
} as const;
