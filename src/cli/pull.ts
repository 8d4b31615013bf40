import type { Command } from 'commander';
import { ARCHIVE_FORMATS, type ArchiveFormat } from '../archive/formats.js';
import { StowageError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import type { PullResult } from '../transfer/pull.js';
import { formatBytes, formatDuration, plural } from './format.js';
import {
  addCompressOptions,
  addRegistryOptions,
  type CompressCliOptions,
  compressFrom,
  contextFrom,
  parsePositiveInt,
  type RegistryCliOptions,
} from './options.js';
import { type ProgressMode, progressFor, progressOption } from './progress.js';
import { withSignal } from './run.js';

interface PullCliOptions extends RegistryCliOptions, CompressCliOptions {
  checksum: boolean;
  output: string;
  format: ArchiveFormat;
  platform?: string;
  all?: boolean;
  jobs: number;
  quiet?: boolean;
  progress?: ProgressMode;
  json?: boolean;
  removeSignatures?: boolean;
  referrerType?: string;
}

/** --remove-signatures and --referrer-type, as pull, push and copy read them. */
export function referrerOption(opts: { removeSignatures?: boolean; referrerType?: string }) {
  return {
    carry: !opts.removeSignatures,
    artifactTypes: opts.referrerType
      ?.split(',')
      .map((t) => t.trim())
      .filter(Boolean),
  };
}

export function parseFormat(v: string): ArchiveFormat {
  if ((ARCHIVE_FORMATS as readonly string[]).includes(v)) return v as ArchiveFormat;
  throw new StowageError(
    'INVALID_ARGUMENT',
    `unknown format "${v}"; use one of ${ARCHIVE_FORMATS.join(', ')}`,
  );
}

export function printResult(
  result: PullResult,
  elapsed: number,
  opts: { json?: boolean; quiet?: boolean },
): void {
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ ...result, seconds: elapsed / 1000 }, null, 2)}\n`);
    return;
  }
  // Said once, even with -q: what could not go into this format.
  for (const n of result.notes ?? []) process.stderr.write(`note: ${n}\n`);
  if (opts.quiet) return;
  for (const img of result.images) {
    const platforms = img.platforms.length > 0 ? ` [${img.platforms.join(', ')}]` : '';
    const note = img.newIndex
      ? " (a new index made of the chosen platforms: its digest is not the source's)"
      : '';
    process.stdout.write(`${img.reference} ${img.digest}${platforms}${note}\n`);
  }
  if (result.dryRun) {
    process.stdout.write(
      `dry run: would write ${result.format}:${result.path}: ${plural(result.blobs, 'blob')}, ${formatBytes(result.contentBytes)}; nothing was written\n`,
    );
    return;
  }
  const size = result.size !== undefined ? formatBytes(result.size) : formatBytes(result.contentBytes);
  const checksum = result.sha256 ? ` (sha256 ${result.sha256})` : '';
  process.stdout.write(
    `-> ${result.format}:${result.path}: ${plural(result.blobs, 'blob')}, ${size} in ${formatDuration(elapsed)}${checksum}\n`,
  );
}

export function pullCommand(program: Command): void {
  const cmd = program
    .command('pull')
    .summary('pull images into a reproducible archive (oci-archive, docker-archive, oci, dir)')
    .description(
      'Pull one or more images (registry/repository[:tag][@digest]) into one archive at --output. ' +
        'Archives are byte-reproducible: the same images and names give the same bytes on any machine. ' +
        'An archive file appears at its path only when complete, with a sha256sum-compatible FILE.sha256 ' +
        'beside it; a layout directory (oci, dir) only when complete, or an existing OCI layout gains the ' +
        'new images. docker-archive holds uncompressed layers and one platform per image.',
    )
    .argument(
      '<refs...>',
      'images, e.g. registry.local:5000/team/app:1.4; several go into one archive (also oci-archive:PATH[:NAME], docker-archive:, oci:, dir:)',
    )
    .requiredOption('-o, --output <path>', 'archive file (or directory, for oci and dir) to write')
    .option(
      '-f, --format <format>',
      `archive format: ${ARCHIVE_FORMATS.join(', ')}`,
      parseFormat,
      'oci-archive',
    )
    .option(
      '--platform <os/arch[/variant],...>',
      "platform(s) to choose from a multi-arch image (default: the host's); several make a new index",
    )
    .option('--all', 'keep the whole multi-arch index, every platform, digest intact')
    .option('-j, --jobs <n>', 'blobs downloaded in parallel', parsePositiveInt, 4)
    .option(
      '--remove-signatures',
      'leave out what is attached to the images (signatures, attestations, SBOMs)',
    )
    .option(
      '--referrer-type <type,...>',
      'keep only attachments of these artifact types (and what is attached to those)',
    )
    .option('--no-checksum', 'write no FILE.sha256 beside an archive file: saves one pass over its bytes')
    .option('-q, --quiet', 'print no progress and no summary')
    .option('--json', 'print the result as JSON');
  cmd.addOption(progressOption());
  addCompressOptions(cmd, "plain layers (a docker-archive source's) are compressed in oci-archive and oci");
  addRegistryOptions(cmd).action(async (refs: string[], opts: PullCliOptions) => {
    // Engines load when their command runs: a start of the CLI initializes only what it uses.
    const { pull } = await import('../transfer/pull.js');
    const platforms = opts.platform ? opts.platform.split(',').map(parsePlatform) : undefined;
    const ctx = await contextFrom(opts);
    const progress = await progressFor(opts);
    const started = performance.now();
    try {
      const result = await withSignal((signal) =>
        pull(ctx, refs, {
          output: opts.output,
          format: opts.format,
          platforms,
          all: opts.all,
          concurrency: opts.jobs,
          signal,
          onProgress: progress?.listener,
          referrers: referrerOption(opts),
          checksum: opts.checksum,
          compress: compressFrom(opts),
        }),
      );
      progress?.stop();
      printResult(result, performance.now() - started, opts);
    } finally {
      progress?.stop();
      await ctx.close();
    }
  });
}
