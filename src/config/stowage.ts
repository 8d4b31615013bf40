/**
 * stowage.toml: the sync jobs and the archive store. zod-validated; errors name the file, the key and
 * (for TOML syntax) the line.
 */

import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { Cron } from 'croner';
import semver from 'semver';
import { z } from 'zod';
import { byteSize } from '../core/sizes.js';
import { StowageError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import {
  hasRepositoryPlaceholder,
  isRepositoryPattern,
  parseRepositoryPattern,
} from '../reference/pattern.js';
import { parseRepository } from '../reference/reference.js';
import { parseTomlFile } from './registries.js';
import { databaseSchema, type S3Settings, s3Schema } from './replicas.js';

/** The mirror blob cache's default bound: enough for the base layers many images share, small next to any store. */
export const DEFAULT_BLOB_CACHE_BYTES = 2 * 1024 ** 3;

const duration = z.string().regex(/^\d+(s|m|h|d|w)$/, 'a duration such as 90d, 12h or 2w');

const retentionSchema = z.strictObject({
  /** Keep the newest N versions of each tag. */
  'keep-versions': z.number().int().positive().optional(),
  /** Keep versions younger than this. */
  'keep-within': duration.optional(),
});

const jobSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-"'),
  /** A repository, or many: HOST/team/** (`*` one path segment, `**` one or more), found by the catalog. */
  source: z.string().min(1),
  /** With a pattern source: which of the repositories found it takes (regexes on the path below the host). */
  repositories: z
    .strictObject({ include: z.array(z.string()).optional(), exclude: z.array(z.string()).optional() })
    .optional(),
  tags: z.array(z.string().min(1)).optional(),
  include: z.array(z.string()).optional(),
  exclude: z.array(z.string()).optional(),
  semver: z.string().optional(),
  newest: z.number().int().positive().optional(),
  platforms: z.union([z.literal('all'), z.array(z.string())]).optional(),
  archive: z.boolean().optional(),
  mirror: z.string().optional(),
  /** Carry what is attached to each image (signatures, attestations, SBOMs) to the mirror (default true). */
  referrers: z.boolean().optional(),
  /** Only attachments of these artifact types (regsync's referrerFilters). */
  'referrer-types': z.array(z.string().min(1)).optional(),
  /** Sign what goes to the mirror (cosign's key, or a PEM ECDSA key), as skopeo sync --sign-by-sigstore-private-key. */
  'sign-by-sigstore-private-key': z.string().min(1).optional(),
  /** The key's passphrase: the file's first line. */
  'sign-passphrase-file': z.string().min(1).optional(),
  retention: retentionSchema.optional(),
  schedule: z.string().optional(),
  /** Delete the mirror's tags that are gone from the source: the mirror an exact copy (skopeo #2503). */
  prune: z.boolean().optional(),
  /** Fail a tag, before writing it, whose digest would change (a platform subset of an index). */
  'preserve-digests': z.boolean().optional(),
});

const limitSchema = z.strictObject({
  concurrency: z.number().int().positive().max(64).optional(),
  'requests-per-second': z.number().positive().optional(),
  /** Bytes per second a download must average over low-speed-time, else it is cut and resumed. */
  'low-speed-limit': z.number().nonnegative().optional(),
  /** Seconds the low-speed limit is measured over. */
  'low-speed-time': z.number().positive().max(86_400).optional(),
  /** Repositories asked for per page of the catalog (GET /v2/_catalog?n=), for sources such as HOST/team/**. */
  'catalog-page-size': z.number().int().positive().max(10_000).optional(),
});

export const API_SCOPES = ['read', 'pull', 'push', 'sync', 'admin'] as const;
export type ApiScope = (typeof API_SCOPES)[number];

const tokenSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, ".", "_" and "-"'),
  /** sha256 (hex) of the token; the token itself is never stored (stowage token prints both). */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'the sha256 of the token, 64 hex digits (see stowage token)'),
  scopes: z.array(z.enum(API_SCOPES)).min(1),
});

const sizeSchema = z.string().regex(/^\d+(\.\d+)?\s*(B|KiB|MiB|GiB|TiB)$/, 'a size such as 512MiB or 20GiB');

