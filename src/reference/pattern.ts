/**
 * Sources that name many repositories: `HOST/team/**`, `HOST/team/*`, `HOST/**`. `*` stands for one
 * path segment, `**` for one or more; the segments before the first wildcard are the pattern's fixed
 * prefix. The repositories come from the registry's catalog; a mirror names where each goes with
 * `{repository}` (the whole path on the source: team/app/api) or `{path}` (the part below the fixed
 * prefix: app/api for team/**).
 */
import { StowageError } from '../errors.js';
import { parseRepository } from './reference.js';

export interface RepositoryPattern {
  /** As written. */
  text: string;
  /** The registry, as a reference names it (host[:port]). */
  host: string;
  /** The path segments before the first wildcard ('' for HOST/**). */
  prefix: string;
  /** Matches a repository path (without the host). */
  matches: (path: string) => boolean;
}

/** Whether a source names many repositories (has a `*` in its path). */
export function isRepositoryPattern(source: string): boolean {
  return source.includes('*');
}

const SEGMENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/** Parses `HOST/[PATH/]GLOB`; the host must be written out, since the catalog is one registry's. */
export function parseRepositoryPattern(source: string): RepositoryPattern {
  const bad = (why: string) =>
    new StowageError('INVALID_REFERENCE', `"${source}" is not a repository pattern: ${why}`);
  const slash = source.indexOf('/');
  const host = slash > 0 ? source.slice(0, slash) : '';
  if (!host || !(host.includes('.') || host.includes(':') || host === 'localhost'))
    throw bad('it must start with the registry, e.g. registry.internal:5000/team/**');
  const segments = source.slice(slash + 1).split('/');
  const fixed: string[] = [];
  let wild = false;
  const parts: string[] = [];
  for (const seg of segments) {
    if (seg === '**') {
      wild = true;
      parts.push('[^/]+(?:/[^/]+)*');
    } else if (seg.includes('**')) {
      throw bad('"**" stands alone between slashes (team/**, not team/app**)');
    } else if (seg.includes('*')) {
      wild = true;
      const literal = seg.split('*');
      if (!literal.every((l) => l === '' || /^[a-z0-9._-]+$/.test(l)))
        throw bad(`"${seg}" is not a path segment with wildcards`);
      parts.push(literal.map(escapeRegExp).join('[^/]*'));
    } else {
      if (!SEGMENT.test(seg)) throw bad(`"${seg}" is not a repository path segment`);
      if (!wild) fixed.push(seg);
      parts.push(escapeRegExp(seg));
    }
  }
  if (!wild) throw bad('it has no * or **');
  // The host as a reference spells it (index.docker.io is docker.io), checked by the reference grammar.
  const { domain } = parseRepository(`${host}/x`);
  const re = new RegExp(`^${parts.join('/')}$`);
  return { text: source, host: domain, prefix: fixed.join('/'), matches: (path) => re.test(path) };
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Whether a mirror spelling maps each repository somewhere of its own. */
export function hasRepositoryPlaceholder(mirror: string): boolean {
  return mirror.includes('{repository}') || mirror.includes('{path}');
}

/** The mirror repository for one repository a pattern matched. */
export function mirrorFor(template: string, pattern: RepositoryPattern, path: string): string {
  const below =
    pattern.prefix && path.startsWith(`${pattern.prefix}/`) ? path.slice(pattern.prefix.length + 1) : path;
  return template.replaceAll('{repository}', path).replaceAll('{path}', below);
}
