/**
 * The API's request and response bodies: zod schemas that validate requests and make the OpenAPI
 * document (GET /openapi.json), one source for both.
 */
import { z } from '@hono/zod-openapi';
import { COMPRESSION_FORMATS, COMPRESSION_HELP } from '../archive/compress.js';

export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'NOT_FOUND' }),
      message: z.string().openapi({ example: 'no job 3x-abc' }),
    }),
    requestId: z.string().optional(),
  })
  .openapi('Error');

const refSchema = z.string().min(1).max(512).openapi({ example: '127.0.0.1:5000/team/app:1.4' });

export const PullRequestSchema = z
  .strictObject({
    refs: z.array(refSchema).min(1).max(64).optional(),
    ref: refSchema.optional(),
    platforms: z
      .union([z.literal('all'), z.array(z.string().min(1).max(64)).min(1).max(16)])
      .optional()
      .openapi({ description: '"all" (default) or a list such as ["linux/amd64"]' }),
    format: z.enum(['oci-archive', 'docker-archive']).optional().openapi({
      description: 'the format the result links download in (the store holds one copy either way)',
    }),
  })
  .openapi('PullRequest');

export const PushRequestSchema = z
  .strictObject({
    archive: z
      .string()
      .min(1)
      .max(128)
      .openapi({ description: 'an archive id (or REPOSITORY:TAG for its newest)' }),
    destination: refSchema.openapi({ example: '127.0.0.1:5000/restored/app:1.4' }),
    // The format's own level range is checked by compressionFrom, the rule --compress-level meets too.
    compress: z
      .enum(COMPRESSION_FORMATS)
      .optional()
      .openapi({
        description: `how a version's plain layers (an uploaded docker-archive's) are compressed: ${COMPRESSION_HELP.format}`,
      }),
    compressLevel: z
      .number()
      .int()
      .min(1)
      .max(COMPRESSION_HELP.maxLevel)
      .optional()
      .openapi({ description: COMPRESSION_HELP.level }),
  })
  .openapi('PushRequest');

export const SyncRequestSchema = z
  .strictObject({
    jobs: z
      .array(z.string().min(1).max(128))
      .max(256)
      .optional()
      .openapi({ description: 'job names (default: all)' }),
  })
  .openapi('SyncRequest');

const progressSchema = z.object({
  blobs: z.number(),
  blobsDone: z.number(),
  bytes: z.number(),
  bytesDone: z.number(),
});

const when = z.iso.datetime().openapi({ description: 'ISO 8601, UTC' });

const PullJobRequest = z
  .object({
    refs: z.array(z.string()),
    platforms: z.union([z.literal('all'), z.array(z.string())]),
    format: z.enum(['oci-archive', 'docker-archive']),
  })
  .openapi('PullJobRequest');

const PushJobRequest = z
  .object({
    archive: z.string().openapi({ description: 'the version id' }),
    destination: z.string(),
    compression: z.object({ format: z.enum(COMPRESSION_FORMATS), level: z.number().optional() }).optional(),
  })
  .openapi('PushJobRequest');

const SyncJobRequest = z.object({ jobs: z.array(z.string()) }).openapi('SyncJobRequest');

/** POST /v1/bundles: which versions, since which base (a recorded bundle's id or a time, never a path). */
export const BundleRequestSchema = z
  .object({
    since: z.string().max(128).optional().openapi({
      description: 'a recorded bundle id (or a prefix of it), or a time: the base; none: a full bundle',
    }),
    repository: z
      .string()
      .max(512)
      .optional()
      .openapi({ description: 'a regular expression the whole repository name matches' }),
    tag: z
      .string()
      .max(512)
      .optional()
      .openapi({ description: 'a regular expression the whole tag matches' }),
    versions: z
      .enum(['all', 'newest'])
      .optional()
      .openapi({ description: 'every version since the base (default), or the newest of each tag' }),
    jobs: z
      .array(z.string())
      .optional()
      .openapi({ description: 'only the repositories these sync jobs write' }),
  })
  .strict()
  .openapi('BundleRequest');

