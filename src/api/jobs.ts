/**
 * Jobs: pulls, pushes and syncs started, listed, followed over Server-Sent Events, and cancelled.
 */
import { createRoute, z } from '@hono/zod-openapi';
import type { Context as HonoContext } from 'hono';
import { streamSSE } from 'hono/streaming';
import { compressionFrom, type LayerCompression } from '../archive/compress.js';
import { StowageError } from '../errors.js';
import { formatReference } from '../reference/reference.js';
import { parsePullReference } from '../service/engine.js';
import { type Job, type JobSystem, scopeOf, syncKey } from '../service/job-system.js';
import { admitPull, destinationFor, parsePlatforms } from '../service/operations.js';
import { type ApiToken, allows } from './auth.js';
import { need, newApi } from './middleware.js';
import {
  IdParam,
  JobAcceptedSchema,
  JobSchema,
  PullRequestSchema,
  PushRequestSchema,
  SyncRequestSchema,
} from './schemas.js';
import {
  type ApiApp,
  type AppDeps,
  type Env,
  errorResponses,
  json,
  registryResponses,
  security,
} from './shared.js';
import { orderedStream } from './sse.js';

export function jobView(job: Job): z.infer<typeof JobSchema> {
  const links: Record<string, string> = { self: `/v1/jobs/${job.id}`, events: `/v1/jobs/${job.id}/events` };
  const archives = (job.result as { archives?: { id: string }[] } | undefined)?.archives;
  const bundle = job.kind === 'bundle' ? (job.result as { id?: string } | undefined)?.id : undefined;
  if (job.state === 'succeeded' && bundle) links.content = `/v1/bundles/${bundle.slice(7, 19)}/content`;
  if (job.state === 'succeeded' && archives) {
    archives.forEach((a, i) => {
      links[`archive${i}`] = `/v1/archives/${a.id}/content`;
    });
  }
  // The job system keeps requests and results as the runners made them; their shapes per kind are the
  // schema's (PullJobRequest, ...), which the runners' own types follow.
  return { ...job, links } as z.infer<typeof JobSchema>;
}

const startPullRoute = createRoute({
  method: 'post',
  path: '/v1/pulls',
  operationId: 'startPull',
  tags: ['Jobs'],
  summary: 'Pull images into the archive store',
  description:
    'Each tag goes into the store as a version (HEAD first: a version the store has is not fetched again; blobs the store holds are never fetched). An identical request while one is queued or running shares its job.',
  security,
  middleware: [need('pull')] as const,
  request: { body: { required: true, content: { 'application/json': { schema: PullRequestSchema } } } },
  responses: {
    202: json('accepted: a job', JobAcceptedSchema),
    ...errorResponses,
    ...registryResponses,
  },
});

const startPushRoute = createRoute({
  method: 'post',
  path: '/v1/pushes',
  operationId: 'startPush',
  tags: ['Jobs'],
  summary: 'Push a stored version to a registry, digests intact',
  security,
  middleware: [need('push')] as const,
  request: { body: { required: true, content: { 'application/json': { schema: PushRequestSchema } } } },
  responses: {
    202: json('accepted: a job', JobAcceptedSchema),
    ...errorResponses,
    ...registryResponses,
  },
});

const startSyncRoute = createRoute({
  method: 'post',
  path: '/v1/syncs',
  operationId: 'startSync',
  tags: ['Jobs'],
  summary: 'Run sync jobs of stowage.toml',
  security,
  middleware: [need('sync')] as const,
  request: { body: { required: false, content: { 'application/json': { schema: SyncRequestSchema } } } },
  responses: {
    202: json('accepted: a job', JobAcceptedSchema),
    ...errorResponses,
    ...registryResponses,
  },
});

const listJobsRoute = createRoute({
  method: 'get',
  path: '/v1/jobs',
  operationId: 'listJobs',
  tags: ['Jobs'],
  summary: 'Jobs, newest first',
  security,
  middleware: [need('read')] as const,
  request: {
    query: z.object({
      kind: z.enum(['pull', 'push', 'sync', 'bundle']).optional(),
      state: z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']).optional(),
      limit: z.coerce.number().int().min(1).max(1000).optional(),
    }),
  },
  responses: {
    200: json('jobs', z.object({ jobs: z.array(JobSchema) })),
    ...errorResponses,
  },
});

