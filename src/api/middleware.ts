/**
 * The API's middleware and its answers to what no route handles: request ids and the access log,
 * token authentication and scope checks, validation failures, errors and unknown routes. Every
 * refusal has the same body (errorBody) and names what to do.
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import type { ErrorHandler, Context as HonoContext, MiddlewareHandler, NotFoundHandler } from 'hono';
import { getCookie } from 'hono/cookie';
import { HTTPException } from 'hono/http-exception';
import type { ApiScope } from '../config/stowage.js';
import { ERROR_CODES, toStowageError } from '../errors.js';
import { type ApiToken, allows, findToken } from './auth.js';
import { csrfMatches, SESSION_COOKIE, type Session, type Sessions } from './session.js';
import { type ApiApp, type AppDeps, type Env, errorBody } from './shared.js';

/** A Hono app whose validation failures answer 400 in the API's error shape (each resource module makes one). */
export function newApi(): ApiApp {
  return new OpenAPIHono<Env>({
    defaultHook: (result, c) => {
      if (result.success) return;
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
    },
  });
}

/** Request id (the client's, if it is a sane one), access log and API metrics: never headers or bodies. */
export function requestLog(deps: Pick<AppDeps, 'metrics' | 'logger'>): MiddlewareHandler<Env> {
  return async (c, next) => {
    const incoming = c.req.header('x-request-id');
    const requestId = incoming && /^[A-Za-z0-9._-]{1,64}$/.test(incoming) ? incoming : crypto.randomUUID();
    c.set('requestId', requestId);
    const started = performance.now();
    await next();
    c.header('x-request-id', requestId);
    const seconds = (performance.now() - started) / 1000;
    const route = c.get('endpoint') ?? (c.req.routePath || 'unmatched');
    deps.metrics.observeApi(c.req.method, route, c.res.status, seconds);
    deps.logger.info(
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
  };
}

/**
 * Reads the bearer token, if any, for the routes after it: a valid one is set as the request's token.
 * Without one, a web console session (its cookie) stands for its token; a request with a session that
 * changes something must carry the session's CSRF secret (X-CSRF-Token, or the form's _csrf field) and
 * must not come from another origin: otherwise it is refused here, 403. Refusing a missing token is left
 * to `need`, so the anonymous routes (health) never look at it.
 */
export function authenticate(tokens: ApiToken[], sessions?: Sessions): MiddlewareHandler<Env> {
  return async (c, next) => {
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
    if (m) {
      c.set('presented', true);
      const token = findToken(tokens, m[1]!);
      if (token) c.set('token', token);
      return next();
    }
    const session = sessions?.read(getCookie(c, SESSION_COOKIE), tokens);
    if (session) {
      if (!SAFE_METHODS.has(c.req.method) && !(await sameSiteRequest(c, session))) {
        return c.json(
          errorBody(
            'DENIED',
            'a request that changes something must come from the console itself (its CSRF token was missing or wrong); reload the page and try again',
            c.get('requestId'),
          ),
          403,
        );
      }
      c.set('token', session.token);
      c.set('session', session);
    }
    await next();
  };
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The request carries the session's CSRF secret and, if the browser names its origin, comes from this one. */
async function sameSiteRequest(c: HonoContext<Env>, session: Session): Promise<boolean> {
  const origin = c.req.header('origin');
  if (origin && origin !== new URL(c.req.url).origin) return false;
  let presented = c.req.header('x-csrf-token');
  if (
    !presented &&
    /^application\/x-www-form-urlencoded|^multipart\/form-data/.test(c.req.header('content-type') ?? '')
  ) {
    const field = (await c.req.parseBody())._csrf;
    presented = typeof field === 'string' ? field : undefined;
  }
  return csrfMatches(session, presented);
}

/** Lets a request in only with a valid token holding `scope`: 401 without one, 403 without the scope. */
export function need(scope: ApiScope): MiddlewareHandler<Env> {
  return async (c, next) => {
    const token = c.get('token');
    if (!token) {
      c.header('WWW-Authenticate', 'Bearer realm="stowage"');
      const message = c.get('presented')
        ? 'the API token is not valid'
        : 'this endpoint needs an API token: send Authorization: Bearer TOKEN';
      return c.json(errorBody('UNAUTHORIZED', message, c.get('requestId')), 401);
    }
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
}

/** Errors as the API's error body, with the status their code maps to; server paths redacted. */
export function errorHandler(deps: Pick<AppDeps, 'logger' | 'redact'>): ErrorHandler<Env> {
  return (e, c) => {
    if (e instanceof HTTPException && e.status === 415) {
      // The gate in front of JSON routes: say what to send, not just that this was not it.
      const sent = c.req.header('content-type');
      const said = sent
        ? ` (this request said ${JSON.stringify(sent.slice(0, 100))})`
        : ' (this request named no content-type)';
      return c.json(
        errorBody(
          'UNSUPPORTED',
          `${c.req.method} ${c.req.path} takes a JSON body: send it with content-type: application/json${said}`,
          c.get('requestId'),
        ),
        415,
      );
    }
    if (e instanceof HTTPException && e.status < 500) {
      // Hono's own refusals (a body that is not JSON, ...).
      const status = e.status as 400;
      const code = status === 400 ? 'INVALID_ARGUMENT' : 'HTTP';
      return c.json(errorBody(code, e.message || 'invalid request', c.get('requestId')), status);
    }
    const err = toStowageError(e);
    const http: number = ERROR_CODES[err.code]?.http ?? 500;
    // 499 is nginx's "client closed": the client is gone; 409 is what a live one would be told.
    const status = (http === 499 ? 409 : http) as 400;
    const message = deps.redact ? deps.redact(err.message) : err.message;
    if (status >= 500)
      deps.logger.error({ requestId: c.get('requestId'), code: err.code, err: message }, 'request failed');
    return c.json(errorBody(err.code, message, c.get('requestId')), status);
  };
}

export const notFound: NotFoundHandler<Env> = (c) =>
  c.json(
    errorBody(
      'NOT_FOUND',
      `no route ${c.req.method} ${c.req.path}; the routes are in GET /openapi.json (with an API token of read scope) and, after signing in, at /ui/api`,
      c.get('requestId'),
    ),
    404,
  );
