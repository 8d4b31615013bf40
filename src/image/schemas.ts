import { z } from 'zod';
import { isDigest } from '../reference/reference.js';

/** zod schemas for the image data we read from outside; types are inferred from them. */

export const digestSchema = z.string().refine(isDigest, { message: 'not a valid digest' });

export const platformSchema = z.object({
  architecture: z.string(),
  os: z.string(),
  'os.version': z.string().optional(),
  'os.features': z.array(z.string()).optional(),
  variant: z.string().optional(),
  features: z.array(z.string()).optional(),
});
export type Platform = z.infer<typeof platformSchema>;

export const descriptorSchema = z.looseObject({
  mediaType: z.string(),
  digest: digestSchema,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  platform: platformSchema.optional(),
  artifactType: z.string().optional(),
});
export type Descriptor = z.infer<typeof descriptorSchema>;

export const imageManifestSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageManifest = z.infer<typeof imageManifestSchema>;

export const imageIndexSchema = z.looseObject({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  manifests: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});
export type ImageIndex = z.infer<typeof imageIndexSchema>;

export const imageConfigSchema = z.looseObject({
  architecture: z.string().optional(),
  os: z.string().optional(),
  variant: z.string().optional(),
  created: z.string().optional(),
  author: z.string().optional(),
  config: z
    .looseObject({
      Env: z.array(z.string()).nullish(),
      Cmd: z.array(z.string()).nullish(),
      Entrypoint: z.array(z.string()).nullish(),
      Labels: z.record(z.string(), z.string()).nullish(),
      WorkingDir: z.string().nullish(),
      User: z.string().nullish(),
    })
    .optional(),
  rootfs: z.object({ type: z.string(), diff_ids: z.array(digestSchema) }).optional(),
  history: z.array(z.looseObject({})).optional(),
});
export type ImageConfig = z.infer<typeof imageConfigSchema>;

/** A manifest or index as a source gives it: its exact bytes, media type and digest. */
export interface ManifestResponse {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}