/** Where the service sends its events (see src/events/): one [[server.webhook]] table each. */
const webhookSchema = z.strictObject({
  /** Names it in the API, the console and the logs. */
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-"'),
  url: z
    .string()
    .regex(/^https?:\/\/[^/?#\s]+(\/\S*)?$/, 'an http:// or https:// URL, e.g. http://127.0.0.1:9000/hooks'),
  /** Event types or prefixes ("version", "sync.failed", "io.stowage.tag.moved"); default: every type. */
  events: z.array(z.string().min(1)).min(1).optional(),
  /** A file whose first line is the HMAC-SHA256 key the Stowage-Signature header is made with. */
  'secret-file': z.string().min(1).optional(),
  /** How long one attempt may take (default 10s). */
  timeout: duration.optional(),
  /** How long a delivery is retried, with backoff, before it is recorded as failed (default 1h). */
  'retry-for': duration.optional(),
  /** CloudEvents structured mode (the event as the JSON body; default) or binary (ce-* headers, data as the body). */
  mode: z.enum(['structured', 'binary']).optional(),
});

const serverSchema = z.strictObject({
  /** host:port to listen on (default 127.0.0.1:8080). */
  listen: z.string().optional(),
  /** Where job history, the generated token and download caches live. */
  state: z.string().min(1).optional(),
  /** Jobs run at once (default 2). */
  'concurrent-jobs': z.number().int().positive().max(32).optional(),
  /** Jobs waiting at most; more are refused with 429 (default 100). */
  'max-queued': z.number().int().positive().max(10_000).optional(),
  /** Largest archive accepted by POST /v1/archives (default 20GiB). */
  'max-upload': sizeSchema.optional(),
  /** Registries the API may reach (host or host:port, "*.suffix" allowed); default: any registries.conf does not block. */
  'allow-registries': z.array(z.string().min(1)).optional(),
  /** With allow-registries: the token services (WWW-Authenticate realms) allowed registries may send the service to. */
  'auth-hosts': z.array(z.string().min(1)).optional(),
  /** With allow-registries: the hosts (blob storage, CDNs) allowed registries may redirect the service to. */
  'redirect-hosts': z.array(z.string().min(1)).optional(),
  /**
   * On SIGTERM, how long to keep answering (with /readyz at 503) before closing, so that a load balancer
   * or Kubernetes sees the replica leave before its connections are refused (default 0s).
   */
  'shutdown-grace': duration.optional(),
  /** Jobs kept in the history (default 1000). */
  'keep-jobs': z.number().int().positive().optional(),
  /** PostgreSQL for the version index, jobs and schedules shared by replicas (postgres://USER@HOST:PORT/DB). */
  database: databaseSchema,
  /** A file holding the database password (else PGPASSWORD, else none). */
  'database-password-file': z.string().min(1).optional(),
  /**
   * Replicas sharing PostgreSQL: how long a running job may go without its replica's heartbeat before
   * another replica takes it over (default 30s, at least 10s).
   */
  'job-heartbeat': duration.optional(),
  /**
   * The key web console sessions are signed with (at least 32 characters; `openssl rand -hex 32`).
   * Replicas share one so a session is good on all; default: STATE/session-key, made on first start.
   */
  'session-key-file': z.string().min(1).optional(),
  token: z.array(tokenSchema).optional(),
  webhook: z.array(webhookSchema).optional(),
  /** With allow-registries: the hosts webhooks may send to besides the allowed registries. */
  'webhook-hosts': z.array(z.string().min(1)).optional(),
  /** Deliveries kept in each webhook's history (default 100). */
  'keep-deliveries': z.number().int().positive().max(100_000).optional(),
  /** The archive store served as a registry at /v2/ (always on, read-only; pulls need a token unless opened). */
  registry: z
    .strictObject({
      /** Let anyone pull without a token (default false): for a gateway only a trusted network reaches. */
      'anonymous-pull': z.boolean().optional(),
      /**
       * Upstream registries (host or host:port) served as GATEWAY/HOST_PORT/PATH that fill the store as
       * clients pull; each must be one allow-registries lets the service reach.
       */
      'pull-through': z.array(z.string().min(1)).optional(),
      /** How long a tag pulled through is served before the upstream is asked again (default 5m). */
      'tag-ttl': duration.optional(),
    })
    .optional(),
});

export type ServerConfig = z.infer<typeof serverSchema>;
export type WebhookConfig = z.infer<typeof webhookSchema>;

/** Where `stowage serve` listens without [server] listen or --listen: loopback only. */
export const DEFAULT_LISTEN = '127.0.0.1:8080';

export function parseSize(s: string): number {
  const n = byteSize(s);
  if (n === undefined)
    throw new StowageError('INVALID_CONFIG', `"${s}" is not a size such as 512MiB or 20GiB`);
  return n;
}

export const stowageConfigSchema = z.strictObject({
  store: z
    .strictObject({
      path: z.string().min(1).optional(),
      /** Also write each new version as a tarball file (with .sha256) under this directory. */
      materialize: z.string().min(1).optional(),
      'materialize-format': z.enum(['oci-archive', 'docker-archive']).optional(),
      /** Blobs in an S3-compatible bucket instead of under path (replicas; needs [server] database). */
      s3: s3Schema.optional(),
      /**
       * A path on NFS, SMB, CephFS and the like is refused (the local lock cannot keep hosts apart);
       * "one-host" says only this host ever writes it.
       */
      'network-filesystem': z.enum(['refuse', 'one-host']).optional(),
    })
    .optional(),
  /** The mirror blob cache (blobs on their way to mirrors, kept for other jobs and runs). */
  cache: z
    .strictObject({
      path: z.string().min(1).optional(),
      /** Bound in bytes ("2GiB"); "0B" turns the cache off. */
      'max-size': z.string().optional(),
    })
    .optional(),
  retention: retentionSchema.optional(),
  registries: z.record(z.string(), limitSchema).optional(),
  job: z.array(jobSchema).optional(),
  server: serverSchema.optional(),
});

export type JobConfig = z.infer<typeof jobSchema>;
export type Retention = z.infer<typeof retentionSchema>;

export interface StowageConfig {
  path: string | undefined;
  storePath: string;
  materialize?: { dir: string; format: 'oci-archive' | 'docker-archive' } | undefined;
  /** The mirror blob cache: where, and its bound in bytes (0: off). */
  cache: { path: string; maxBytes: number };
  retention: Retention;
  limits: Record<string, z.infer<typeof limitSchema>>;
  jobs: JobConfig[];
  server: ServerConfig;
  /** The store's blobs on S3 (replicated mode); undefined: the local store at storePath. */
  s3?: S3Settings | undefined;
  /** The local store may be on a network filesystem this host alone writes. */
  networkFilesystemOneHost?: boolean | undefined;
}

/** Where the mirror blob cache lives without configuration: $XDG_CACHE_HOME/stowage/blobs. */
export function defaultCachePath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME || join(env.HOME || homedir(), '.cache'), 'stowage/blobs');
}

