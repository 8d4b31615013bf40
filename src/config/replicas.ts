/**
 * The engines a replicated deployment shares (issue 22): the store's blobs in an S3-compatible bucket
 * ([store.s3]) and the version index and jobs in PostgreSQL ([server] database). Without them stowage
 * runs as it always has: a local store, jobs in the process. Secrets never sit in stowage.toml: S3
 * keys come from a credentials file or the environment, the database password from a file or PGPASSWORD,
 * and no error or log line repeats them.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { StowageError } from '../errors.js';

/** S3 bucket names: 3-63 characters, lower-case letters, digits, dots and hyphens. */
const bucketName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
    'an S3 bucket name: 3-63 lower-case letters, digits, "." and "-"',
  );

export const s3Schema = z.strictObject({
  /** http(s)://host[:port] of the S3 endpoint (no default: stowage never guesses a public host). */
  endpoint: z.url({ protocol: /^https?$/, error: 'an http:// or https:// URL of the S3 endpoint' }),
  bucket: bucketName,
  /** Keys start with this ("team-a/"): several stores can share a bucket. */
  prefix: z
    .string()
    .regex(/^([A-Za-z0-9._-]+\/)*$/, 'empty, or path segments each ending in "/", e.g. "stowage/"')
    .optional(),
  region: z.string().min(1).optional(),
  /** Bucket in the path, not the host name (radosgw, MinIO); default true. */
  'path-style': z.boolean().optional(),
  /** A file with access-key-id and secret-access-key lines (AWS's shared-credentials keys work too). */
  'credentials-file': z.string().min(1).optional(),
});

export type S3Settings = z.infer<typeof s3Schema>;

/** postgres:// URLs without a password (it comes from database-password-file or PGPASSWORD). */
export const databaseSchema = z
  .string()
  .regex(/^postgres(ql)?:\/\/[^:@/]+(@|\/)/, 'a postgres://USER@HOST:PORT/DB URL, without a password')
  .optional();

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/**
 * The S3 keys: from `credentials-file` when set (`access-key-id = ...` and `secret-access-key = ...`
 * lines, or AWS's `aws_access_key_id` / `aws_secret_access_key`), else AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY. Errors name the file or the variables, never a key.
 */
export async function s3Credentials(
  s: S3Settings,
  env: NodeJS.ProcessEnv = process.env,
): Promise<S3Credentials> {
  if (s['credentials-file']) {
    const file = s['credentials-file'];
    const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new StowageError(
        'INVALID_CONFIG',
        `[store.s3] credentials-file ${file}: cannot read it (${e.code})`,
      );
    });
    const value = (...names: string[]) => {
      for (const line of text.split('\n')) {
        const m = /^\s*([A-Za-z_-]+)\s*=\s*"?([^"\s]+)"?\s*$/.exec(line);
        if (m && names.includes(m[1]!.toLowerCase())) return m[2];
      }
      return undefined;
    };
    const accessKeyId = value('access-key-id', 'aws_access_key_id');
    const secretAccessKey = value('secret-access-key', 'aws_secret_access_key');
    if (!accessKeyId || !secretAccessKey) {
      throw new StowageError(
        'INVALID_CONFIG',
        `[store.s3] credentials-file ${file}: needs an access-key-id and a secret-access-key line`,
      );
    }
    return { accessKeyId, secretAccessKey };
  }
  const accessKeyId = env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new StowageError(
      'INVALID_CONFIG',
      '[store.s3] has no credentials: set credentials-file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY',
    );
  }
  return { accessKeyId, secretAccessKey };
}

/** The database password: the first line of database-password-file, else PGPASSWORD, else none. */
export async function databasePassword(
  server: { 'database-password-file'?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | undefined> {
  const file = server['database-password-file'];
  if (!file) return env.PGPASSWORD;
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new StowageError(
      'INVALID_CONFIG',
      `[server] database-password-file ${file}: cannot read it (${e.code})`,
    );
  });
  return text.split('\n')[0];
}

/** This replica's name in jobs, logs and metrics: $STOWAGE_REPLICA, else the host name (a pod's name). */
export function replicaName(env: NodeJS.ProcessEnv, hostname: string, pid: number): string {
  return env.STOWAGE_REPLICA || `${hostname}-${pid}`;
}
