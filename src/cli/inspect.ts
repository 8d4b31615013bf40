import type { Command } from 'commander';
import { parsePlatform } from '../image/platform.js';
import { inspect } from '../transfer/inspect.js';
import { addRegistryOptions, contextFrom, type RegistryCliOptions } from './options.js';
import { withSignal } from './run.js';

interface InspectCliOptions extends RegistryCliOptions {
  raw?: boolean;
  config?: boolean;
  platform?: string;
  tags: boolean;
}

export function inspectCommand(program: Command): void {
  const cmd = program
    .command('inspect')
    .summary('show an image: digest, platform, layers, config (JSON)')
    .argument('<ref>', 'image reference')
    .option('--raw', 'print the manifest or index exactly as the registry serves it')
    .option('--config', "print the image's config blob")
    .option(
      '--platform <os/arch[/variant]>',
      "platform to show from a multi-arch image (default: the host's)",
    )
    .option('--no-tags', 'do not list the repository tags');
  addRegistryOptions(cmd).action(async (ref: string, opts: InspectCliOptions) => {
    const ctx = await contextFrom(opts);
    try {
      const r = await withSignal((signal) =>
        inspect(ctx, ref, {
          raw: opts.raw,
          config: opts.config,
          platform: opts.platform ? parsePlatform(opts.platform) : undefined,
          tags: opts.tags,
          signal,
        }),
      );
      if (r.kind === 'raw' || r.kind === 'config') process.stdout.write(r.bytes);
      else process.stdout.write(`${JSON.stringify(r.summary, null, 4)}\n`);
    } finally {
      await ctx.close();
    }
  });
}
