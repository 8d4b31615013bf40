/**
 * The API's request and response bodies: zod schemas that validate requests and make the OpenAPI
 * document (GET /openapi.json), one source for both.
 */
import { z } from '@hono/zod-openapi';

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
    compress: z.enum(['gzip', 'zstd', 'none']).optional().openapi({
      description:
        "how a version's plain layers (an uploaded docker-archive's) are compressed: gzip (default; parallel, deterministic), zstd (Node.js 22.15+), none",
    }),
    compressLevel: z
      .number()
      .int()
      .min(1)
      .max(19)
      .optional()
      .openapi({ description: 'gzip 1-9 (default 6), zstd 1-19 (default 3)' }),
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

export const JobSchema = z
  .object({
    id: z.string(),
    kind: z.enum(['pull', 'push', 'sync']),
    state: z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']),
    request: z.unknown(),
    requestedBy: z.string(),
    createdAt: z.string(),
    startedAt: z.string().optional(),
    finishedAt: z.string().optional(),
    progress: progressSchema,
    result: z.unknown().optional(),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
    /** The replica running it or that ran it last (replicas sharing PostgreSQL). */
    replica: z.string().optional(),
    links: z.record(z.string(), z.string()),
  })
  .openapi('Job');

export const JobAcceptedSchema = JobSchema.extend({
  shared: z.boolean().openapi({ description: 'an identical job was already queued or running: this is it' }),
}).openapi('JobAccepted');

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
