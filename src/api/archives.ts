/**
 * The archive store: versions listed, uploaded, deleted, and downloaded whole or by range.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { StowageError } from '../errors.js';
import { parseRepository, repositoryName } from '../reference/reference.js';
import { ensureChecksum, importUpload } from '../service/operations.js';
import { deleteVersion, dockerArchive, versionSigners } from '../service/versions.js';
import type { ArchiveStore } from '../store/archive-store.js';
import type { StoredVersion } from '../store/store.js';
import { type ArchiveView, ociArchiveView } from '../store/view.js';
import { sendView } from './download.js';
import { need, newApi } from './middleware.js';
import { ArchiveSchema, ErrorSchema, IdParam } from './schemas.js';
import { type ApiApp, type AppDeps, errorResponses, json, security } from './shared.js';

function archiveView(
  v: StoredVersion,
  latest: boolean,
  signers?: Map<string, string>,
): z.infer<typeof ArchiveSchema> {
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
    ...(v.pulledThrough ? { pulledThrough: true } : {}),
    ...(v.archive ? { sha256: v.archive.sha256, size: v.archive.size } : {}),
    ...(v.referrers?.length
      ? {
          referrers: v.referrers.map((r) => ({
            digest: r.descriptor.digest,
            ...(r.descriptor.artifactType ? { artifactType: r.descriptor.artifactType } : {}),
            size: r.descriptor.size,
            ...(r.tag ? { tag: r.tag } : {}),
            ...(signers?.get(r.descriptor.digest) ? { signer: signers.get(r.descriptor.digest) } : {}),
          })),
        }
      : {}),
    links: { self: `/v1/archives/${v.id}`, content: `/v1/archives/${v.id}/content` },
  };
}

/** How many versions a page of GET /v1/archives holds unless ?limit= says, and at most. */
export const ARCHIVES_PAGE = { default: 100, max: 1000 } as const;

const listArchivesRoute = createRoute({
  method: 'get',
  path: '/v1/archives',
  operationId: 'listArchives',
  tags: ['Archives'],
  summary: 'Stored versions (archives), oldest first, a page at a time',
  description:
    `Pages as the distribution spec pages tags: ?limit= versions (default ${ARCHIVES_PAGE.default}, at most ${ARCHIVES_PAGE.max}) ` +
    'after the version ?after= names; when there are more, `next` holds the cursor and a Link header (rel="next") the URL of the next page.',
  security,
  middleware: [need('read')] as const,
  request: {
    query: z.object({
      repository: z.string().optional(),
      tag: z.string().optional(),
      latest: z.enum(['true', 'false']).optional(),
      q: z.string().optional().openapi({ description: 'versions whose repository:tag or id contains this' }),
      limit: z.coerce.number().int().min(1).max(ARCHIVES_PAGE.max).optional(),
      after: z.string().optional().openapi({ description: 'the id of the last version of the page before' }),
    }),
  },
  responses: {
    200: {
      description: 'archives',
      headers: {
        Link: { description: '<URL>; rel="next", when there are more versions', schema: { type: 'string' } },
      },
      content: {
        'application/json': {
          schema: z.object({ archives: z.array(ArchiveSchema), next: z.string().optional() }),
        },
      },
    },
    ...errorResponses,
  },
});

const uploadArchiveRoute = createRoute({
  method: 'post',
  path: '/v1/archives',
  operationId: 'uploadArchive',
  tags: ['Archives'],
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
    201: json('stored', z.object({ archives: z.array(ArchiveSchema) })),
    ...errorResponses,
    413: json('over server.max-upload', ErrorSchema),
    415: json('not a body this route reads', ErrorSchema),
    422: json('not an archive stowage reads, or a blob that fails its digest', ErrorSchema),
  },
});

const getArchiveRoute = createRoute({
  method: 'get',
  path: '/v1/archives/{id}',
  operationId: 'getArchive',
  tags: ['Archives'],
  summary: 'One stored version',
  security,
  middleware: [need('read')] as const,
  request: { params: IdParam },
  responses: {
    200: json('the archive', ArchiveSchema),
    ...errorResponses,
  },
});

const deleteArchiveRoute = createRoute({
  method: 'delete',
  path: '/v1/archives/{id}',
  operationId: 'deleteArchive',
  tags: ['Archives'],
  summary: 'Delete a stored version (and blobs no other version uses)',
  security,
  middleware: [need('admin')] as const,
  request: { params: IdParam },
  responses: {
    200: json('deleted', ArchiveSchema),
    ...errorResponses,
  },
});