/** The directory where contexts keep the registries' blob locations between runs (registry/locations.ts). */
export function blobLocationsPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(defaultCachePath(env), '..', 'locations');
}

function cacheSize(v: string): number {
  try {
    return parseSize(v);
  } catch (e) {
    throw new StowageError('INVALID_CONFIG', `key "cache.max-size": ${(e as Error).message}`);
  }
}

/** Where the store lives without configuration: $STOWAGE_STORE, else ~/.local/share/stowage/store. */
export function defaultStorePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.STOWAGE_STORE) return env.STOWAGE_STORE;
  return join(env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local/share'), 'stowage/store');
}

export function durationMs(d: string): number {
  const n = Number(d.slice(0, -1));
  const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 604800e3 }[d.at(-1) as 's'];
  return n * unit;
}

/**
 * Every check a job gets beyond its schema, wherever it was written (stowage.toml, or sync --src on the
 * command line, which names its flags instead of the keys): `at` says where, in messages.
 */
export function checkJob(j: JobConfig, at: string): void {
  checkSourceAndMirror(j, at);
  if (j.prune && !j.mirror) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${at}: prune = true deletes a mirror's tags that are gone from the source, and the job has no mirror; add mirror = "REGISTRY/REPOSITORY", or remove prune (the store keeps every version; see retention)`,
    );
  }
  if (j.archive === false && !j.mirror) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${at}: archive = false and no mirror: the job has nowhere to go`,
    );
  }
  for (const [k, list] of [
    ['include', j.include],
    ['exclude', j.exclude],
    ['repositories.include', j.repositories?.include],
    ['repositories.exclude', j.repositories?.exclude],
  ] as const) {
    for (const r of list ?? []) {
      try {
        new RegExp(r);
      } catch (e) {
        throw new StowageError('INVALID_CONFIG', `${at}: key "${k}": ${(e as Error).message}`);
      }
    }
  }
  if (j.semver !== undefined && semver.validRange(j.semver) === null) {
    throw new StowageError('INVALID_CONFIG', `${at}: key "semver": "${j.semver}" is not a semver range`);
  }
  if (Array.isArray(j.platforms)) {
    for (const p of j.platforms) {
      try {
        parsePlatform(p);
      } catch (e) {
        throw new StowageError('INVALID_CONFIG', `${at}: key "platforms": ${(e as Error).message}`);
      }
    }
  }
  if (j.schedule !== undefined) {
    try {
      new Cron(j.schedule, { paused: true }).stop();
    } catch (e) {
      throw new StowageError('INVALID_CONFIG', `${at}: key "schedule": ${(e as Error).message}`);
    }
  }
}

/** Parses stowage.toml text; `path` names it in errors. */
export function parseStowageConfig(
  text: string,
  path: string,
  env: NodeJS.ProcessEnv = process.env,
): StowageConfig {
  const raw = parseTomlFile(text, path);
  const parsed = stowageConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    // An unknown key: point at it, not at its table.
    const extra = issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys[0] : undefined;
    const keyPath = extra === undefined ? issue.path : [...issue.path, extra];
    const key = keyPath
      .map((p, i) => (typeof p === 'number' ? `[${p}]` : i ? `.${String(p)}` : String(p)))
      .join('');
    const line = lineOf(text, keyPath);
    const why =
      extra === undefined
        ? issue.message
        : 'unknown key (check its spelling against config/stowage.toml.example)';
    throw new StowageError(
      'INVALID_CONFIG',
      `${path}${line ? ` line ${line}` : ''}: key "${key || '(top level)'}": ${why}`,
    );
  }
  const c = parsed.data;
  const names = new Set<string>();
  for (const [i, j] of (c.job ?? []).entries()) {
    const at = `${path}${lineOf(text, ['job', i, 'name']) ? ` line ${lineOf(text, ['job', i, 'name'])}` : ''}: job "${j.name}"`;
    if (names.has(j.name)) throw new StowageError('INVALID_CONFIG', `${at}: the name is used twice`);
    names.add(j.name);
    checkJob(j, at);
  }
  checkWebhooks(c.server?.webhook ?? [], path);
  return {
    path,
    storePath: c.store?.path ? resolve(c.store.path) : defaultStorePath(env),
    materialize: c.store?.materialize
      ? { dir: resolve(c.store.materialize), format: c.store['materialize-format'] ?? 'oci-archive' }
      : undefined,
    cache: {
      path: c.cache?.path ? resolve(c.cache.path) : defaultCachePath(env),
      maxBytes:
        c.cache?.['max-size'] !== undefined ? cacheSize(c.cache['max-size']) : DEFAULT_BLOB_CACHE_BYTES,
    },
    retention: c.retention ?? {},
    limits: c.registries ?? {},
    jobs: c.job ?? [],
    server: c.server ?? {},
    s3: replicated(c, path),
    networkFilesystemOneHost: c.store?.['network-filesystem'] === 'one-host',
  };
}

/**
 * A job's source (one repository, or a pattern of many) and its mirror: a pattern's mirror must say
 * where each repository goes ({repository} or {path}), a single repository's must not.
 */
export function checkSourceAndMirror(
  j: Pick<JobConfig, 'source' | 'mirror' | 'repositories'>,
  at: string,
): void {
  const pattern = isRepositoryPattern(j.source);
  try {
    if (pattern) parseRepositoryPattern(j.source);
    else parseRepository(j.source);
  } catch (e) {
    throw new StowageError('INVALID_CONFIG', `${at}: key "source": ${(e as Error).message}`);
  }
  if (j.repositories && !pattern) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${at}: key "repositories" chooses among the repositories a pattern finds, and the source names one; write source = "HOST/team/**" or drop repositories`,
    );
  }
  if (!j.mirror) return;
  const placeholder = hasRepositoryPlaceholder(j.mirror);
  if (pattern && !placeholder) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${at}: key "mirror": the source names many repositories, so the mirror must say where each goes: add {repository} (its whole path) or {path} (the part below the pattern's prefix), e.g. "registry.internal:5000/mirror/{repository}"`,
    );
  }
  if (!pattern && placeholder) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${at}: key "mirror": {repository} and {path} stand for the repositories a pattern source finds, and the source names one repository; write the mirror repository out`,
    );
  }
  try {
    const m = parseRepository(j.mirror.replaceAll('{repository}', 'x').replaceAll('{path}', 'x'));
    if (m.shortName) throw new Error('give the registry too, e.g. registry.internal:5000/mirror/app');
  } catch (e) {
    throw new StowageError('INVALID_CONFIG', `${at}: key "mirror": ${(e as Error).message}`);
  }
}

/** Webhook names used once (their `events` and hosts are checked when the service starts: events/webhooks.ts). */
function checkWebhooks(hooks: WebhookConfig[], path: string): void {
  const names = new Set<string>();
  for (const w of hooks) {
    if (names.has(w.name))
      throw new StowageError(
        'INVALID_CONFIG',
        `${path}: [[server.webhook]] "${w.name}": the name is used twice`,
      );
    names.add(w.name);
  }
}

/** [store.s3] with [server] database, or neither: blobs on S3 without a shared index would be lost to other replicas. */
function replicated(c: z.infer<typeof stowageConfigSchema>, path: string): S3Settings | undefined {
  const s3 = c.store?.s3;
  if (s3 && !c.server?.database) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${path}: [store.s3] needs [server] database (postgres://USER@HOST:PORT/DB): the version index and jobs live there`,
    );
  }
  if (s3 && c.store?.path) {
    throw new StowageError('INVALID_CONFIG', `${path}: [store] has both path and s3: choose one`);
  }
  return s3;
}

