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

/**
 * The endpoint for a fully qualified reference, or BLOCKED. `insecureOverride` is --tls-verify=false.
 */
export function resolveEndpoint(
  conf: RegistriesConf,
  ref: Pick<ImageReference, 'domain' | 'path'>,
  insecureOverride = false,
): Endpoint {
  const entry = findRegistry(conf, ref);
  const name = repositoryName(ref);
  if (entry?.blocked) {
    throw new StowageError(
      'BLOCKED',
      `registry ${ref.domain} is blocked by registries.conf (prefix "${entry.prefix ?? entry.location}") for ${name}; remove "blocked = true" there to allow it`,
    );
  }
  let host = ref.domain;
  let path = ref.path;
  if (entry?.location && !(entry.prefix ?? '').startsWith('*.')) {
    const prefix = entry.prefix ?? entry.location;
    const rewritten = entry.location + name.slice(prefix.length);
    const slash = rewritten.indexOf('/');
    host = rewritten.slice(0, slash);
    path = rewritten.slice(slash + 1);
  }
  return { host, path, insecure: insecureOverride || entry?.insecure === true };
}

/**
 * Turns a reference into the fully qualified candidates to try, in order. A short name goes through
 * [aliases], then unqualified-search-registries, else docker.io as docker does.
 */
export function resolveCandidates(conf: RegistriesConf, ref: ImageReference): ImageReference[] {
  if (!ref.shortName) return [ref];
  const short =
    ref.domain === DEFAULT_DOMAIN && /^library\/[^/]+$/.test(ref.path) ? ref.path.slice(8) : ref.path;
  const alias = conf.aliases[short] ?? conf.aliases[ref.path];
  const keep = { tag: ref.tag, digest: ref.digest };
  if (alias && conf.shortNameMode !== 'disabled') {
    return [{ ...parseReference(alias), ...keep, shortName: false }];
  }
  const search = conf.unqualifiedSearchRegistries;
  if (search.length === 0) return [{ ...ref, shortName: false }];
  const candidates = search.map((domain) => ({
    ...parseReference(`${domain}/${short}`),
    ...keep,
    shortName: false,
  }));
  if (candidates.length > 1 && conf.shortNameMode === 'enforcing') {
    throw new StowageError(
      'INVALID_REFERENCE',
      `short name "${short}" is ambiguous: it could be ${candidates.map(formatReference).join(', ')}; use a fully qualified name, or add an alias for it to registries.conf`,
    );
  }
  return candidates;
}