/** What every answer with the archive's bytes says of it. */
const downloadHeaders = {
  ETag: { description: '"sha256:HEX" of the whole archive', schema: { type: 'string' } },
  'Accept-Ranges': { description: 'bytes', schema: { type: 'string' } },
  'Content-Length': { description: 'bytes in this answer', schema: { type: 'integer' } },
  'X-Content-Sha256': { description: "the whole archive's sha256 (hex)", schema: { type: 'string' } },
  'Content-Disposition': {
    description: 'attachment; filename="REPOSITORY_TAG.tar"',
    schema: { type: 'string' },
  },
} as const;

const archiveContentRoute = createRoute({
  method: 'get',
  path: '/v1/archives/{id}/content',
  operationId: 'downloadArchive',
  tags: ['Archives'],
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
    headers: z.object({
      range: z.string().optional().openapi({ description: 'one byte range, e.g. bytes=0-1048575' }),
      'if-none-match': z.string().optional().openapi({ description: 'the ETag held: 304 if unchanged' }),
      'if-range': z
        .string()
        .optional()
        .openapi({ description: 'Range applies only if the ETag is still this' }),
    }),
  },
  responses: {
    200: {
      description: 'the archive',
      headers: downloadHeaders,
      content: { 'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) } },
    },
    206: {
      description: 'a byte range of it',
      headers: {
        ...downloadHeaders,
        'Content-Range': { description: 'bytes START-END/SIZE', schema: { type: 'string' } },
      },
      content: { 'application/x-tar': { schema: z.string().openapi({ format: 'binary' }) } },
    },
    304: { description: 'not modified (If-None-Match)' },
    416: json('range not satisfiable', ErrorSchema),
    ...errorResponses,
  },
});

/** The version with exactly this id (the API names versions by whole id, never by prefix or name). */
async function exactVersion(store: ArchiveStore, id: string): Promise<StoredVersion> {
  const v = await store.find(id).catch(() => undefined);
  if (!v || v.id !== id)
    throw new StowageError('NOT_FOUND', `no archive ${id}; list them with GET /v1/archives`);
  return v;
}

export function archivesApi(deps: AppDeps): ApiApp {
  const { engine } = deps;
  const api = newApi();
  api.openapi(listArchivesRoute, async (c) => {
    const q = c.req.valid('query');
    let repository = q.repository;
    if (repository) {
      try {
        repository = repositoryName(parseRepository(repository));
      } catch {
        // Not a repository name: matches nothing.
      }
    }
    const page = await engine.store.page({
      repository,
      tag: q.tag,
      latest: q.latest === undefined ? undefined : q.latest === 'true',
      search: q.q,
      after: q.after,
      limit: q.limit ?? ARCHIVES_PAGE.default,
    });
    if (page.next) {
      const url = new URL(c.req.url);
      url.searchParams.set('after', page.next);
      url.searchParams.set('limit', String(q.limit ?? ARCHIVES_PAGE.default));
      c.header('Link', `<${url.pathname}${url.search}>; rel="next"`);
    }
    return c.json(
      {
        archives: page.versions.map(({ version, latest }) => archiveView(version, latest)),
        ...(page.next ? { next: page.next } : {}),
      },
      200,
    );
  });

  api.openapi(uploadArchiveRoute, async (c) => {
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
  });

  api.openapi(getArchiveRoute, async (c) => {
    const v = await exactVersion(engine.store, c.req.valid('param').id);
    const latest = (await engine.store.latest(v.repository, v.tag))?.id === v.id;
    return c.json(archiveView(v, latest, await versionSigners(engine, v)), 200);
  });

  api.openapi(deleteArchiveRoute, async (c) => {
    const v = await deleteVersion(engine, c.req.valid('param').id);
    return c.json(archiveView(v, false), 200);
  });

  api.openapi(archiveContentRoute, async (c) => {
    const id = c.req.valid('param').id;
    const q = c.req.valid('query');
    const version = await exactVersion(engine.store, id);
    const format = q.format ?? 'oci-archive';
    let view: ArchiveView;
    let sha256: string;
    if (format === 'oci-archive') {
      view = await ociArchiveView(engine.store, version);
      ({ sha256 } = await ensureChecksum(engine.store, version, c.req.raw.signal));
    } else {
      const made = await dockerArchive(engine, version, q.platform, c.req.raw.signal);
      view = made.view;
      sha256 = made.sha256;
    }
    const name = `${version.repository.replace(/[^A-Za-z0-9._-]+/g, '_')}_${version.tag}${format === 'docker-archive' ? '.docker' : ''}.tar`;
    return sendView(c, view, { sha256, filename: name });
  });
  return api;
}