/** The line a key path starts at, found by scanning the TOML text (good enough for messages). */
function lineOf(text: string, path: PropertyKey[]): number | undefined {
  const lines = text.split('\n');
  let from = 0;
  if (path[0] === 'job' && typeof path[1] === 'number') {
    let seen = -1;
    from = lines.findIndex((l) => /^\s*\[\[job\]\]/.test(l) && ++seen === path[1]);
    if (from < 0) return undefined;
    const key = path[2];
    if (key === undefined) return from + 1;
    for (let i = from + 1; i < lines.length && !/^\s*\[/.test(lines[i]!); i++) {
      if (new RegExp(`^\\s*"?${String(key)}"?\\s*=`).test(lines[i]!)) return i + 1;
    }
    return from + 1;
  }
  const last = path.filter((p) => typeof p === 'string').at(-1);
  if (last === undefined) return undefined;
  const i = lines.findIndex((l) => new RegExp(`^\\s*"?${String(last)}"?\\s*=`).test(l));
  return i < 0 ? undefined : i + 1;
}

/** Loads --config FILE, else $STOWAGE_CONFIG, else ./config/stowage.toml if present (no jobs otherwise). */
export async function loadStowageConfig(
  explicit?: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<StowageConfig> {
  const path = explicit ?? env.STOWAGE_CONFIG ?? 'config/stowage.toml';
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !explicit && !env.STOWAGE_CONFIG) {
      return {
        path: undefined,
        storePath: defaultStorePath(env),
        cache: { path: defaultCachePath(env), maxBytes: DEFAULT_BLOB_CACHE_BYTES },
        retention: {},
        limits: {},
        jobs: [],
        server: {},
      };
    }
    throw new StowageError('INVALID_CONFIG', `cannot read ${path}: ${(e as Error).message}`);
  }
  return parseStowageConfig(text, path, env);
}
