import type { Command } from 'commander';
import { parsePlatform } from '../image/platform.js';
import { pull } from '../transfer/pull.js';
import { formatBytes, formatDuration } from './format.js';
import { addRegistryOptions, contextFrom, parsePositiveInt, type RegistryCliOptions } from './options.js';
import { progressRenderer } from './progress.js';
import { withSignal } from './run.js';

interface PullCliOptions extends RegistryCliOptions {
  output: string;
  platform?: string;
  all?: boolean;
  jobs: number;
  quiet?: boolean;
  json?: boolean;
}

export function pullCommand(program: Command): void {
  const cmd = program
    .command('pull')
    .summary('pull an image from a registry into a reproducible oci-archive')
    .description(
      'Pull REF (registry/repository[:tag][@digest]) into an oci-archive at --output. The archive is ' +
        'byte-reproducible: the same image gives the same bytes on any machine. It appears at its path ' +
        'only when complete, with a sha256sum-compatible FILE.sha256 beside it.',
    )
    .argument('<ref>', 'image reference, e.g. registry.local:5000/team/app:1.4')
    .requiredOption('-o, --output <file>', 'archive file to write')
    .option(
      '--platform <os/arch[/variant]>',
      "platform to choose from a multi-arch image (default: the host's)",
    )
    .option('--all', 'keep the whole multi-arch index, every platform, digest intact')
    .option('-j, --jobs <n>', 'blobs downloaded in parallel', parsePositiveInt, 4)
    .option('-q, --quiet', 'print no progress and no summary')
    .option('--json', 'print the result as JSON');
  addRegistryOptions(cmd).action(async (ref: string, opts: PullCliOptions) => {
    const platform = opts.platform ? parsePlatform(opts.platform) : undefined;
    const ctx = await contextFrom(opts);
    const progress = opts.quiet || opts.json ? undefined : await progressRenderer(process.stderr);
    const started = performance.now();
    try {
      const result = await withSignal((signal) =>
        pull(ctx, ref, {
          output: opts.output,
          platform,
          all: opts.all,
          concurrency: opts.jobs,
          signal,
          onProgress: progress?.listener,
        }),
      );
      progress?.stop();
      const elapsed = performance.now() - started;
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ ...result, seconds: elapsed / 1000 }, null, 2)}\n`);
      } else if (!opts.quiet) {
        const platforms = result.platforms.length > 0 ? ` [${result.platforms.join(', ')}]` : '';
        process.stdout.write(
          `${result.reference} ${result.digest}${platforms} -> ${result.path}: ${result.blobs} blobs, ${formatBytes(result.size)} in ${formatDuration(elapsed)} (sha256 ${result.sha256})\n`,
        );
      }
    } finally {
      progress?.stop();
      await ctx.close();
    }
  });
}
