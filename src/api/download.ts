/**
 * Archive downloads over HTTP: conditional requests (If-None-Match against the archive's sha256 ETag,
 * If-Range) and one byte range (Range, 206, 416), answered from an ArchiveView without building the
 * archive, streamed a few chunks ahead of the socket.
 */

import type { Context as HonoContext } from 'hono';
import { webStreamOf } from '../core/streams.js';
import type { ArchiveView } from '../store/view.js';
import { parseRange } from './range.js';
import { type Env, errorBody } from './shared.js';

/**
 * Bytes [start, end] of a view as a web stream: chunks go straight from the view (1 MiB file reads) to
 * the socket, a few ahead at most; a client that goes away stops the reads.
 */
export function streamOf(view: ArchiveView, start: number, end: number): ReadableStream<Uint8Array> {
  const abort = new AbortController();
  return webStreamOf(view.read(start, end, abort.signal), abort);
}

/** What the response says: the range to send (or none: all of it), or that it cannot be sent. */
export type Conditional =
  | { status: 304 }
  | { status: 416 }
  | { status: 200 | 206; start: number; end: number };

/**
 * How to answer a GET or HEAD of content of `size` bytes whose ETag is `etag`, given the request's
 * If-None-Match, If-Range and Range (RFC 9110 13 and 14): a Range applies only when If-Range, if sent,
 * names the current ETag; several ranges are answered whole.
 */
export function conditional(
  header: (name: string) => string | undefined,
  size: number,
  etag: string,
): Conditional {
  const inm = header('if-none-match');
  if (inm?.split(',').some((t) => t.trim() === etag || t.trim() === '*')) return { status: 304 };
  const ifRange = header('if-range');
  const rangeHeader = !ifRange || ifRange === etag ? header('range') : undefined;
  const range = rangeHeader ? parseRange(rangeHeader, size) : undefined;
  if (range === 'unsatisfiable') return { status: 416 };
  if (range) return { status: 206, start: range[0], end: range[1] };
  return { status: 200, start: 0, end: size - 1 };
}

/** Sends a view as a tar download, honouring the conditional and range headers. */
export function sendView(
  c: HonoContext<Env>,
  view: ArchiveView,
  meta: { sha256: string; filename: string },
): Response {
  const etag = `"sha256:${meta.sha256}"`;
  const headers: Record<string, string> = {
    'content-type': 'application/x-tar',
    'accept-ranges': 'bytes',
    etag,
    'content-disposition': `attachment; filename="${meta.filename}"`,
    'x-content-sha256': meta.sha256,
  };
  const answer = conditional((n) => c.req.header(n), view.size, etag);
  if (answer.status === 304) return c.body(null, 304, headers);
  if (answer.status === 416) {
    const message = `the archive has ${view.size} bytes; ask for a range within them`;
    return c.json(errorBody('RANGE_NOT_SATISFIABLE', message, c.get('requestId')), 416, {
      'content-range': `bytes */${view.size}`,
    });
  }
  const { status, start, end } = answer;
  headers['content-length'] = String(end - start + 1);
  if (status === 206) headers['content-range'] = `bytes ${start}-${end}/${view.size}`;
  if (c.req.method === 'HEAD') return c.body(null, status, headers);
  return c.body(streamOf(view, start, end), status, headers);
}
