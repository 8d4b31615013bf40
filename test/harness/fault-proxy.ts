/**
 * A small HTTP proxy in front of a real registry, for the faults a real registry will not produce:
 * a corrupted byte, a connection dropped mid-body, a 429, a redirect to another host.
 */
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';

export type Fault =
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  | { kind: 'corrupt' }
  | { kind: 'drop'; afterBytes: number }
  /** The connection dies after this many bytes of the request body (an upload cut short). */
  | { kind: 'drop-request'; afterBytes: number }
  | { kind: 'redirect'; location: string }
  /** No answer at all: the request stays open until the client gives up or is killed. */
  | { kind: 'hang' }
  /** The registry's answer, with these headers added (rate-limit headers, say). */
  | { kind: 'headers'; headers: Record<string, string> }
  /** The request goes upstream without its Range header: the whole blob comes back (200). */
  | { kind: 'ignore-range' }
  /** A partial answer (206) whose bytes are rewritten: a registry that serves a wrong range. */
  | { kind: 'rewrite-range'; rewrite: (body: Buffer) => Buffer }
  /** The registry's answer, its body sent `bytes` at a time every `everyMs` (a blob that trickles). */
  | { kind: 'trickle'; bytes: number; everyMs: number }
  /** The request goes upstream to another path (a registry that ignores a parameter, say). */
  | { kind: 'rewrite-path'; path: string }
  /** The proxy answers itself (protocol misbehaviour no real registry shows). */
  | { kind: 'respond'; handle: (req: IncomingMessage, res: ServerResponse) => void };

export interface SeenRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  /** When it arrived (performance.now() of the test process). */
  at: number;
}

export interface FaultProxy {
  host: string;
  url: string;
  seen: SeenRequest[];
  /** TCP connections accepted so far. */
  readonly connections: number;
  /** The most requests that were ever open at once. */
  readonly maxInFlight: number;
  close(): Promise<void>;
}

export async function startFaultProxy(opts: {
  upstream: string;
  listenHost?: string;
  /** Decides a fault for a request; `n` counts requests for this method and path, from 1. */
  fault?: (req: IncomingMessage, n: number) => Fault | undefined;
  /** Extra headers sent upstream (e.g. credentials the redirect target holds itself). */
  upstreamHeaders?: Record<string, string>;
  /** Sends the client's Host header upstream as it came (an S3 request's signature covers it). */
  keepHost?: boolean;
}): Promise<FaultProxy> {
  const upstream = new URL(opts.upstream);
  const counts = new Map<string, number>();
  const seen: SeenRequest[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const server: Server = createServer((req, res) => {
    const key = `${req.method} ${req.url}`;
    const n = (counts.get(key) ?? 0) + 1;
    counts.set(key, n);
    seen.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, at: performance.now() });
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.on('close', () => inFlight--);
    const fault = opts.fault?.(req, n);
    if (fault?.kind === 'status') {
      res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
      res.end('{"errors":[{"code":"TOOMANYREQUESTS","message":"injected fault"}]}');
      return;
    }
    if (fault?.kind === 'hang') return;
    if (fault?.kind === 'respond') {
      fault.handle(req, res);
      return;
    }
    if (fault?.kind === 'redirect') {
      res.writeHead(307, { location: fault.location });
      res.end();
      return;
    }
    const headers = {
      ...req.headers,
      ...(opts.keepHost ? {} : { host: upstream.host }),
      ...opts.upstreamHeaders,
    };
    if (fault?.kind === 'ignore-range') delete headers.range;
    const self = `http://${req.headers.host}`;
    const up = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: fault?.kind === 'rewrite-path' ? fault.path : req.url,
        headers,
      },
      (upRes) => {
        const resHeaders = { ...upRes.headers, ...(fault?.kind === 'headers' ? fault.headers : {}) };
        // The registry's own absolute URLs (upload locations) point back through the proxy.
        if (typeof resHeaders.location === 'string' && resHeaders.location.startsWith(upstream.origin))
          resHeaders.location = self + resHeaders.location.slice(upstream.origin.length);
        res.writeHead(upRes.statusCode ?? 502, resHeaders);
        if (fault?.kind === 'corrupt' && upRes.statusCode === 200) {
          let offset = 0;
          const target = Math.floor(Number(upRes.headers['content-length'] ?? 1) / 2);
          upRes.on('data', (chunk: Buffer) => {
            if (target >= offset && target < offset + chunk.length) {
              const copy = Buffer.from(chunk);
              copy[target - offset] = (copy[target - offset] ?? 0) ^ 0xff;
              res.write(copy);
            } else {
              res.write(chunk);
            }
            offset += chunk.length;
          });
          upRes.on('end', () => res.end());
          return;
        }
        if (fault?.kind === 'rewrite-range' && upRes.statusCode === 206) {
          const parts: Buffer[] = [];
          upRes.on('data', (chunk: Buffer) => parts.push(chunk));
          upRes.on('end', () => res.end(fault.rewrite(Buffer.concat(parts))));
          return;
        }
        if (fault?.kind === 'trickle' && (upRes.statusCode === 200 || upRes.statusCode === 206)) {
          trickle(upRes, res, fault.bytes, fault.everyMs);
          return;
        }
        if (fault?.kind === 'drop' && upRes.statusCode === 200) {
          let sent = 0;
          upRes.on('end', () => res.end());
          if (fault.afterBytes === 0) {
            upRes.destroy();
            res.flushHeaders();
            setTimeout(() => res.socket?.destroy(), 20);
            return;
          }
          upRes.on('data', (chunk: Buffer) => {
            if (sent >= fault.afterBytes) return;
            const part = chunk.subarray(0, fault.afterBytes - sent);
            sent += part.length;
            res.write(part);
            if (sent >= fault.afterBytes) {
              upRes.destroy();
              setTimeout(() => res.socket?.destroy(), 20);
            }
          });
          return;
        }
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    if (fault?.kind === 'drop-request') {
      let got = 0;
      req.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got >= fault.afterBytes) {
          up.destroy();
          req.socket.destroy();
        }
      });
    }
    req.pipe(up);
  });
  let connections = 0;
  server.on('connection', () => connections++);
  const host = opts.listenHost ?? '127.0.0.1';
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    host: `${host}:${port}`,
    url: `http://${host}:${port}`,
    seen,
    get connections() {
      return connections;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Sends `src` on to `res` a few bytes at a time, as a registry whose link has almost stalled. */
function trickle(src: IncomingMessage, res: ServerResponse, bytes: number, everyMs: number): void {
  const parts: Buffer[] = [];
  let ended = false;
  src.on('data', (c: Buffer) => parts.push(c));
  src.on('end', () => {
    ended = true;
  });
  let pending = Buffer.alloc(0);
  const timer = setInterval(() => {
    if (pending.length === 0 && parts.length > 0) pending = Buffer.concat(parts.splice(0));
    if (pending.length === 0) {
      if (ended) {
        clearInterval(timer);
        res.end();
      }
      return;
    }
    res.write(pending.subarray(0, bytes));
    pending = pending.subarray(bytes);
  }, everyMs);
  res.on('close', () => clearInterval(timer));
}

export const isBlobGet = (req: IncomingMessage) =>
  req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
export const isBlobUpload = (req: IncomingMessage) =>
  (req.method === 'PUT' || req.method === 'PATCH') && /\/blobs\/uploads\//.test(req.url ?? '');
export const isManifestGet = (req: IncomingMessage) =>
  req.method === 'GET' && /\/manifests\//.test(req.url ?? '');