export const BundleResultSchema = z
  .object({
    id: z.string().openapi({ description: "the bundle manifest's digest" }),
    file: z.string(),
    sha256: z.string(),
    size: z.number(),
    versions: z.number(),
    blobs: z.number().openapi({ description: 'blobs inside it' }),
    bytes: z.number().openapi({ description: 'their bytes' }),
    assumes: z.number().openapi({ description: 'blobs it assumes the far side has (carried by its bases)' }),
    bases: z.array(z.string()),
    skipped: z.array(z.string()),
    signed: z.boolean(),
  })
  .openapi('BundleJobResult');

export const BundleRecordSchema = z
  .object({
    id: z.string(),
    kind: z.enum(['created', 'imported']),
    at: z.string(),
    file: z.string(),
    sha256: z.string(),
    size: z.number(),
    versions: z.number(),
    blobs: z.number(),
    bytes: z.number(),
    bases: z.array(z.string()),
    through: z.string(),
    parts: z.number().optional(),
    signed: z.boolean().optional(),
    links: z.record(z.string(), z.string()),
  })
  .openapi('BundleRecord');

const PullJobResult = z
  .object({
    archives: z.array(
      z.object({
        id: z.string(),
        repository: z.string(),
        tag: z.string(),
        digest: z.string(),
        platforms: z.array(z.string()),
        taken: when,
        sha256: z.string(),
        size: z.number(),
        fetched: z.boolean().openapi({ description: 'false: the store had this version already' }),
      }),
    ),
  })
  .openapi('PullJobResult');

const PushJobResult = z
  .object({
    archive: z.string(),
    images: z.array(
      z.object({
        source: z.string(),
        destinations: z.array(z.string()),
        digest: z.string(),
        mediaType: z.string(),
        newDigest: z
          .boolean()
          .openapi({ description: 'the manifest was made by stowage: its digest is new' }),
        referrers: z
          .array(z.object({ digest: z.string(), artifactType: z.string(), tag: z.string().optional() }))
          .optional(),
      }),
    ),
    stats: z.object({ uploaded: z.number(), existing: z.number(), mounted: z.number(), bytes: z.number() }),
  })
  .openapi('PushJobResult');

const SyncJobResult = z
  .object({
    dryRun: z.boolean(),
    store: z.string().openapi({ description: 'the store, as the service names it (never a server path)' }),
    fetchedBytes: z.number(),
    failed: z.number(),
    garbage: z.object({ blobs: z.number(), bytes: z.number() }).optional(),
    jobs: z.array(
      z.object({
        name: z.string(),
        source: z.string().openapi({ description: 'the repository synced (one of those a pattern found)' }),
        pattern: z.string().optional().openapi({
          description: "the job's source pattern (HOST/team/**), when the repository is one it found",
        }),
        mirror: z
          .string()
          .optional()
          .openapi({ description: 'where the repository went, when the job mirrors' }),
        error: z.string().optional(),
        code: z.string().optional(),
        tags: z.array(
          z.object({
            tag: z.string(),
            action: z.enum(['fetched', 'skipped', 'failed', 'would-fetch', 'would-skip', 'would-fail']),
            digest: z.string().optional(),
            archive: z.enum(['stored', 'current', 'would-store']).optional(),
            mirror: z.enum(['pushed', 'current', 'would-push']).optional(),
            fetchedBytes: z.number(),
            error: z.string().optional(),
            code: z.string().optional(),
          }),
        ),
        pruned: z.array(z.object({ id: z.string(), tag: z.string(), digest: z.string(), taken: when })),
        mirrorDeleted: z.array(z.object({ tag: z.string(), digest: z.string().optional() })).openapi({
          description:
            "the mirror's tags gone from the source that prune = true deleted (or would delete, in a dry run)",
        }),
      }),
    ),
  })
  .openapi('SyncJobResult');

const jobBase = {
  id: z.string(),
  state: z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']),
  requestedBy: z.string().openapi({ description: "the API token's name, or schedule" }),
  createdAt: when,
  startedAt: when.optional(),
  finishedAt: when.optional(),
  progress: progressSchema,
  error: z.object({ code: z.string(), message: z.string() }).optional(),
  /** The replica running it or that ran it last (replicas sharing PostgreSQL). */
  replica: z.string().optional().openapi({ description: 'the replica running it, or that ran it last' }),
  links: z.record(z.string(), z.string()),
};

