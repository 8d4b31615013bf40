import { StowageError } from '../errors.js';

/**
 * Image references, parsed and normalised as docker and containers/image do:
 *   [domain[:port]/]path[:tag][@digest]
 * A name without a domain is a short name: docker.io/library/NAME or docker.io/NAME unless
 * registries.conf resolves it otherwise (see config/resolve.ts).
 */
export const DEFAULT_DOMAIN = 'docker.io';
export const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
export const DOCKER_HUB_API_HOST = 'registry-1.docker.io';

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256_HEX = /^[a-f0-9]{64}$/;
const DOMAIN_LABEL = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;

export interface ImageReference {
  /** Registry host as written by the user, normalised: docker.io for Docker Hub. */
  readonly domain: string;
  /** Repository path inside the registry, e.g. library/alpine. */
  readonly path: string;
  readonly tag?: string | undefined;
  readonly digest?: string | undefined;
  /** True when the user gave no domain (a short name). */
  readonly shortName: boolean;
}

export function isDigest(s: string): boolean {
  if (!DIGEST.test(s)) return false;
  const [alg, hex] = s.split(':', 2) as [string, string];
  if (alg === 'sha256') return SHA256_HEX.test(hex);
  if (alg === 'sha512') return /^[a-f0-9]{128}$/.test(hex);
  return true;
}

function looksLikeDomain(first: string): boolean {
  return first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase();
}

function validDomain(domain: string): boolean {
  if (domain.startsWith('[')) return /^\[[0-9a-fA-F:.]+\](?::\d+)?$/.test(domain);
  const [host, port, ...rest] = domain.split(':');
  if (rest.length > 0 || !host) return false;
  if (port !== undefined && !/^\d{1,5}$/.test(port)) return false;
  return host.split('.').every((l) => DOMAIN_LABEL.test(l));
}

/** Parses a docker-style reference. Throws INVALID_REFERENCE with the offending input named. */
export function parseReference(input: string): ImageReference {
  const bad = (why: string, what = 'fix the reference and try again') =>
    new StowageError('INVALID_REFERENCE', `invalid image reference "${input}": ${why}; ${what}`);
  if (input.length === 0) throw bad('it is empty', 'give a reference like registry.local/repo:tag');
  if (input.length > 4096) throw bad('it is longer than 4096 characters');
  if (/\s/.test(input)) throw bad('it contains white space');
  if (input.includes('://'))
    throw bad('a URL is not an image reference', 'drop the scheme (http://, https://)');

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) throw bad(`"${digest}" is not a valid digest`, 'use sha256: and 64 hex digits');
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`"${tag}" is not a valid tag`, 'tags are up to 128 of [A-Za-z0-9_.-]');
  }
  if (rest.length === 0) throw bad('the repository name is empty');

  const parts = rest.split('/');
  let domain = DEFAULT_DOMAIN;
  let shortName = true;
  if (parts.length > 1 && looksLikeDomain(parts[0]!)) {
    domain = parts.shift()!;
    shortName = false;
    if (!validDomain(domain)) throw bad(`"${domain}" is not a valid registry host`);
  }
  for (const p of parts) {
    if (!PATH_COMPONENT.test(p)) {
      if (p !== p.toLowerCase()) throw bad('repository names must be lowercase');
      throw bad(`"${p}" is not a valid repository path component`);
    }
  }
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  let path = parts.join('/');
  if (domain === DEFAULT_DOMAIN && parts.length === 1) path = `library/${path}`;
  if (`${domain}/${path}`.length > 255) throw bad('the repository name is longer than 255 characters');
  return { domain, path, tag, digest, shortName };
}

/** Parses a repository without tag or digest (for `stowage tags`). */
export function parseRepository(input: string): ImageReference {
  const ref = parseReference(input);
  if (ref.tag || ref.digest) {
    throw new StowageError(
      'INVALID_REFERENCE',
      `"${input}" names an image, not a repository; drop the :tag or @digest`,
    );
  }
  return ref;
}

/** Tag to use when the reference names neither tag nor digest. */
export function withDefaultTag(ref: ImageReference): ImageReference {
  return ref.tag || ref.digest ? ref : { ...ref, tag: 'latest' };
}

export function repositoryName(ref: Pick<ImageReference, 'domain' | 'path'>): string {
  return `${ref.domain}/${ref.path}`;
}

/** Fully qualified form: docker.io/library/alpine:3.20@sha256:... */
export function formatReference(ref: ImageReference): string {
  let s = repositoryName(ref);
  if (ref.tag) s += `:${ref.tag}`;
  if (ref.digest) s += `@${ref.digest}`;
  return s;
}

/** Short familiar form as docker prints it: alpine:3.20 for Docker Hub official images. */
export function familiarName(ref: ImageReference): string {
  let name = repositoryName(ref);
  if (ref.domain === DEFAULT_DOMAIN) name = ref.path.startsWith('library/') ? ref.path.slice(8) : ref.path;
  if (ref.tag) name += `:${ref.tag}`;
  if (ref.digest) name += `@${ref.digest}`;
  return name;
}
