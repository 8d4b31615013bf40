/**
 * `stowage copy SRC DEST`: any source to any destination. A registry destination takes the image as a
 * push does (digests intact, mounted within one registry); an archive or layout destination is written
 * as a pull writes it, with DEST's NAME recorded exactly as given.
 */
import { StowageError } from '../errors.js';
import type { PlatformSpec } from '../image/platform.js';
import type { Context } from '../registry/context.js';
import { parseDestination } from '../transports/open.js';
import { type PullOptions, type PullResult, pull } from './pull.js';
import { copyToRegistry, type PushOptions, type PushResult } from './push.js';

export type CopyImageOptions = Pick<
  PushOptions,
  | 'all'
  | 'concurrency'
  | 'chunkSize'
  | 'signal'
  | 'onProgress'
  | 'dryRun'
  | 'onTargets'
  | 'referrers'
  | 'sign'
  | 'compress'
  | 'preserveDigests'
> & {
  /** Write DEST.sha256 beside an archive file (default true; --no-checksum). */
  checksum?: boolean | undefined;
  platform?: PlatformSpec | undefined;
  /** The name an archive records when DEST names none itself (import's --name). */
  defaultName?: string | undefined;
  /**
   * Record DEST's NAME exactly as given, as skopeo does (default); false records the tag alone as
   * ref.name, the store's views' convention.
   */
  nameAsGiven?: boolean | undefined;
  /** More names for a docker-archive destination (--additional-tag). */
  additionalTags?: string[] | undefined;
};

export type CopyOutcome = { kind: 'registry'; result: PushResult } | { kind: 'archive'; result: PullResult };

/** Copies one image from `src` (read with `srcCtx`) to `dst` (written with `dstCtx`). */
export async function copyImage(
  srcCtx: Context,
  dstCtx: Context,
  src: string,
  dst: string,
  opts: CopyImageOptions,
): Promise<CopyOutcome> {
  const d = parseDestination(dst);
  if (d.kind === 'registry') {
    return { kind: 'registry', result: await copyToRegistry(srcCtx, dstCtx, src, dst, opts) };
  }
  if (opts.sign)
    throw new StowageError(
      'INVALID_ARGUMENT',
      `signing applies to a registry destination; ${dst} is an archive`,
    );
  const recorded = d.name ?? (d.format === 'dir' ? undefined : opts.defaultName);
  const pullOpts: PullOptions = {
    output: d.path,
    format: d.format,
    name: recorded,
    nameAsGiven: opts.nameAsGiven ?? true,
    all: opts.all,
    platforms: opts.platform ? [opts.platform] : undefined,
    concurrency: opts.concurrency,
    signal: opts.signal,
    onProgress: opts.onProgress,
    dryRun: opts.dryRun,
    referrers: opts.referrers,
    checksum: opts.checksum,
    compress: opts.compress,
    preserveDigests: opts.preserveDigests,
    additionalTags: opts.additionalTags,
  };
  return { kind: 'archive', result: await pull(srcCtx, [src], pullOpts) };
}
