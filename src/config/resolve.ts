import { StowageError } from '../errors.js';
import {
  DEFAULT_DOMAIN,
  formatReference,
  type ImageReference,
  parseReference,
  repositoryName,
} from '../reference/reference.js';
import type { RegistriesConf, RegistryEntry } from './registries.js';

/** Where a reference is fetched from, after registries.conf rewrote it. */
export interface Endpoint {
  /** The registry host (with port) to contact. */
  host: string;
  /** The repository path on that host. */
  path: string;
  /** Plain HTTP and unverified TLS are allowed. */
  insecure: boolean;
}

function matchLength(entry: RegistryEntry, name: string, domain: string): number {
  const prefix = entry.prefix ?? entry.location!;
  if (prefix.startsWith('*.')) {
    return domain.endsWith(prefix.slice(1)) ? prefix.length : -1;
  }
  if (name === prefix || name.startsWith(`${prefix}/`)) return prefix.length;
  return -1;
}

/** The [[registry]] entry with the longest matching prefix, as containers/image chooses it. */
export function findRegistry(
  conf: RegistriesConf,
  ref: Pick<ImageReference, 'domain' | 'path'>,
): RegistryEntry | undefined {
  const name = repositoryName(ref);
  let best: RegistryEntry | undefined;
  let bestLen = -1;
  for (const r of conf.registries) {
    const len = matchLength(r, name, ref.domain);
    if (len > bestLen) {
      best = r;
      bestLen = len;
    }
  }
  return best;
}

function blockedError(ref: Pick<ImageReference, 'domain' | 'path'>, entry: RegistryEntry): StowageError {
  return new StowageError(
    'BLOCKED',
    `registry ${ref.domain} is blocked by registries.conf (prefix "${entry.prefix ?? entry.location}") for ${repositoryName(ref)}; remove "blocked = true" there to allow it`,
  );
}

/** The reference's name with the entry's prefix replaced by `location`, split into host and path. */
function rewrite(
  entry: RegistryEntry,
  ref: Pick<ImageReference, 'domain' | 'path'>,
  location: string,
): { host: string; path: string } {
  const name = repositoryName(ref);
  const prefix = entry.prefix ?? entry.location!;
  // A wildcard prefix matched the host itself.
  const matched = prefix.startsWith('*.') ? ref.domain : prefix;
  const rewritten = location + name.slice(matched.length);
  const slash = rewritten.indexOf('/');
  return { host: rewritten.slice(0, slash), path: rewritten.slice(slash + 1) };
}

/**
 * The endpoint for a fully qualified reference, or BLOCKED. `insecureOverride` is --tls-verify=false.
 */
export function resolveEndpoint(
  conf: RegistriesConf,
  ref: Pick<ImageReference, 'domain' | 'path'>,
  insecureOverride = false,
): Endpoint {
  const entry = findRegistry(conf, ref);
  if (entry?.blocked) throw blockedError(ref, entry);
  let host = ref.domain;
  let path = ref.path;
  if (entry?.location && !(entry.prefix ?? '').startsWith('*.'))
    ({ host, path } = rewrite(entry, ref, entry.location));
  return { host, path, insecure: insecureOverride || entry?.insecure === true };
}

/** An endpoint to pull from: a mirror, or the primary location. */
export interface PullEndpoint extends Endpoint {
  mirror: boolean;
}

/**
 * Where a pull tries, in order: the [[registry.mirror]] entries that apply (pull-from-mirror:
 * all, digest-only or tag-only; mirror-by-digest-only as the older spelling), then the primary.
 * Pushes never use mirrors.
 */
export function pullEndpoints(
  conf: RegistriesConf,
  ref: Pick<ImageReference, 'domain' | 'path' | 'digest'>,
  insecureOverride = false,
): PullEndpoint[] {
  const primary = resolveEndpoint(conf, ref, insecureOverride);
  const entry = findRegistry(conf, ref);
  const out: PullEndpoint[] = [];
  for (const m of entry?.mirror ?? []) {
    const mode = m['pull-from-mirror'] ?? (entry!['mirror-by-digest-only'] ? 'digest-only' : 'all');
    if (mode === 'digest-only' && !ref.digest) continue;
    if (mode === 'tag-only' && ref.digest) continue;
    out.push({
      ...rewrite(entry!, ref, m.location),
      insecure: insecureOverride || m.insecure === true,
      mirror: true,
    });
  }
  out.push({ ...primary, mirror: false });
  return out;
}

/**
 * Turns a reference into the fully qualified candidates to try, in order, as podman resolves short
 * names (containers-registries.conf(5)): an [aliases] entry always wins; otherwise each
 * unqualified-search registry. With several, "enforcing" mode is an error listing them (a gateway
 * has no terminal to prompt on); "permissive" (the default) and "disabled" try them in order.
 */
export function resolveCandidates(conf: RegistriesConf, ref: ImageReference): ImageReference[] {
  if (!ref.shortName) return [ref];
  const short =
    ref.domain === DEFAULT_DOMAIN && /^library\/[^/]+$/.test(ref.path) ? ref.path.slice(8) : ref.path;
  const alias = conf.aliases[short] ?? conf.aliases[ref.path];
  const keep = { tag: ref.tag, digest: ref.digest };
  if (alias) return [{ ...parseReference(alias), ...keep, shortName: false }];
  const search = conf.unqualifiedSearchRegistries;
  if (search.length === 0) {
    const where = conf.sources.length ? `in ${conf.sources.join(', ')}` : '(no registries.conf was found)';
    throw new StowageError(
      'INVALID_REFERENCE',
      `short name "${short}" has no alias and no unqualified-search-registries are defined ${where}; use a fully qualified name such as docker.io/${ref.path}, or configure registries.conf`,
    );
  }
  const candidates = search.map((domain) => ({
    ...parseReference(`${domain}/${short}`),
    ...keep,
    shortName: false,
  }));
  if (candidates.length > 1 && conf.shortNameMode === 'enforcing') {
    throw new StowageError(
      'INVALID_REFERENCE',
      `short name "${short}" is ambiguous: it could be ${candidates.map(formatReference).join(', ')}; short-name-mode is "enforcing" and there is no terminal to ask on, so use a fully qualified name, or add an alias for it to registries.conf`,
    );
  }
  return candidates;
}
