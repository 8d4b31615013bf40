/**
 * Air-gap bundles over HTTP: made as a job (POST /v1/bundles, the `sync` scope: an operator's task),
 * their history listed, and the file of one the service made downloaded with ranges and ETags, as
 * archives are.
 */
import { createRoute, z } from '@hono/zod-openapi';
import type { Context as HonoContext } from 'hono';
import { StowageError } from '../errors.js';
import { importUploadedBundle, jobsFor, keptBundle } from '../service/bundles.js';
import type { Job } from '../service/job-system.js';
import type { BundleRecord } from '../store/bundle-history.js';
import { sendView } from './download.js';
import { jobView } from './jobs.js';
import { need, newApi } from './middleware.js';
import {
  BundleImportSchema,
  BundleRecordSchema,
  BundleRequestSchema,
  ErrorSchema,
  IdParam,
  JobAcceptedSchema,
} from './schemas.js';
import { type ApiApp, type AppDeps, type Env, errorResponses, json, security } from './shared.js';

const startBundleRoute = createRoute({
  method: 'post',
  path: '/v1/bundles',
  operationId: 'startBundle',
  tags: ['Bundles'],
  summary: 'Make an air-gap bundle of the store',
  description:
    'The versions since a base bundle (a recorded id, or a time; none: every version) as one reproducible tar carrying only the blobs the base did not, kept for download. The same request on the same store gives the same bundle, made once.',
  security,
  middleware: [need('sync')] as const,
  request: { body: { required: true, content: { 'application/json': { schema: BundleRequestSchema } } } },
  responses: { 202: json('accepted: a job', JobAcceptedSchema), ...errorResponses },
});

const listBundlesRoute = createRoute({
  method: 'get',
  path: '/v1/bundles',
  operationId: 'listBundles',
  tags: ['Bundles'],
  summary: 'The bundles made from the store or imported into it, oldest first',
  security,
  middleware: [need('read')] as const,
  responses: { 200: json('bundles', z.object({ bundles: z.array(BundleRecordSchema) })), ...errorResponses },
});

const downloadBundleRoute = createRoute({
  method: 'get',
  path: '/v1/bundles/{id}/content',
  operationId: 'downloadBundle',
  tags: ['Bundles'],
  summary: 'Download a bundle the service made',
  description:
    'Its tar, with Content-Length, ETag (its sha256) and single byte ranges, as archives are downloaded.',
  security,
  middleware: [need('read')] as const,
  request: {
    params: IdParam,
    headers: z.object({
      range: z.string().optional().openapi({ description: 'one byte range, e.g. bytes=0-1048575' }),
      'if-none-match': z.string().optional(),
      'if-range': z.string().optional(),
    }),
  },
  responses: {
    200: {
      description: 'the bundle',
      content: { 'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) } },
    },
    206: {
      description: 'a byte range of it',
      content: { 'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) } },
    },
    304: { description: 'not modified (If-None-Match)' },
    416: json('range not satisfiable', ErrorSchema),
    ...errorResponses,
  },
});

const importBundleRoute = createRoute({
  method: 'post',
  path: '/v1/bundles/imports',
  operationId: 'importBundle',
  tags: ['Bundles'],
  summary: 'Import an air-gap bundle into the store',
  description:
    "The body is a bundle's tar (one file; join split parts with cat first), spooled within server.max-upload, its manifest and every blob checked, its signature (if given) judged by the service's trust policy as `stowage bundle import --policy` judges NAME.sig. A delta whose base the store has not recorded is refused, naming the base.",
  security,
  middleware: [need('sync')] as const,
  request: {
    query: z.object({
      signature: z.string().max(4096).optional().openapi({
        description:
          "the bundle's signature, base64 (the NAME.sig that `stowage bundle create --sign-by-sigstore-private-key` writes)",
      }),
    }),
    body: {
      required: true,
      content: { 'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) } },
    },
  },
  responses: {
    201: json('imported', BundleImportSchema),
    ...errorResponses,
    413: json('over server.max-upload', ErrorSchema),
    422: json('not a bundle, or a blob that fails its digest', ErrorSchema),
  },
});

/** A history record as the API shows it, with its download where the service keeps the file. */
export async function bundleView(deps: Pick<AppDeps, 'engine'>, r: BundleRecord) {
  const links: Record<string, string> = {};
  if (r.kind === 'created' && (await keptBundle(deps.engine, r.id)))
    links.content = `/v1/bundles/${r.id.slice(7, 19)}/content`;
  return { ...r, links };
}

/** Checks a bundle request and queues it (or joins the identical one). */
export function startBundle(
  deps: Pick<AppDeps, 'engine' | 'jobs'>,
  body: z.infer<typeof BundleRequestSchema>,
  requestedBy: string,
): Promise<{ job: Job; shared: boolean }> | { job: Job; shared: boolean } {
  // A job name that is not configured is a 400 now, not a failed job.
  jobsFor(deps.engine, body.jobs);
  if (body.since !== undefined && /[/\\]/.test(body.since))
    throw new StowageError('INVALID_ARGUMENT', 'since takes a recorded bundle id or a time, not a file');
  const request = { ...body, versions: body.versions ?? 'all' };
  return deps.jobs.submit('bundle', request, requestedBy, `bundle:${JSON.stringify(request)}`);
}

export function bundlesApi(deps: AppDeps): ApiApp {
  const api = newApi();
  const accepted = (c: HonoContext<Env>, r: { job: Job; shared: boolean }) => {
    c.header('Location', `/v1/jobs/${r.job.id}`);
    return c.json({ ...jobView(r.job), shared: r.shared }, 202);
  };
  api.openapi(startBundleRoute, async (c) =>
    accepted(c, await startBundle(deps, c.req.valid('json'), c.get('token').name)),
  );
  api.openapi(listBundlesRoute, async (c) => {
    const records = await deps.engine.store.bundles().list();
    return c.json({ bundles: await Promise.all(records.map((r) => bundleView(deps, r))) }, 200);
  });
  api.openapi(importBundleRoute, async (c) => {
    const body = c.req.raw.body;
    if (!body)
      throw new StowageError(
        'INVALID_ARGUMENT',
        'the request body is empty; send the bundle file as the body',
      );
    const imported = await importUploadedBundle(deps.engine, body as unknown as AsyncIterable<Uint8Array>, {
      limit: deps.maxUpload,
      signature: c.req.valid('query').signature,
      requestedBy: c.get('token').name,
      signal: c.req.raw.signal,
    });
    return c.json(imported, 201);
  });
  api.openapi(downloadBundleRoute, async (c) => {
    const { id } = c.req.valid('param');
    const kept = await keptBundle(deps.engine, id);
    if (!kept)
      throw new StowageError(
        'NOT_FOUND',
        `no bundle ${id} is kept by the service; list them with GET /v1/bundles`,
      );
    return sendView(c, kept.view, { sha256: kept.sha256, filename: `bundle-${id.slice(0, 12)}.tar` });
  });
  return api;
}