const getJobRoute = createRoute({
  method: 'get',
  path: '/v1/jobs/{id}',
  operationId: 'getJob',
  tags: ['Jobs'],
  summary: 'One job',
  security,
  middleware: [need('read')] as const,
  request: { params: IdParam },
  responses: {
    200: json('the job', JobSchema),
    ...errorResponses,
  },
});

const cancelJobRoute = createRoute({
  method: 'delete',
  path: '/v1/jobs/{id}',
  operationId: 'cancelJob',
  tags: ['Jobs'],
  summary: 'Cancel a job',
  description:
    'A queued job is dropped; a running one is aborted and cleans up (no partial archive, no tag on an incomplete image). Answers the job as it is; it reaches "canceled" when the work has stopped.',
  security,
  middleware: [need('read')] as const,
  request: { params: IdParam },
  responses: {
    202: json('cancellation under way or done', JobSchema),
    ...errorResponses,
  },
});

const jobEventsRoute = createRoute({
  method: 'get',
  path: '/v1/jobs/{id}/events',
  operationId: 'streamJobEvents',
  tags: ['Jobs'],
  summary: "A job's progress as Server-Sent Events",
  description:
    'Every event since the job was queued (state, progress, tag, ...), then live ones, ending with "end" (the outcome). A progress event holds the job\'s totals (blobs, blobsDone, bytes, bytesDone) and its rate as it was sent: bytesPerSecond (a moving average over the last 10 s), secondsLeft (null when it cannot be said) and stalled (nothing for 3 s): the fields the CLI\'s --progress=json writes. Last-Event-ID resumes after that event.',
  security,
  middleware: [need('read')] as const,
  request: {
    params: IdParam,
    headers: z.object({
      'last-event-id': z
        .string()
        .optional()
        .openapi({ description: 'resume after this event (the id of the last one received)' }),
    }),
  },
  responses: {
    200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: z.string() } } },
    ...errorResponses,
  },
});

/** What a pull request names (the API's body, the console's form). */
export interface PullBody {
  ref?: string | undefined;
  refs?: string[] | undefined;
  platforms?: 'all' | string[] | undefined;
  format?: 'oci-archive' | 'docker-archive' | undefined;
}

/**
 * Checks a pull and queues it (or joins the identical one queued or running): a bad or forbidden
 * reference is the request's 4xx, not a failed job, the trust policy included (signatures read, no
 * layer); the job checks again what it stores.
 */
export async function startPull(
  deps: Pick<AppDeps, 'engine' | 'jobs'>,
  body: PullBody,
  requestedBy: string,
  signal?: AbortSignal,
): Promise<{ job: Job; shared: boolean }> {
  const { engine, jobs } = deps;
  const refs = [...(body.refs ?? []), ...(body.ref ? [body.ref] : [])];
  if (refs.length === 0)
    throw new StowageError('INVALID_ARGUMENT', 'give "ref" or "refs": the images to pull');
  const platforms = parsePlatforms(body.platforms);
  const parsed = refs.map((r) => parsePullReference(engine, r));
  for (const ref of parsed) await admitPull(engine, ref, signal);
  const normalized = parsed.map((r) => formatReference(r));
  const request = { refs, platforms: platforms ?? 'all', format: body.format ?? 'oci-archive' };
  const key = `pull:${JSON.stringify([[...new Set(normalized)].sort(), platforms ?? 'all'])}`;
  return jobs.submit('pull', request, requestedBy, key);
}

// Pushes that differ only in compression are different jobs.
const compressionSuffix = (c: LayerCompression | undefined) => (c ? ` ${c.format}-${c.level ?? ''}` : '');

/** Checks a push of a stored version and queues it (or joins the identical one). */
export async function startPush(
  deps: Pick<AppDeps, 'engine' | 'jobs'>,
  body: {
    archive: string;
    destination: string;
    compress?: string | undefined;
    compressLevel?: number | undefined;
  },
  requestedBy: string,
): Promise<{ job: Job; shared: boolean }> {
  const version = await deps.engine.store.find(body.archive);
  const destination = destinationFor(deps.engine, body.destination, version);
  // Checked now, so a bad choice is a 400 and not a failed job.
  const compression = compressionFrom({ format: body.compress, level: body.compressLevel });
  const request = { archive: version.id, destination, ...(compression ? { compression } : {}) };
  const key = `push:${version.id}>${destination}${compressionSuffix(compression)}`;
  return deps.jobs.submit('push', request, requestedBy, key);
}

