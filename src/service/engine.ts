/**
 * The engine the service's jobs and requests share with the CLI (its Context, its store, its
 * configuration), and the rules that keep every request within what the service allows: the registries
 * it may reach, the references it takes, and no server path in what it answers.
 */
import { basename } from 'node:path';
import type { OutboundGuard } from '../auth/authenticator.js';
import type { ServerConfig, StowageConfig } from '../config/stowage.js';
import { StowageError } from '../errors.js';
import type { EventPublisher } from '../events/event.js';
import { type ImageReference, parseReference, withDefaultTag } from '../reference/reference.js';
import type { Context } from '../registry/context.js';
import type { ArchiveStore } from '../store/archive-store.js';
import type { Renditions } from '../store/renditions.js';
import type { BlobCache } from '../sync/blob-cache.js';

export interface Engine {
  ctx: Context;
  store: ArchiveStore;
  config: StowageConfig;
  /** Where uploads are spooled. */
  tmpDir: string;
  /** Where made docker-archives are kept, by version id (a local store's). */
  cacheDir: string;
  /** Made docker-archives, kept: in cacheDir, or in the bucket of a shared store. */
  renditions: Renditions;
  /** The mirror blob cache all sync jobs share (opened on first use). */
  blobCache?: Promise<BlobCache | undefined> | undefined;
  /** Counters the metrics read. */
  counters: EngineCounters;
  /** Where operations tell other systems what they did (webhooks, the event stream); none in the CLI. */
  events?: EventPublisher | undefined;
  /** Takes the server's own paths out of text that leaves it (events' messages). */
  redact?: ((text: string) => string) | undefined;
}

/** The running totals the metrics read. */
export interface EngineCounters {
  bytesPulled: number;
  bytesPushed: number;
  blobCacheHits: number;
  blobCacheMisses: number;
  /** The registry's pull-through: answered from the store, fetched upstream, served stale (upstream down). */
  pullThroughHits: number;
  pullThroughMisses: number;
  pullThroughStale: number;
}

export function newCounters(): EngineCounters {
  return {
    bytesPulled: 0,
    bytesPushed: 0,
    blobCacheHits: 0,
    blobCacheMisses: 0,
    pullThroughHits: 0,
    pullThroughMisses: 0,
    pullThroughStale: 0,
  };
}

/**
 * Replaces the service's own directories in text meant for clients (error messages, job results) with
 * names that say what they are: no filesystem path of the server reaches an API response.
 */
export function pathRedactor(paths: {
  store: string;
  state: string;
  /** The trust policy's file (its refusals name it). */
  policy?: string | undefined;
  /** Configuration files messages name (registries.conf and its drop-ins, stowage.toml): by file name alone. */
  configFiles?: string[] | undefined;
}): (text: string) => string {
  // Longest first, so a state directory inside the store's (or the other way) is named for itself.
  const named = [
    [paths.store, '<store>'],
    [paths.state, '<state>'],
    [paths.policy ?? '', 'the trust policy'],
    ...(paths.configFiles ?? []).map((f) => [f, `the service's ${basename(f)}`]),
  ].sort((a, b) => b[0]!.length - a[0]!.length) as [string, string][];
  return (text) => {
    let out = text;
    for (const [path, name] of named) if (path) out = out.replaceAll(path, name);
    return out;
  };
}

export function hostMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith('*.')) {
    const bare = host.replace(/:\d+$/, '');
    return bare.endsWith(pattern.slice(1));
  }
  return pattern === host || (!pattern.includes(':') && host.replace(/:\d+$/, '') === pattern);
}

/**
 * The check for hosts an allowed registry sends the service to: a token realm must be an allowed
 * registry or in auth-hosts, a redirect (or upload location) an allowed registry or in redirect-hosts.
 * Without allow-registries the service reaches any registry, and so wherever registries point.
 */
export function outboundGuard(server: ServerConfig): OutboundGuard | undefined {
  const allow = server['allow-registries'];
  if (!allow) return undefined;
  return (url, kind) => {
    const key = kind === 'token realm' ? 'auth-hosts' : 'redirect-hosts';
    const extra = server[key] ?? [];
    if ([...allow, ...extra].some((p) => hostMatches(p, url.host))) return undefined;
    return `is in neither this service's allow-registries nor its ${key}; ask its operator to add it to ${key} if it is trusted`;
  };
}

/** Whether a webhook may send to `host`: any without allow-registries, else an allowed registry or a webhook-hosts entry. */
export function webhookAllowed(server: ServerConfig, host: string): boolean {
  const allow = server['allow-registries'];
  if (!allow) return true;
  return [...allow, ...(server['webhook-hosts'] ?? [])].some((p) => hostMatches(p, host));
}

/**
 * Refuses a reference the service may not reach: blocked in registries.conf (403), outside the
 * server's allow-list (403), or a short name with nowhere to resolve (400).
 */
export function checkReachable(engine: Engine, ref: ImageReference): void {
  const allow = engine.config.server['allow-registries'];
  for (const c of engine.ctx.candidates(ref)) {
    const endpoint = engine.ctx.endpoint(c);
    if (allow && !allow.some((p) => hostMatches(p, endpoint.host))) {
      throw new StowageError(
        'BLOCKED',
        `registry ${endpoint.host} is not in this service's allow-registries; ask its operator to add it`,
      );
    }
  }
}

/** Parses "repo:tag" references for a pull; a digest-only reference has no tag to keep versions of. */
export function parsePullReference(engine: Engine, input: string): ImageReference {
  const ref = withDefaultTag(parseReference(input));
  if (!ref.tag) {
    throw new StowageError(
      'INVALID_REFERENCE',
      `"${input}" names no tag; the store keeps versions of tags, so give repository:tag (repository:tag@digest pins it)`,
    );
  }
  checkReachable(engine, ref);
  return ref;
}
