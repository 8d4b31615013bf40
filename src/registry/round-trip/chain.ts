/**
 * A registry request as a chain of round trippers, one per concern (go-containerregistry's
 * transport.Wrap, undici's interceptors): each step may change the request, send it on with `next`,
 * send it again, or turn the answer into an error. RegistryHttp composes them in one order:
 *
 *   redirects -> authorize -> throttle (429) -> pace -> publish (metrics) -> send
 *
 * so a redirect's new host is authorized (or not) on its own, and every attempt, whether a 401's
 * retry, a 429's or a redirect's, waits its turn and is counted.
 */
import type { Dispatcher } from 'undici';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface Outgoing {
  method: Method;
  url: URL;
  /** The registry's own origin (found by GET /v2/): only it is sent credentials. */
  origin: string;
  headers: Record<string, string>;
  body?: Buffer | AsyncIterable<Uint8Array> | undefined;
  signal?: AbortSignal | undefined;
  /** The token scope this request needs, e.g. repository:team/app:pull. */
  scope: string;
  /** What the request is for, as error messages name it ("the manifest of team/app:1.4"). */
  what: string;
}

export type Answer = Dispatcher.ResponseData;
export type Send = (req: Outgoing) => Promise<Answer>;
export type Step = (req: Outgoing, next: Send) => Promise<Answer>;

/** The steps around `send`, the first outermost. */
export function chain(steps: readonly Step[], send: Send): Send {
  return steps.reduceRight<Send>((next, step) => (req) => step(req, next), send);
}

/**
 * A write's body may be a stream that cannot be sent twice, and resending a write is the push
 * engine's decision (it retries whole uploads): no step repeats one.
 */
export function isWrite(req: Outgoing): boolean {
  return req.method !== 'GET' && req.method !== 'HEAD';
}

/** Whether the request could be sent again as it is (no body, or one held in memory). */
export function isReplayable(req: Outgoing): boolean {
  return req.body === undefined || Buffer.isBuffer(req.body);
}

/** One header's first value, trimmed. */
export function header(res: Answer, name: string): string | undefined {
  const v = res.headers[name];
  return (Array.isArray(v) ? v[0] : v)?.trim();
}
