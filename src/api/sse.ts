/**
 * What the API's Server-Sent Event streams share: writes that go one after another (events in order,
 * keep-alive comments between them, a failed write ending nothing but itself), and a keep-alive every
 * 15 s so that proxies do not cut a quiet stream.
 */
import type { SSEStreamingApi } from 'hono/streaming';

const SSE_KEEPALIVE_MS = 15_000;

export interface OrderedStream {
  /** Queues a write behind those before it. */
  send(write: () => Promise<unknown>): void;
  /** Resolves when every write queued so far is done. */
  flushed(): Promise<void>;
  /** Ends the keep-alives. */
  stop(): void;
}

export function orderedStream(stream: SSEStreamingApi): OrderedStream {
  let writing = Promise.resolve();
  const send = (write: () => Promise<unknown>) => {
    writing = writing.then(() => write().then(() => undefined)).catch(() => {});
  };
  const keepalive = setInterval(() => send(() => stream.write(': keep-alive\n\n')), SSE_KEEPALIVE_MS);
  return { send, flushed: () => writing, stop: () => clearInterval(keepalive) };
}
