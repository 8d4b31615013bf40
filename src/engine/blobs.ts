/**
 * The one blob loop: every destination that takes blobs one at a time (a registry repository, the
 * store, an OCI layout) is filled by it. Blobs go a few at a time; one a sink is already receiving
 * (another image or tag of the run shares it) is waited for, not sent twice; the bytes are digest-checked
 * as they pass (unless the sink checks them itself); a transient failure retries the blob whole; the
 * first failure stops the rest and is the one reported.
 */
import { Limiter } from '../core/limiter.js';
import type { ProgressListener } from '../core/progress.js';
import { StowageError, toStowageError } from '../errors.js';
import { DigestVerifier } from '../image/digest.js';
import type { Descriptor } from '../image/schemas.js';
import type { BlobOutcome, BlobProvider, BlobSink } from './destination.js';

export interface BlobCopyOptions {
  concurrency: number;
  /** Attempts after the first for a blob that failed transiently (connection errors, 5xx, 429). */
  retries: number;
  signal?: AbortSignal | undefined;
  onProgress?: ProgressListener | undefined;
  /**
   * Read and check a blob from its source even when the sink had it (or mounted it): for archives, so
   * that a damaged or incomplete archive is an error whatever the destination holds.
   */
  verifyExisting?: boolean | undefined;
  /** Told how each blob got there (sync's report counts them). */
  onBlob?: ((d: Descriptor, outcome: BlobOutcome) => void) | undefined;
}

export interface BlobStats {
  /** Blobs whose bytes were sent. */
  uploaded: number;
  /** Blobs the destination had already (or another writer of it brought meanwhile). */
  existing: number;
  /** Blobs linked from another repository of the registry. */
  mounted: number;
  /** Bytes sent. */
  bytes: number;
}

export function emptyStats(): BlobStats {
  return { uploaded: 0, existing: 0, mounted: 0, bytes: 0 };
}

/** Blobs each sink is receiving now, by digest: the images and tags of a run share them. */
const inflight = new WeakMap<BlobSink, Map<string, Promise<BlobOutcome>>>();

/** Copies `blobs` into `sink`, each from `provider`; adds to `stats`. */
export async function copyBlobs(
  sink: BlobSink,
  blobs: Descriptor[],
  provider: BlobProvider,
  opts: BlobCopyOptions,
  stats: BlobStats = emptyStats(),
): Promise<BlobStats> {
  opts.onProgress?.({ type: 'plan', blobs: blobs.length, totalBytes: blobs.reduce((n, b) => n + b.size, 0) });
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  const limiter = new Limiter(Math.max(1, opts.concurrency));
  let failed = false;
  await Promise.all(
    blobs.map((d) =>
      limiter
        .run(async () => {
          if (failed) return;
          const outcome = await shared(sink, d, () => copyBlob(sink, d, provider, opts, signal));
          count(stats, d, outcome);
          opts.onBlob?.(d, outcome);
        })
        .catch((e) => {
          if (failed) return;
          failed = true;
          controller.abort();
          throw e;
        }),
    ),
  );
  if (opts.signal?.aborted)
    throw new StowageError('ABORTED', `copying blobs to ${sink.description} was aborted`);
  return stats;
}

function count(stats: BlobStats, d: Descriptor, outcome: BlobOutcome): void {
  if (outcome === 'written') {
    stats.uploaded++;
    stats.bytes += d.size;
  } else if (outcome === 'mounted') stats.mounted++;
  // 'shared': the run moved it for another image already, and counted it then.
  else if (outcome === 'existing') stats.existing++;
}

/**
 * Runs `fn` once per blob and sink: later callers wait for it and get 'shared'. A success is remembered
 * for the sink's life (a sync's later tags skip the blob without asking again); a failure is forgotten,
 * so the next caller tries itself.
 */
function shared(sink: BlobSink, d: Descriptor, fn: () => Promise<BlobOutcome>): Promise<BlobOutcome> {
  let map = inflight.get(sink);
  if (!map) {
    map = new Map();
    inflight.set(sink, map);
  }
  const pending = map.get(d.digest);
  if (pending) return pending.then(() => 'shared' as const);
  const p = fn();
  map.set(d.digest, p);
  p.catch(() => {
    if (map.get(d.digest) === p) map.delete(d.digest);
  });
  return p;
}

async function copyBlob(
  sink: BlobSink,
  d: Descriptor,
  provider: BlobProvider,
  opts: BlobCopyOptions,
  signal: AbortSignal,
): Promise<BlobOutcome> {
  opts.onProgress?.({ type: 'blob-start', digest: d.digest, size: d.size });
  const open = async () => {
    const body = await provider.open(d, signal);
    return sink.verifies ? body : verified(body, d, opts.onProgress);
  };
  const outcome = await withRetries(opts, `blob ${d.digest} to ${sink.description}`, () =>
    sink.put(d, open, signal),
  );
  if (outcome !== 'written' && outcome !== 'shared' && opts.verifyExisting) {
    if (!(await provider.check?.(d, signal))) {
      for await (const _ of verified(await provider.open(d, signal), d, undefined));
    }
  }
  opts.onProgress?.({ type: 'blob-done', digest: d.digest, size: d.size });
  return outcome;
}

/** The bytes of `d` as they pass, checked against its digest and size; DIGEST_MISMATCH at the end if not. */
export async function* verified(
  body: AsyncIterable<Uint8Array>,
  d: Descriptor,
  onProgress?: ProgressListener,
): AsyncGenerator<Uint8Array> {
  const verifier = new DigestVerifier(d.digest, d.size, `blob ${d.digest}`);
  let reported = 0;
  for await (const c of body) {
    verifier.update(c);
    if (onProgress && verifier.bytes - reported >= 1 << 20) {
      reported = verifier.bytes;
      onProgress({ type: 'blob-progress', digest: d.digest, bytes: verifier.bytes, size: d.size });
    }
    yield c;
  }
  verifier.finish();
}

function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  const ms = Math.min(250 * 2 ** attempt, 10_000);
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(new StowageError('ABORTED', 'aborted'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Runs `fn`, trying again after transient failures; the last failure says how many attempts it took. */
export async function withRetries<T>(
  opts: { retries: number; signal?: AbortSignal | undefined },
  what: string,
  fn: (attempt: number) => Promise<T>,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      const err = toStowageError(e);
      if (!err.retryable || attempt >= opts.retries || opts.signal?.aborted) {
        if (err.retryable && attempt > 0) {
          throw new StowageError(
            err.code,
            `${err.message} (${what}: gave up after ${attempt + 1} attempts)`,
            {
              cause: err,
            },
          );
        }
        throw err;
      }
      await backoff(attempt, opts.signal);
    }
  }
}
