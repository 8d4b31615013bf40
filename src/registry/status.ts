/**
 * The one mapping from what a registry answered (or failed to) to a StowageError: connection failures
 * (TLS, refused, reset) and statuses other than the expected ones, with the registry's own error code
 * and message, cut and made printable.
 */
import type { Dispatcher } from 'undici';
import { printable } from '../core/printable.js';
import { StowageError } from '../errors.js';

interface RegistryErrorBody {
  errors?: { code?: string; message?: string }[];
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

function isTlsError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code ?? '';
  return (
    /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS|ERR_SSL|EPROTO/.test(code) ||
    /SSL|TLS|certificate/i.test((e as Error)?.message ?? '')
  );
}

export interface StatusRules {
  /** A 404 is NOT_FOUND, with this message (given the registry's error detail). */
  notFound?: ((detail: string) => string) | undefined;
  /** Statuses at which the registry refused what was sent (400 for a bad digest or manifest, ...). */
  refused?: number[] | undefined;
}

/** A failure to reach the registry at all, said so the user knows what to check. */
export function connectionFailure(e: unknown, host: string, apiHost: string): StowageError {
  if (e instanceof StowageError) return e;
  const msg = ((e as Error)?.message ?? String(e)).split('\n')[0]!;
  if (/wrong version number|packet length too long|http request/i.test(msg)) {
    return new StowageError(
      'TLS',
      `${host} does not answer with TLS (it may serve plain HTTP); if that is intended, mark it insecure (--tls-verify=false or insecure = true in registries.conf)`,
      { cause: e },
    );
  }
  if (isTlsError(e)) {
    return new StowageError(
      'TLS',
      `TLS connection to ${host} failed: ${msg}; give its CA with --cert-dir or /etc/containers/certs.d/${apiHost}/ca.crt, or, for a test registry, mark it insecure (--tls-verify=false or insecure = true in registries.conf)`,
      { cause: e },
    );
  }
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code && NETWORK_CODES.has(code)) {
    return new StowageError(
      'NETWORK',
      `cannot reach registry ${host}: ${msg} (${code}); check that it is up and reachable`,
      { cause: e, retryable: true },
    );
  }
  return new StowageError('NETWORK', `request to registry ${host} failed: ${msg}`, {
    cause: e,
    retryable: true,
  });
}

/** The registry's error code and message from an error body (": CODE message"), or "". */
export async function errorDetail(res: Dispatcher.ResponseData): Promise<string> {
  if (res.statusCode >= 200 && res.statusCode < 300) return '';
  try {
    const text = (await res.body.text()).slice(0, 4096);
    const body = JSON.parse(text) as RegistryErrorBody;
    const e = body.errors?.[0];
    // The registry's words, cut and with no control character left: they reach terminals and logs.
    if (e?.code) return printable(`: ${e.code}${e.message ? ` ${e.message}` : ''}`.slice(0, 300));
  } catch {
    // not a registry error body
  }
  return '';
}

/**
 * What an answer other than the expected one means, for any request. A 404 is NOT_FOUND where
 * `rules.notFound` says what is missing; a status in `rules.refused` means the registry refused what was
 * sent (DIGEST_MISMATCH when it says DIGEST_INVALID); 5xx and 429 are worth another attempt; anything
 * else is the registry's error, with its own error code and message.
 */
export async function answerFailure(
  res: Dispatcher.ResponseData,
  host: string,
  what: string,
  rules: StatusRules = {},
): Promise<StowageError> {
  const status = res.statusCode;
  const detail = await errorDetail(res);
  if (status === 404 && rules.notFound) return new StowageError('NOT_FOUND', rules.notFound(detail));
  if (rules.refused?.includes(status)) {
    const code = detail.includes('DIGEST_INVALID') ? 'DIGEST_MISMATCH' : 'REGISTRY';
    return new StowageError(code, `${host} refused ${what} (HTTP ${status}${detail})`);
  }
  return new StowageError('REGISTRY', `${host} answered HTTP ${status} for ${what}${detail}`, {
    retryable: status >= 500 || status === 429,
  });
}

/** Reads a body whole, refusing one over `limit` bytes (TOO_LARGE) before it is all in memory. */
export async function readLimited(
  body: AsyncIterable<Uint8Array>,
  limit: number,
  what: string,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    n += chunk.byteLength;
    if (n > limit) {
      throw new StowageError('TOO_LARGE', `${what} is larger than the ${limit}-byte limit`);
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}
