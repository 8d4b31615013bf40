/** The distribution spec's error bodies, which every registry client reads. */
import type { Context } from 'hono';

export type OciErrorCode =
  | 'BLOB_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'PAGINATION_NUMBER_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS';

/** An error answer: `{"errors":[{"code","message"}]}` (no body for HEAD, as HTTP says). */
export function ociError(
  c: Context,
  status: 400 | 401 | 403 | 404 | 405 | 416 | 429 | 500 | 502 | 503,
  code: OciErrorCode | 'UNKNOWN',
  message: string,
): Response {
  const body = JSON.stringify({ errors: [{ code, message }] });
  c.header('Content-Type', 'application/json');
  if (c.req.method === 'HEAD') return c.body(null, status);
  return c.body(body, status);
}