/** A job, its request and result typed by its kind (a failed sync keeps its report as its result). */
export const JobSchema = z
  .discriminatedUnion('kind', [
    z
      .object({
        ...jobBase,
        kind: z.literal('pull'),
        request: PullJobRequest,
        result: PullJobResult.optional(),
      })
      .openapi('PullJob'),
    z
      .object({
        ...jobBase,
        kind: z.literal('push'),
        request: PushJobRequest,
        result: PushJobResult.optional(),
      })
      .openapi('PushJob'),
    z
      .object({
        ...jobBase,
        kind: z.literal('sync'),
        request: SyncJobRequest,
        result: SyncJobResult.optional(),
      })
      .openapi('SyncJob'),
    z
      .object({
        ...jobBase,
        kind: z.literal('bundle'),
        request: BundleRequestSchema,
        result: BundleResultSchema.optional(),
      })
      .openapi('BundleJob'),
  ])
  .openapi('Job');

export const JobAcceptedSchema = z
  .intersection(
    JobSchema,
    z.object({
      shared: z
        .boolean()
        .openapi({ description: 'an identical job was already queued or running: this is it' }),
    }),
  )
  .openapi('JobAccepted');

export const ArchiveSchema = z
  .object({
    id: z.string(),
    repository: z.string(),
    tag: z.string(),
    digest: z.string(),
    mediaType: z.string(),
    platforms: z.array(z.string()),
    source: z.string(),
    taken: z.string(),
    latest: z.boolean().openapi({ description: 'the newest version of its tag' }),
    pulledThrough: z.boolean().optional().openapi({
      description:
        "came in through the registry's pull-through: only the platforms and blobs clients asked for may be held",
    }),
    sha256: z.string().optional().openapi({ description: "the oci-archive's sha256, once computed" }),
    size: z.number().optional(),
    referrers: z
      .array(
        z.object({
          digest: z.string(),
          artifactType: z.string().optional(),
          size: z.number(),
          tag: z.string().optional(),
          signer: z
            .string()
            .optional()
            .openapi({ description: "the policy's trusted key that verifies this signature" }),
        }),
      )
      .optional()
      .openapi({ description: 'what is kept attached to the version: signatures, attestations, SBOMs' }),
    links: z.record(z.string(), z.string()),
  })
  .openapi('Archive');

export const TagsSchema = z.object({ repository: z.string(), tags: z.array(z.string()) }).openapi('Tags');

export const IdParam = z.object({
  id: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[A-Za-z0-9._-]+$/)
    .openapi({ param: { name: 'id', in: 'path' } }),
});

export const EventSchema = z
  .object({
    seq: z.number().int().openapi({ description: "the order events happened in (the stream's id)" }),
    specversion: z.literal('1.0'),
    id: z.string(),
    source: z.string().openapi({ example: '/stowage/jobs/3f2a9c' }),
    type: z.string().openapi({ example: 'io.stowage.version.stored' }),
    subject: z.string().optional().openapi({ example: '127.0.0.1:5000/team/app:1.4' }),
    time: z.string(),
    datacontenttype: z.literal('application/json'),
    data: z.record(z.string(), z.unknown()),
  })
  .openapi('Event');

export const DeliverySchema = z
  .object({
    id: z.number().int(),
    webhook: z.string(),
    event: z.string().openapi({ description: "the event's id" }),
    type: z.string(),
    subject: z.string().optional(),
    state: z.enum(['pending', 'delivered', 'failed']),
    attempts: z.number().int(),
    status: z.number().int().optional().openapi({ description: "the receiver's last status code" }),
    error: z.string().optional(),
    createdAt: z.string(),
    updatedAt: z.string(),
    nextAt: z.string().optional().openapi({ description: 'when the next attempt is due' }),
  })
  .openapi('Delivery');

export const WebhookSchema = z
  .object({
    name: z.string(),
    url: z.string().openapi({ description: 'scheme, host and path (a query string is not shown)' }),
    events: z.array(z.string()),
    mode: z.enum(['structured', 'binary']),
    signed: z.boolean(),
    timeoutSeconds: z.number(),
    retryForSeconds: z.number(),
    last: DeliverySchema.optional(),
  })
  .openapi('Webhook');

export const BundleImportSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    versions: z.number().int(),
    present: z.number().int().openapi({ description: 'versions the store had already' }),
    blobs: z.number().int(),
    written: z.number().int().openapi({ description: 'blobs written now (the rest the store had)' }),
    checked: z.array(z.string()),
  })
  .openapi('BundleImport');
