/**
 * The HTTP API: routes and middleware only (the work is in service/ and the engine). createApp takes
 * everything it uses, so tests can drive it with app.request() or over a socket.
 */

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context as HonoContext, MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { streamSSE } from 'hono/streaming';
import type { Logger } from 'pino';
import type { ApiScope } from '../config/stowage.js';
import { ERROR_CODES, StowageError, toStowageError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import {
  formatReference,
  parseReference,
  parseRepository,
  repositoryName,
  withDefaultTag,
} from '../reference/reference.js';
import type { Job, JobManager } from '../service/jobs.js';
import type { Metrics } from '../service/metrics.js';
import {
  checkReachable,
  deleteVersion,
  destinationFor,
  dockerArchiveFile,
  type Engine,
  ensureChecksum,
  importUpload,
  parsePlatforms,
  parsePullReference,
} from '../service/operations.js';
import type { StoredVersion } from '../store/store.js';
import { type ArchiveView, ociArchiveView } from '../store/view.js';
import { inspect, listTags } from '../transfer/inspect.js';
import { type ApiToken, allows, findToken } from './auth.js';
import { parseRange } from './range.js';
import {
  ArchiveSchema,
  ErrorSchema,
  IdParam,
  JobAcceptedSchema,
  JobSchema,
  PullRequestSchema,
  PushRequestSchema,
  SyncRequestSchema,
  TagsSchema,
} from './schemas.js';

export interface AppDeps {
  engine: Engine;
  jobs: JobManager;
  metrics: Metrics;
  tokens: ApiToken[];
  logger: Logger;
  version: string;
  /** False while starting or shutting down (GET /readyz answers 503). */
  ready: () => boolean;
  maxUpload: number;
  /** Takes the server's own paths out of error messages (see pathRedactor). */
  redact?: ((text: string) => string) | undefined;
}

type Env = { Variables: { token: ApiToken; requestId: string } };

const SSE_KEEPALIVE_MS = 15_000;

function errorBody(code: string, message: string, requestId?: string) {
  return { error: { code, message }, ...(requestId ? { requestId } : {}) };
}

const errorResponses = {
  400: { description: 'Invalid request', content: { 'application/json': { schema: ErrorSchema } } },
  401: { description: 'No valid API token', content: { 'application/json': { schema: ErrorSchema } } },
  403: {
    description: "The token's scopes do not allow this, or the registry is not allowed",
    content: { 'application/json': { schema: ErrorSchema } },
  },
  404: { description: 'Not found', content: { 'application/json': { schema: ErrorSchema } } },
} as const;

function jobView(job: Job): z.infer<typeof JobSchema> {
  const links: Record<string, string> = { self: `/v1/jobs/${job.id}`, events: `/v1/jobs/${job.id}/events` };
  const archives = (job.result as { archives?: { id: string }[] } | undefined)?.archives;
  if (job.state === 'succeeded' && archives) {
    archives.forEach((a, i) => {
      links[`archive${i}`] = `/v1/archives/${a.id}/content`;
    });
  }
  return { ...job, links };
}

function archiveView(v: StoredVersion, latest: boolean): z.infer<typeof ArchiveSchema> {
  return {
    id: v.id,
    repository: v.repository,
    tag: v.tag,
    digest: v.descriptor.digest,
    mediaType: v.descriptor.mediaType,
    platforms: v.platforms,
    source: v.source,
    taken: v.taken,
    latest,
    ...(v.archive ? { sha256: v.archive.sha256, size: v.archive.size } : {}),
    links: { self: `/v1/archives/${v.id}`, content: `/v1/archives/${v.id}/content` },
  };
}

function withLatest(all: StoredVersion[]): { v: StoredVersion; latest: boolean }[] {
  const newest = new Map<string, string>();
  for (const v of all) newest.set(`${v.repository}:${v.tag}`, v.id);
  return all.map((v) => ({ v, latest: newest.get(`${v.repository}:${v.tag}`) === v.id }));
}

export function createApp(deps: AppDeps): OpenAPIHono<Env> {
  const { engine, jobs, logger } = deps;
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
  const security = [{ Bearer: [] }];

  app.openAPIRegistry.registerComponent('securitySchemes', 'Bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API token from stowage.toml [[server.token]] (stowage token makes one)',
  });

  // --- health --------------------------------------------------------------------------------
  app.openapi(
    createRoute({
      method: 'get',
      path: '/healthz',
      summary: 'Liveness: the process answers',
      responses: {
        200: {
          description: 'alive',
          content: { 'application/json': { schema: z.object({ status: z.string() }) } },
        },
      },
    }),
    (c) => c.json({ status: 'ok' }, 200),
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: '/readyz',
      summary: 'Readiness: the store is open and jobs are accepted',
      responses: {
        200: {
          description: 'ready',
          content: { 'application/json': { schema: z.object({ status: z.string() }) } },
        },
        503: {
          description: 'starting or shutting down',
          content: { 'application/json': { schema: z.object({ status: z.string() }) } },
        },
      },
    }),
    (c) => (deps.ready() ? c.json({ status: 'ready' }, 200) : c.json({ status: 'not ready' }, 503)),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/metrics',
      summary: 'Prometheus metrics',
      security,
      middleware: [need('read')] as const,
      responses: {
        200: { description: 'Prometheus text format', content: { 'text/plain': { schema: z.string() } } },
        ...errorResponses,
      },
    }),
    async (c) => {
      const text = await deps.metrics.registry.metrics();
      return c.text(text, 200, { 'content-type': deps.metrics.registry.contentType });
    },
  );

  // --- jobs ----------------------------------------------------------------------------------
  const accepted = (c: HonoContext<Env>, r: { job: Job; shared: boolean }) => {
    c.header('Location', `/v1/jobs/${r.job.id}`);
    return c.json({ ...jobView(r.job), shared: r.shared }, 202);
  };

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/pulls',
      summary: 'Pull images into the archive store',
      description:
        'Each tag goes into the store as a version (HEAD first: a version the store has is not fetched again; blobs the store holds are never fetched). An identical request while one is queued or running shares its job.',
      security,
      middleware: [need('pull')] as const,
      request: { body: { required: true, content: { 'application/json': { schema: PullRequestSchema } } } },
      responses: {
        202: {
          description: 'accepted: a job',
          content: { 'application/json': { schema: JobAcceptedSchema } },
        },
        ...errorResponses,
        429: {
          description: 'the job queue is full',
          content: { 'application/json': { schema: ErrorSchema } },
        },
      },
    }),
    (c) => {
      const body = c.req.valid('json');
      const refs = [...(body.refs ?? []), ...(body.ref ? [body.ref] : [])];
      if (refs.length === 0)
        throw new StowageError('INVALID_ARGUMENT', 'give "ref" or "refs": the images to pull');
      const platforms = parsePlatforms(body.platforms);
      // Checked now, so a bad or forbidden reference is a 4xx, not a failed job.
      const normalized = refs.map((r) => formatReference(parsePullReference(engine, r)));
      const request = { refs, platforms: platforms ?? 'all', format: body.format ?? 'oci-archive' };
      const key = `pull:${JSON.stringify([[...new Set(normalized)].sort(), platforms ?? 'all'])}`;
      return accepted(c, jobs.submit('pull', request, c.get('token').name, key));
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/pushes',
      summary: 'Push a stored version to a registry, digests intact',
      security,
      middleware: [need('push')] as const,
      request: { body: { required: true, content: { 'application/json': { schema: PushRequestSchema } } } },
      responses: {
        202: {
          description: 'accepted: a job',
          content: { 'application/json': { schema: JobAcceptedSchema } },
        },
        ...errorResponses,
      },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const version = await engine.store.find(body.archive);
      const destination = destinationFor(engine, body.destination, version);
      const request = { archive: version.id, destination };
      return accepted(
        c,
        jobs.submit('push', request, c.get('token').name, `push:${version.id}>${destination}`),
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/syncs',
      summary: 'Run sync jobs of stowage.toml',
      security,
      middleware: [need('sync')] as const,
      request: { body: { required: false, content: { 'application/json': { schema: SyncRequestSchema } } } },
      responses: {
        202: {
          description: 'accepted: a job',
          content: { 'application/json': { schema: JobAcceptedSchema } },
        },
        ...errorResponses,
      },
    }),
    (c) => {
      const body = c.req.valid('json');
      const names = body.jobs?.length ? [...new Set(body.jobs)].sort() : undefined;
      const configured = engine.config.jobs.map((j) => j.name);
      const unknown = (names ?? []).filter((n) => !configured.includes(n));
      if (unknown.length) {
        throw new StowageError(
          'NOT_FOUND',
          `no sync job named ${unknown.join(', ')}; configured: ${configured.join(', ') || 'none'}`,
        );
      }
      if (configured.length === 0)
        throw new StowageError('INVALID_ARGUMENT', 'stowage.toml has no sync jobs');
      return accepted(
        c,
        jobs.submit(
          'sync',
          { jobs: names ?? configured },
          c.get('token').name,
          `sync:${JSON.stringify(names ?? null)}`,
        ),
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs',
      summary: 'Jobs, newest first',
      security,
      middleware: [need('read')] as const,
      request: {
        query: z.object({
          kind: z.enum(['pull', 'push', 'sync']).optional(),
          state: z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']).optional(),
          limit: z.coerce.number().int().min(1).max(1000).optional(),
        }),
      },
      responses: {
        200: {
          description: 'jobs',
          content: { 'application/json': { schema: z.object({ jobs: z.array(JobSchema) }) } },
        },
        ...errorResponses,
      },
    }),
    (c) => {
      const q = c.req.valid('query');
      const list = jobs.list(q).slice(0, q.limit ?? 100);
      return c.json({ jobs: list.map(jobView) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs/{id}',
      summary: 'One job',
      security,
      middleware: [need('read')] as const,
      request: { params: IdParam },
      responses: {
        200: { description: 'the job', content: { 'application/json': { schema: JobSchema } } },
        ...errorResponses,
      },
    }),
    (c) => {
      const job = jobs.get(c.req.valid('param').id);
      if (!job) throw new StowageError('NOT_FOUND', `no job ${c.req.valid('param').id}`);
      return c.json(jobView(job), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/jobs/{id}',
      summary: 'Cancel a job',
      description:
        'A queued job is dropped; a running one is aborted and cleans up (no partial archive, no tag on an incomplete image). Answers the job as it is; it reaches "canceled" when the work has stopped.',
      security,
      middleware: [need('read')] as const,
      request: { params: IdParam },
      responses: {
        202: {
          description: 'cancellation under way or done',
          content: { 'application/json': { schema: JobSchema } },
        },
        ...errorResponses,
      },
    }),
    (c) => {
      const id = c.req.valid('param').id;
      const job = jobs.get(id);
      if (!job) throw new StowageError('NOT_FOUND', `no job ${id}`);
      if (!allows(c.get('token'), job.kind)) {
        throw new StowageError(
          'DENIED',
          `token "${c.get('token').name}" lacks the "${job.kind}" scope to cancel this job`,
        );
      }
      return c.json(jobView(jobs.cancel(id)), 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs/{id}/events',
      summary: "A job's progress as Server-Sent Events",
      description:
        'Every event since the job was queued (state, progress, tag, ...), then live ones, ending with "end" (the outcome). Last-Event-ID resumes after that event.',
      security,
      middleware: [need('read')] as const,
      request: { params: IdParam },
      responses: {
        200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: z.string() } } },
        ...errorResponses,
      },
    }),
    (c) => {
      const id = c.req.valid('param').id;
      if (!jobs.get(id)) throw new StowageError('NOT_FOUND', `no job ${id}`);
      const from = Number(c.req.header('last-event-id') ?? 0) || 0;
      return streamSSE(c, async (stream) => {
        let done!: () => void;
        const ended = new Promise<void>((r) => {
          done = r;
        });
        let writing = Promise.resolve();
        const unsubscribe = jobs.subscribe(
          id,
          from,
          (e) => {
            writing = writing.then(() =>
              stream
                .writeSSE({ id: String(e.seq), event: e.type, data: JSON.stringify(e.data) })
                .catch(() => {}),
            );
          },
          () => {
            void writing.then(done);
          },
        );
        const keepalive = setInterval(() => {
          writing = writing.then(() =>
            stream
              .write(': keep-alive\n\n')
              .then(() => undefined)
              .catch(() => {}),
          );
        }, SSE_KEEPALIVE_MS);
        stream.onAbort(() => done());
        try {
          await ended;
          await writing;
        } finally {
          clearInterval(keepalive);
          unsubscribe();
        }
      });
    },
  );

  // --- archives ------------------------------------------------------------------------------
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/archives',
      summary: 'Stored versions (archives), oldest first',
      security,
      middleware: [need('read')] as const,
      request: {
        query: z.object({
          repository: z.string().optional(),
          tag: z.string().optional(),
          latest: z.enum(['true', 'false']).optional(),
        }),
      },
      responses: {
        200: {
          description: 'archives',
          content: { 'application/json': { schema: z.object({ archives: z.array(ArchiveSchema) }) } },
        },
        ...errorResponses,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      let repository = q.repository;
      if (repository) {
        try {
          repository = repositoryName(parseRepository(repository));
        } catch {
          // Not a repository name: matches nothing.
        }
      }
      const list = withLatest(await engine.store.versions()).filter(
        ({ v, latest }) =>
          (!repository || v.repository === repository) &&
          (!q.tag || v.tag === q.tag) &&
          (q.latest === undefined || latest === (q.latest === 'true')),
      );
      return c.json({ archives: list.map(({ v, latest }) => archiveView(v, latest)) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/archives',
      summary: 'Upload an archive into the store',
      description:
        'The body is an archive in any format stowage reads (oci-archive, docker-archive from docker, podman or skopeo, gzipped or not), streamed to disk within server.max-upload, every blob digest-checked into the store. Each image becomes a version named as the archive names it, or by ?name= for a one-image archive.',
      security,
      middleware: [need('push')] as const,
      request: {
        query: z.object({ name: z.string().max(512).optional() }),
        body: {
          required: true,
          content: { 'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) } },
        },
      },
      responses: {
        201: {
          description: 'stored',
          content: { 'application/json': { schema: z.object({ archives: z.array(ArchiveSchema) }) } },
        },
        ...errorResponses,
        413: {
          description: 'over server.max-upload',
          content: { 'application/json': { schema: ErrorSchema } },
        },
      },
    }),
    async (c) => {
      const length = Number(c.req.header('content-length') ?? Number.NaN);
      if (length > deps.maxUpload) {
        throw new StowageError(
          'TOO_LARGE',
          `the archive (${length} bytes) is over the upload limit of ${deps.maxUpload} bytes (server.max-upload)`,
        );
      }
      const body = c.req.raw.body;
      if (!body)
        throw new StowageError(
          'INVALID_ARCHIVE',
          'the request body is empty; send the archive file as the body',
        );
      const added = await importUpload(engine, body as unknown as AsyncIterable<Uint8Array>, {
        limit: deps.maxUpload,
        name: c.req.valid('query').name,
        source: `upload by ${c.get('token').name}`,
        signal: c.req.raw.signal,
      });
      return c.json({ archives: added.map((v) => archiveView(v, true)) }, 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/archives/{id}',
      summary: 'One stored version',
      security,
      middleware: [need('read')] as const,
      request: { params: IdParam },
      responses: {
        200: { description: 'the archive', content: { 'application/json': { schema: ArchiveSchema } } },
        ...errorResponses,
      },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const all = withLatest(await engine.store.versions());
      const found = all.find(({ v }) => v.id === id);
      if (!found) throw new StowageError('NOT_FOUND', `no archive ${id}; list them with GET /v1/archives`);
      return c.json(archiveView(found.v, found.latest), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/archives/{id}',
      summary: 'Delete a stored version (and blobs no other version uses)',
      security,
      middleware: [need('admin')] as const,
      request: { params: IdParam },
      responses: {
        200: { description: 'deleted', content: { 'application/json': { schema: ArchiveSchema } } },
        ...errorResponses,
      },
    }),
    async (c) => {
      const v = await deleteVersion(engine, c.req.valid('param').id);
      return c.json(archiveView(v, false), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/archives/{id}/content',
      summary: "Download a version's reproducible archive",
      description:
        "oci-archive (default): the whole version, streamed from the store, byte-identical to `stowage archives export`; Content-Length, ETag (its sha256) and single byte ranges are answered without building it. docker-archive: one platform (?platform=, default the host's), made once and kept.",
      security,
      middleware: [need('read')] as const,
      request: {
        params: IdParam,
        query: z.object({
          format: z.enum(['oci-archive', 'docker-archive']).optional(),
          platform: z.string().max(64).optional(),
        }),
      },
      responses: {
        200: {
          description: 'the archive',
          content: { 'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) } },
        },
        206: {
          description: 'a byte range of it',
          content: { 'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) } },
        },
        304: { description: 'not modified (If-None-Match)' },
        416: {
          description: 'range not satisfiable',
          content: { 'application/json': { schema: ErrorSchema } },
        },
        ...errorResponses,
      },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const q = c.req.valid('query');
      const version = (await engine.store.versions()).find((v) => v.id === id);
      if (!version) throw new StowageError('NOT_FOUND', `no archive ${id}; list them with GET /v1/archives`);
      const format = q.format ?? 'oci-archive';
      let view: ArchiveView;
      let sha256: string;
      if (format === 'oci-archive') {
        view = await ociArchiveView(engine.store, version);
        ({ sha256 } = await ensureChecksum(engine.store, version, c.req.raw.signal));
      } else {
        const file = await dockerArchiveFile(engine, version, q.platform, c.req.raw.signal);
        view = fileView(file.path, file.size);
        sha256 = file.sha256;
      }
      const etag = `"sha256:${sha256}"`;
      const name = `${version.repository.replace(/[^A-Za-z0-9._-]+/g, '_')}_${version.tag}${format === 'docker-archive' ? '.docker' : ''}.tar`;
      const headers: Record<string, string> = {
        'content-type': 'application/x-tar',
        'accept-ranges': 'bytes',
        etag,
        'content-disposition': `attachment; filename="${name}"`,
        'x-content-sha256': sha256,
      };
      const inm = c.req.header('if-none-match');
      if (inm?.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
        return c.body(null, 304, headers);
      }
      const ifRange = c.req.header('if-range');
      const rangeHeader = !ifRange || ifRange === etag ? c.req.header('range') : undefined;
      const range = rangeHeader ? parseRange(rangeHeader, view.size) : undefined;
      if (range === 'unsatisfiable') {
        return c.json(
          errorBody(
            'RANGE_NOT_SATISFIABLE',
            `the archive has ${view.size} bytes; ask for a range within them`,
            c.get('requestId'),
          ),
          416,
          {
            'content-range': `bytes */${view.size}`,
          },
        );
      }
      const [start, end] = range ?? [0, view.size - 1];
      headers['content-length'] = String(end - start + 1);
      if (range) headers['content-range'] = `bytes ${start}-${end}/${view.size}`;
      if (c.req.method === 'HEAD') return c.body(null, range ? 206 : 200, headers);
      const status = range ? 206 : 200;
      return c.body(streamOf(view, start, end), status, headers);
    },
  );

  // --- registries ----------------------------------------------------------------------------
  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/registries',
      summary: 'The effective registries.conf (no credentials) and the allow-list',
      security,
      middleware: [need('read')] as const,
      responses: {
        200: {
          description: 'configuration',
          content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } },
        },
        ...errorResponses,
      },
    }),
    (c) => {
      const conf = engine.ctx.conf;
      return c.json(
        {
          files: conf.sources,
          unqualifiedSearchRegistries: conf.unqualifiedSearchRegistries,
          shortNameMode: conf.shortNameMode,
          registries: conf.registries,
          aliases: conf.aliases,
          allowRegistries: engine.config.server['allow-registries'] ?? null,
        },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/tags',
      summary: "A repository's tags",
      security,
      middleware: [need('read')] as const,
      request: { query: z.object({ repository: z.string().min(1).max(512) }) },
      responses: {
        200: { description: 'tags', content: { 'application/json': { schema: TagsSchema } } },
        ...errorResponses,
      },
    }),
    async (c) => {
      const input = c.req.valid('query').repository;
      checkReachable(engine, withDefaultTag(parseRepository(input)));
      const r = await listTags(engine.ctx, input, c.req.raw.signal);
      return c.json({ repository: r.Repository, tags: r.Tags }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/inspect',
      summary: 'Inspect an image in a registry (as skopeo inspect)',
      security,
      middleware: [need('read')] as const,
      request: {
        query: z.object({
          ref: z.string().min(1).max(512),
          raw: z.enum(['true', 'false']).optional(),
          platform: z.string().max(64).optional(),
        }),
      },
      responses: {
        200: {
          description: 'the image',
          content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } },
        },
        ...errorResponses,
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      checkReachable(engine, withDefaultTag(parseReference(q.ref)));
      const r = await inspect(engine.ctx, q.ref, {
        raw: q.raw === 'true',
        platform: q.platform ? parsePlatform(q.platform) : undefined,
        tags: false,
        signal: c.req.raw.signal,
      });
      if (r.kind === 'raw')
        return c.json(JSON.parse(r.bytes.toString('utf8')) as Record<string, unknown>, 200, {
          'docker-content-digest': r.digest,
        });
      if (r.kind === 'summary') return c.json(r.summary, 200);
      return c.json(JSON.parse(r.bytes.toString('utf8')) as Record<string, unknown>, 200);
    },
  );

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

/**
 * Bytes [start, end] of a view as a web stream: chunks go straight from the view (1 MiB file reads) to
 * the socket, a few ahead at most; a client that goes away stops the reads.
 */
function streamOf(view: ArchiveView, start: number, end: number): ReadableStream<Uint8Array> {
  const abort = new AbortController();
  const chunks = view.read(start, end, abort.signal);
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const next = await chunks.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      async cancel() {
        abort.abort();
        await chunks.return(undefined).catch(() => {});
      },
    },
    { highWaterMark: 4 },
  );
}

/** A file as an ArchiveView (the docker-archive downloads). */
function fileView(path: string, size: number): ArchiveView {
  return {
    size,
    async *read(start, end, signal) {
      const s = await stat(path);
      if (s.size !== size) throw new StowageError('IO', `${path} changed size`);
      for await (const c of createReadStream(path, { start, end, highWaterMark: 1 << 20, signal }))
        yield c as Buffer;
    },
  };
}
