/**
 * Webhooks: [[server.webhook]] checked when the service starts (its events name known types, its host
 * is one the service may reach, its secret is readable), and one delivery attempt: the CloudEvent in
 * structured or binary mode, signed with HMAC-SHA256 over the exact body, never following a redirect.
 */
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { durationMs, type ServerConfig } from '../config/stowage.js';
import { StowageError } from '../errors.js';
import { Agent } from '../registry/undici.js';
import { retryAfterMs } from '../registry/waits.js';
import { type CloudEvent, EVENT_TYPES, unknownEntries } from './event.js';

/** The header a receiver checks: "sha256=" and the hex HMAC-SHA256 of the body, keyed by the secret. */
export const SIGNATURE_HEADER = 'stowage-signature';

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_RETRY_FOR_MS = 3600_000;
/** Waits between attempts double from 1 s up to this. */
const MAX_BACKOFF_MS = 300_000;
/** What of a receiver's answer is read (and kept, for the history's error): enough for a reason. */
const MAX_ANSWER_BYTES = 4096;

export interface Webhook {
  name: string;
  url: URL;
  /** Types or prefixes; undefined: every type. */
  events?: string[] | undefined;
  secret?: Buffer | undefined;
  timeoutMs: number;
  retryForMs: number;
  mode: 'structured' | 'binary';
}

/**
 * [[server.webhook]] as the service uses them; refused at start with a message naming the webhook when
 * an `events` entry names no type, its host is outside the allow-list, or its secret cannot be read.
 */
export async function resolveWebhooks(
  server: ServerConfig,
  allowed: (host: string) => boolean,
): Promise<Webhook[]> {
  const out: Webhook[] = [];
  for (const w of server.webhook ?? []) {
    const at = `[[server.webhook]] "${w.name}"`;
    const unknown = unknownEntries(w.events ?? []);
    if (unknown.length) {
      throw new StowageError(
        'INVALID_CONFIG',
        `${at}: key "events": "${unknown[0]}" names no event type; the types are ${Object.keys(EVENT_TYPES).join(', ')} (a prefix such as "version" or "sync" takes several)`,
      );
    }
    const url = new URL(w.url);
    if (!allowed(url.host)) {
      throw new StowageError(
        'BLOCKED',
        `${at}: ${url.host} is in neither this service's allow-registries nor its webhook-hosts; add it to [server] webhook-hosts if it is trusted`,
      );
    }
    out.push({
      name: w.name,
      url,
      events: w.events,
      secret: w['secret-file'] ? await readSecret(w['secret-file'], at) : undefined,
      timeoutMs: w.timeout ? durationMs(w.timeout) : DEFAULT_TIMEOUT_MS,
      retryForMs: w['retry-for'] ? durationMs(w['retry-for']) : DEFAULT_RETRY_FOR_MS,
      mode: w.mode ?? 'structured',
    });
  }
  return out;
}

async function readSecret(file: string, at: string): Promise<Buffer> {
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new StowageError('INVALID_CONFIG', `${at}: key "secret-file": cannot read it (${e.code})`);
  });
  const first = text.split('\n')[0]!.trim();
  if (first.length < 16) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${at}: key "secret-file": its first line must hold at least 16 characters (openssl rand -hex 32 makes one)`,
    );
  }
  return Buffer.from(first, 'utf8');
}

/** The HMAC a receiver recomputes: `sha256=` + hex HMAC-SHA256(secret, body). */
export function signature(secret: Buffer, body: Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

/** What one attempt sends: the body, and the headers of the CloudEvents HTTP binding in the hook's mode. */
export function requestFor(
  hook: Pick<Webhook, 'mode' | 'secret' | 'name'>,
  event: CloudEvent,
  delivery: number,
): { body: Buffer; headers: Record<string, string> } {
  const headers: Record<string, string> = {
    'user-agent': 'stowage-webhook/1',
    'stowage-webhook': hook.name,
    'stowage-delivery': String(delivery),
  };
  let body: Buffer;
  if (hook.mode === 'binary') {
    body = Buffer.from(JSON.stringify(event.data));
    headers['content-type'] = 'application/json';
    for (const k of ['specversion', 'id', 'source', 'type', 'subject', 'time'] as const) {
      const v = event[k];
      if (v !== undefined) headers[`ce-${k}`] = v;
    }
  } else {
    body = Buffer.from(JSON.stringify(event));
    headers['content-type'] = 'application/cloudevents+json; charset=utf-8';
  }
  if (hook.secret) headers[SIGNATURE_HEADER] = signature(hook.secret, body);
  return { body, headers };
}

export interface AttemptResult {
  ok: boolean;
  /** The receiver's status code, when it answered. */
  status?: number | undefined;
  /** Why it failed, said for the history (never the secret, never a server path). */
  error?: string | undefined;
  /** A Retry-After the receiver gave with a 429 or 503. */
  retryAfterMs?: number | undefined;
}

/** Sends webhooks' deliveries: one agent, connections kept alive between deliveries. */
export class Sender {
  private readonly agent = new Agent({ keepAliveTimeout: 30_000, connections: 8 });

  async attempt(
    hook: Webhook,
    event: CloudEvent,
    delivery: number,
    signal?: AbortSignal,
  ): Promise<AttemptResult> {
    const { body, headers } = requestFor(hook, event, delivery);
    const timeout = AbortSignal.timeout(hook.timeoutMs);
    try {
      const res = await this.agent.request({
        origin: hook.url.origin,
        path: `${hook.url.pathname}${hook.url.search}`,
        method: 'POST',
        headers,
        body,
        headersTimeout: hook.timeoutMs,
        bodyTimeout: hook.timeoutMs,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      const answer = await readSome(res.body);
      const status = res.statusCode;
      if (status >= 200 && status < 300) return { ok: true, status };
      const why =
        status >= 300 && status < 400
          ? 'a redirect (webhooks are not redirected; give the final URL)'
          : answer.trim().slice(0, 200) || 'no reason given';
      const after = res.headers['retry-after'];
      return {
        ok: false,
        status,
        error: `answered ${status}: ${why}`,
        retryAfterMs: typeof after === 'string' ? retryAfterMs(after) : undefined,
      };
    } catch (e) {
      if (signal?.aborted) return { ok: false, error: 'the service stopped during the attempt' };
      if (timeout.aborted) return { ok: false, error: `no answer within ${hook.timeoutMs / 1000} s` };
      const err = e as NodeJS.ErrnoException;
      return { ok: false, error: err.code === 'ECONNREFUSED' ? 'connection refused' : err.message };
    }
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

async function readSome(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    if (n < MAX_ANSWER_BYTES) chunks.push(c);
    n += c.length;
  }
  return Buffer.concat(chunks).subarray(0, MAX_ANSWER_BYTES).toString('utf8');
}

/** The wait before attempt `attempts + 1`: 1 s doubling to 5 min, or the receiver's Retry-After (bounded the same). */
export function backoffMs(attempts: number, retryAfter?: number): number {
  const doubled = 1000 * 2 ** Math.max(0, attempts - 1);
  return Math.min(MAX_BACKOFF_MS, retryAfter ?? doubled);
}
