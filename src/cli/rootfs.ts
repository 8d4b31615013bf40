import { type Command, InvalidArgumentError, Option } from 'commander';
import { ARCHIVE_FORMATS, type ArchiveFormat } from '../archive/formats.js';
import { StowageError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import { CHANGE_INSTRUCTIONS } from '../rootfs/changes.js';
import type { FlattenResult, ImportResult, ManifestFormat } from '../rootfs/import.js';
import { formatBytes, formatDuration, plural } from './format.js';
import { addRegistryOptions, contextFrom, type RegistryCliOptions } from './options.js';
import { type ProgressMode, progressFor, progressOption } from './progress.js';
import { parseFormat } from './pull.js';
import { withSignal } from './run.js';

interface ExportCliOptions extends RegistryCliOptions {
  output: string;
  platform?: string;
  quiet?: boolean;
  json?: boolean;
  progress?: ProgressMode;
}

export function exportCommand(program: Command): void {
  const cmd = program
    .command('export')
    .summary("write an image's root filesystem as one tarball (like docker export of a fresh container)")
    .description(
      "The image's layers applied in order, as a fresh container of it sees its filesystem: whiteouts " +
        'delete, opaque directories hide lower content, hard links and symlinks are kept, owners, modes, ' +
        'times and extended attributes come from the layers. Nothing is extracted to disk. The output is ' +
        'deterministic (the same image gives the same bytes) and, when a file, appears only when complete ' +
        'with a sha256sum-compatible FILE.sha256 beside it. REF is any image reference: ' +
        'registry/repository[:tag][@digest], oci-archive:PATH[:NAME], docker-archive:PATH[:NAME], ' +
        'oci:DIR[:NAME], dir:PATH.',
    )
    .argument('<ref>', 'image to export')
    .requiredOption('-o, --output <file>', 'tarball to write ("-" for standard output)')
    .option(
      '--platform <os/arch[/variant]>',
      "platform to take from a multi-arch image (default: the host's)",
    )
    .option('-q, --quiet', 'print no progress and no summary')
    .option('--json', 'print the result as JSON')
    .addOption(progressOption());
  addRegistryOptions(cmd).action(async (ref: string, opts: ExportCliOptions) => {
    const { exportRootfs } = await import('../rootfs/export.js');
    const ctx = await contextFrom(opts);
    const progress = await progressFor(opts);
    const started = performance.now();
    try {
      const result = await withSignal((signal) =>
        exportRootfs(ctx, ref, {
          output: opts.output,
          platform: opts.platform ? parsePlatform(opts.platform) : undefined,
          signal,
          onProgress: progress?.listener,
        }),
      );
      progress?.stop();
      const elapsed = performance.now() - started;
      const report = opts.output === '-' ? process.stderr : process.stdout;
      if (opts.json) report.write(`${JSON.stringify({ ...result, seconds: elapsed / 1000 }, null, 2)}\n`);
      else if (!opts.quiet)
        report.write(
          `${result.reference} ${result.digest} [${result.platform}]: ${plural(result.layers, 'layer')}, ` +
            `${result.layerEntries} entries -> ${result.entries} in the root filesystem\n` +
            `-> ${result.path}: ${formatBytes(result.size)} in ${formatDuration(elapsed)} (sha256 ${result.sha256})\n`,
        );
    } finally {
      progress?.stop();
      await ctx.close();
    }
  });
}

interface ImageCliOptions extends RegistryCliOptions {
  change: string[];
  message?: string;
  created?: string;
  platform?: string;
  manifestFormat?: ManifestFormat;
  quiet?: boolean;
  json?: boolean;
}

interface ImportCliOptions extends ImageCliOptions {
  output?: string;
  format: ArchiveFormat;
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

function parseManifestFormat(v: string): ManifestFormat {
  if (v === 'oci' || v === 'docker') return v;
  throw new InvalidArgumentError('expected oci or docker');
}

function addImageOptions(cmd: Command): Command {
  return cmd
    .option(
      '-c, --change <instruction>',
      `Dockerfile instruction applied to the config, repeatable: ${CHANGE_INSTRUCTIONS.join(', ')} ` +
        `(e.g. --change 'CMD ["/bin/sh"]' --change 'ENV K=V')`,
      collect,
      [],
    )
    .option('-m, --message <text>', 'comment of the history entry')
    .option(
      '--created <time>',
      "creation time, RFC 3339 or seconds since the epoch (default: SOURCE_DATE_EPOCH, else 1970-01-01T00:00:00Z for import, the source image's for flatten)",
    )
    .addOption(
      new Option('--manifest-format <format>', 'manifest type: oci or docker (schema 2)').argParser(
        parseManifestFormat,
      ),
    )
    .option('-q, --quiet', 'print no summary')
    .option('--json', 'print the result as JSON');
}

/** The engine options import and flatten share, from their common command-line options. */
function imageOptions(opts: ImageCliOptions, signal: AbortSignal) {
  return {
    changes: opts.change,
    message: opts.message,
    created: opts.created,
    platform: opts.platform ? parsePlatform(opts.platform) : undefined,
    manifestFormat: opts.manifestFormat,
    signal,
  };
}

function printImage(result: ImportResult | FlattenResult, elapsed: number, opts: ImageCliOptions): void {
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ ...result, seconds: elapsed / 1000 }, null, 2)}\n`);
    return;
  }
  if (opts.quiet) return;
  const from =
    'source' in result ? `${result.source} (${plural(result.sourceLayers, 'layer')}) flattened: ` : '';
  process.stdout.write(
    `${from}${result.entries} entries, ${formatBytes(result.layer.tarBytes)} -> one ${formatBytes(result.layer.size)} layer ${result.layer.digest}\n` +
      `-> ${result.destination} ${result.digest} [${result.platform}] in ${formatDuration(elapsed)}` +
      `${result.sha256 ? ` (sha256 ${result.sha256})` : ''}\n`,
  );
}

export function importCommand(program: Command): void {
  const cmd = program
    .command('import')
    .summary(
      'turn a root filesystem tarball into a one-layer image (like docker import), to an archive or a registry',
    )
    .description(
      'ROOTFS is a tarball (plain, gzip or zstd; "-" for standard input) of a root filesystem. Its entries ' +
        'are rewritten with deterministic headers into one gzip layer: paths and hard links that climb ' +
        'out with ".." are refused, absolute paths are taken from the root, symlinks and device nodes ' +
        'are kept as entries; nothing is extracted on this machine. The same tarball, changes and ' +
        'creation time give the same digest. With -o the image goes into an archive named NAME; ' +
        'without it, NAME is a registry reference and the image is pushed there.',
    )
    .argument('<rootfs>', 'root filesystem tarball, or - for standard input')
    .argument('<name>', 'image name[:tag] (a registry reference when pushing)')
    .option('-o, --output <path>', 'write an archive (or layout) here instead of pushing')
    .option(
      '-f, --format <format>',
      `archive format with -o: ${ARCHIVE_FORMATS.join(', ')}`,
      parseFormat,
      'oci-archive',
    )
    .option('--platform <os/arch[/variant]>', "platform recorded in the config (default: the host's)");
  addRegistryOptions(addImageOptions(cmd)).action(
    async (rootfs: string, name: string, opts: ImportCliOptions) => {
      const { importRootfs } = await import('../rootfs/import.js');
      const ctx = await contextFrom(opts);
      const started = performance.now();
      try {
        const dest = opts.output ? `${opts.format}:${opts.output}` : name;
        if (opts.output?.includes(':'))
          throw new StowageError('INVALID_ARGUMENT', `-o ${opts.output}: paths with ":" are not supported`);
        const result = await withSignal((signal) =>
          importRootfs(ctx, rootfs, name, dest, imageOptions(opts, signal)),
        );
        printImage(result, performance.now() - started, opts);
      } finally {
        await ctx.close();
      }
    },
  );
}

export function flattenCommand(program: Command): void {
  const cmd = program
    .command('flatten')
    .summary(
      "squash an image's layers into one, keeping its config (export and import in one streaming step)",
    )
    .description(
      "The source's root filesystem, as `stowage export` makes it, streams straight into the single gzip " +
        "layer of a new image with the source's config (CMD, ENV, ...; --change applies on top) and one " +
        'history entry. The same source gives the same digest. SRC and DEST are references as for copy: ' +
        'registry/repository[:tag] (pushed), oci-archive:PATH[:NAME], docker-archive:PATH[:NAME], ' +
        'oci:DIR[:NAME], dir:PATH. The manifest type follows the source unless --manifest-format says.',
    )
    .argument('<src>', 'image to flatten')
    .argument('<dest>', 'where the flattened image goes')
    .option(
      '--platform <os/arch[/variant]>',
      "platform to take from a multi-arch image (default: the host's)",
    );
  addRegistryOptions(addImageOptions(cmd)).action(
    async (src: string, dest: string, opts: ImageCliOptions) => {
      const { flattenImage } = await import('../rootfs/import.js');
      const ctx = await contextFrom(opts);
      const started = performance.now();
      try {
        const result = await withSignal((signal) => flattenImage(ctx, src, dest, imageOptions(opts, signal)));
        printImage(result, performance.now() - started, opts);
      } finally {
        await ctx.close();
      }
    },
  );
}
