/**
 * Paginated listings (tags, the catalog): followed page by page through `n`, `last` and the Link
 * header, each name once, with the bounds that stop a registry whose pages never end or loop.
 */
import { printable } from '../core/printable.js';
import { StowageError } from '../errors.js';
import type { RegistryHttp } from './http.js';
import { readLimited } from './status.js';

/** A paginated listing (tags or repositories): each name once, in the order served. */
export async function listPages(
  t: RegistryHttp,
  o: {
    first: string;
    key: 'tags' | 'repositories';
    scope: string;
    what: string;
    notFound: (detail: string) => string;
    signal?: AbortSignal | undefined;
  },
): Promise<string[]> {
  const names = new Set<string>();
  let path: string | undefined = o.first;
  const what = o.what;
  const visited = new Set<string>();
  while (path) {
    if (visited.has(path)) {
      throw new StowageError(
        'REGISTRY',
        `${t.host} sent a pagination link for the ${what} that points back at a page already read (${path}); the registry's listing is broken, report it to its operator`,
      );
    }
    if (visited.size >= MAX_TAG_PAGES) {
      throw new StowageError(
        'REGISTRY',
        `${t.host} is still paginating the ${what} after ${MAX_TAG_PAGES} pages; stowage stops there rather than return a partial list`,
      );
    }
    visited.add(path);
    const res = await t.request({ method: 'GET', path, scope: o.scope, signal: o.signal, what });
    await t.check(res, what, [200], { notFound: o.notFound });
    const text = (await readLimited(res.body, 64 * 1024 * 1024, what)).toString('utf8');
    let body: Record<string, string[] | null | undefined>;
    try {
      body = JSON.parse(text) as Record<string, string[] | null | undefined>;
    } catch {
      throw new StowageError('REGISTRY', `${t.host} answered the ${what} with something that is not JSON`);
    }
    const page = body[o.key] ?? [];
    const before = names.size;
    for (const t of page) names.add(t);
    const next = nextLink(res.headers.link);
    // A next page that adds nothing new and points to a `last` we already passed is a loop too.
    if (next && names.size === before && page.length > 0 && !advances(path, next)) {
      throw new StowageError(
        'REGISTRY',
        `${t.host} sent a pagination link for the ${what} that does not move forward (${next} after ${path}); the registry's listing is broken, report it to its operator`,
      );
    }
    path = next;
  }
  return [...names];
}

/** Repositories asked for per catalog page: the page size registries serve by default. */
export const CATALOG_PAGE = 100;

/** More pages than any real repository has (10 million tags at 1000 a page). */
const MAX_TAG_PAGES = 10_000;

/** Whether a next link's `last=` cursor is past the current page's (a listing moves forward in tag order). */
function advances(current: string, next: string): boolean {
  const last = (p: string) => new URL(p, 'http://registry.invalid').searchParams.get('last');
  const a = last(current);
  const b = last(next);
  return a === null || b === null || b > a;
}

/**
 * The path of a `Link: <...>; rel="next"` header, restricted to the same origin (only its path and
 * query are kept). Read in one pass: a regular expression over a hostile 100 KB header took seconds.
 */
export function nextLink(header: string | string[] | undefined): string | undefined {
  const value = Array.isArray(header) ? header.join(', ') : header;
  if (!value) return undefined;
  let i = 0;
  for (;;) {
    const open = value.indexOf('<', i);
    if (open < 0) return undefined;
    const close = value.indexOf('>', open + 1);
    if (close < 0) return undefined;
    // The link's parameters run to the next link.
    const nextOpen = value.indexOf('<', close + 1);
    const params = value.slice(close + 1, nextOpen < 0 ? value.length : nextOpen);
    if (close > open + 1 && /;\s*rel="?next"?(?:[\s;,]|$)/.test(params)) {
      const target = value.slice(open + 1, close);
      try {
        const url = new URL(target, 'http://registry.invalid');
        return url.pathname + url.search;
      } catch {
        throw new StowageError(
          'REGISTRY',
          `the registry's Link header names a next page that is not a URL (${printable(target.slice(0, 200))})`,
        );
      }
    }
    i = close + 1;
  }
}