/** Queues a sync of stowage.toml's jobs (all, or those named), or joins the identical one. */
export async function startSync(
  deps: Pick<AppDeps, 'engine' | 'jobs'>,
  requested: string[] | undefined,
  requestedBy: string,
): Promise<{ job: Job; shared: boolean }> {
  const names = requested?.length ? [...new Set(requested)].sort() : undefined;
  const configured = deps.engine.config.jobs.map((j) => j.name);
  const unknown = (names ?? []).filter((n) => !configured.includes(n));
  if (unknown.length) {
    throw new StowageError(
      'NOT_FOUND',
      `no sync job named ${unknown.join(', ')}; configured: ${configured.join(', ') || 'none'}`,
    );
  }
  if (configured.length === 0) throw new StowageError('INVALID_ARGUMENT', 'stowage.toml has no sync jobs');
  return deps.jobs.submit('sync', { jobs: names ?? configured }, requestedBy, syncKey(names));
}

/** Cancels a job the token may cancel (it needs the job's own scope). */
export async function cancelJob(deps: Pick<AppDeps, 'jobs'>, id: string, token: ApiToken): Promise<Job> {
  const job = await deps.jobs.get(id);
  if (!job) throw new StowageError('NOT_FOUND', `no job ${id}`);
  if (!allows(token, scopeOf(job.kind))) {
    throw new StowageError(
      'DENIED',
      `token "${token.name}" lacks the "${scopeOf(job.kind)}" scope to cancel this job`,
    );
  }
  return deps.jobs.cancel(id);
}

export function jobsApi(deps: AppDeps): ApiApp {
  const { jobs } = deps;
  const accepted = (c: HonoContext<Env>, r: { job: Job; shared: boolean }) => {
    c.header('Location', `/v1/jobs/${r.job.id}`);
    return c.json({ ...jobView(r.job), shared: r.shared }, 202);
  };

  const api = newApi();
  api.openapi(startPullRoute, async (c) =>
    accepted(c, await startPull(deps, c.req.valid('json'), c.get('token').name, c.req.raw.signal)),
  );
  api.openapi(startPushRoute, async (c) =>
    accepted(c, await startPush(deps, c.req.valid('json'), c.get('token').name)),
  );
  api.openapi(startSyncRoute, async (c) =>
    accepted(c, await startSync(deps, c.req.valid('json')?.jobs, c.get('token').name)),
  );

  api.openapi(listJobsRoute, async (c) => {
    const q = c.req.valid('query');
    const list = await jobs.list({ ...q, limit: q.limit ?? 100 });
    return c.json({ jobs: list.map(jobView) }, 200);
  });

  api.openapi(getJobRoute, async (c) => {
    const job = await jobs.get(c.req.valid('param').id);
    if (!job) throw new StowageError('NOT_FOUND', `no job ${c.req.valid('param').id}`);
    return c.json(jobView(job), 200);
  });

  api.openapi(cancelJobRoute, async (c) =>
    c.json(jobView(await cancelJob(deps, c.req.valid('param').id, c.get('token'))), 202),
  );

  api.openapi(jobEventsRoute, async (c) => {
    const id = c.req.valid('param').id;
    if (!(await jobs.get(id))) throw new StowageError('NOT_FOUND', `no job ${id}`);
    const from = Number(c.req.header('last-event-id') ?? 0) || 0;
    return streamEvents(c, jobs, id, from);
  });
  return api;
}

/** A job's events as Server-Sent Events: those after `from`, then live ones, kept alive, until "end". */
function streamEvents(c: HonoContext<Env>, jobs: JobSystem, id: string, from: number): Response {
  return streamSSE(c, async (stream) => {
    let done!: () => void;
    const ended = new Promise<void>((r) => {
      done = r;
    });
    const out = orderedStream(stream);
    const unsubscribe = await jobs.subscribe(
      id,
      from,
      (e) =>
        out.send(() => stream.writeSSE({ id: String(e.seq), event: e.type, data: JSON.stringify(e.data) })),
      () => {
        void out.flushed().then(done);
      },
    );
    stream.onAbort(() => done());
    try {
      await ended;
      await out.flushed();
    } finally {
      out.stop();
      unsubscribe();
    }
  });
}
