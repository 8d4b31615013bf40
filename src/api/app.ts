/**
 * The HTTP API: middleware, errors and the OpenAPI document here; the routes by resource in
 * health.ts, jobs.ts, archives.ts and registries.ts (the work is in service/ and the engine). createApp
 * takes everything it uses, so tests drive it with app.request() or over a socket.
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import type { MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ApiScope } from '../config/stowage.js';
import { ERROR_CODES, toStowageError } from '../errors.js';
import { archiveRoutes } from './archives.js';
import { allows, findToken } from './auth.js';
import { healthRoutes } from './health.js';
import { jobRoutes } from './jobs.js';
import { registryRoutes } from './registries.js';
import { type ApiApp, type AppDeps, type Env, errorBody } from './shared.js';

export type { AppDeps } from './shared.js';

export function createApp(deps: AppDeps): ApiApp {
  const { logger } = deps;
  const app = new OpenAPIHono<Env>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
        return c.json(
          errorBody(
            'INVALID_ARGUMENT',
            `invalid request: ${where}${issue?.message ?? 'malformed'}`,
            c.get('requestId'),
          ),
          400,
        );
      }
    },
  });

  // Request id, access log (method, path, status, time: never headers or bodies), API metrics.
  app.use('*', async (c, next) => {
    const incoming = c.req.header('x-request-id');
    const requestId = incoming && /^[A-Za-z0-9._-]{1,64}$/.test(incoming) ? incoming : crypto.randomUUID();
    c.set('requestId', requestId);
    const started = performance.now();
    await next();
    c.header('x-request-id', requestId);
    const seconds = (performance.now() - started) / 1000;
    const route = c.req.routePath || 'unmatched';
    deps.metrics.observeApi(c.req.method, route, c.res.status, seconds);
    logger.info(
      {
        requestId,
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        ms: Math.round(seconds * 1000),
        token: c.get('token')?.name,
      },
      'request',
    );
  });

  app.onError((e, c) => {
    if (e instanceof HTTPException && e.status === 415) {
      // The gate in front of JSON routes: say what to send, not just that this was not it.
      const sent = c.req.header('content-type');
      return c.json(
        errorBody(
          'UNSUPPORTED',
          `${c.req.method} ${c.req.path} takes a JSON body: send it with content-type: application/json${sent ? ` (this request said ${JSON.stringify(sent.slice(0, 100))})` : ' (this request named no content-type)'}`,
          c.get('requestId'),
        ),
        415,
      );
    }
    if (e instanceof HTTPException && e.status < 500) {
      // Hono's own refusals (a body that is not JSON, ...).
      const status = e.status as 400;
      return c.json(
        errorBody(
          status === 400 ? 'INVALID_ARGUMENT' : 'HTTP',
          e.message || 'invalid request',
          c.get('requestId'),
        ),
        status,
      );
    }
    const err = toStowageError(e);
    const http: number = ERROR_CODES[err.code]?.http ?? 500;
    // 499 is nginx's "client closed": the client is gone; 409 is what a live one would be told.
    const status = (http === 499 ? 409 : http) as 400;
    const message = deps.redact ? deps.redact(err.message) : err.message;
    if (status >= 500)
      logger.error({ requestId: c.get('requestId'), code: err.code, err: message }, 'request failed');
    return c.json(errorBody(err.code, message, c.get('requestId')), status);
  });
  app.notFound((c) =>
    c.json(
      errorBody(
        'NOT_FOUND',
        `no route ${c.req.method} ${c.req.path}; see GET /openapi.json`,
        c.get('requestId'),
      ),
      404,
    ),
  );

  const need =
    (scope: ApiScope): MiddlewareHandler<Env> =>
    async (c, next) => {
      const header = c.req.header('authorization') ?? '';
      const m = /^Bearer\s+(\S+)$/i.exec(header);
      const token = m ? findToken(deps.tokens, m[1]!) : undefined;
      if (!token) {
        c.header('WWW-Authenticate', 'Bearer realm="stowage"');
        return c.json(
          errorBody(
            'UNAUTHORIZED',
            m
              ? 'the API token is not valid'
              : 'this endpoint needs an API token: send Authorization: Bearer TOKEN',
            c.get('requestId'),
          ),
          401,
        );
      }
      c.set('token', token);
      if (!allows(token, scope)) {
        return c.json(
          errorBody(
            'DENIED',
            `token "${token.name}" lacks the "${scope}" scope this needs`,
            c.get('requestId'),
          ),
          403,
        );
      }
      await next();
    };

  app.openAPIRegistry.registerComponent('securitySchemes', 'Bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API token from stowage.toml [[server.token]] (stowage token makes one)',
  });

  // The routes, by resource.
  healthRoutes(app, deps, need);
  jobRoutes(app, deps, need);
  archiveRoutes(app, deps, need);
  registryRoutes(app, deps, need);

  app.use('/openapi.json', need('read'));
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'stowage',
      version: deps.version,
      description:
        'Registry-to-tarball sync gateway: pulls into a versioned archive store, downloads, pushes and syncs.',
    },
  });

  return app;
}
