import type { Command } from 'commander';
import { addRegistryOptions, contextFrom, type RegistryCliOptions } from './options.js';
import { withSignal } from './run.js';

export function tagsCommand(program: Command): void {
  const cmd = program
    .command('tags')
    .summary("list a repository's tags (JSON)")
    .argument('<repository>', 'repository, e.g. registry.local:5000/team/app');
  addRegistryOptions(cmd).action(async (repo: string, opts: RegistryCliOptions) => {
    const { listTags } = await import('../transfer/inspect.js');
    const ctx = await contextFrom(opts);
    try {
      const r = await withSignal((signal) => listTags(ctx, repo, signal));
      process.stdout.write(`${JSON.stringify(r, null, 4)}\n`);
    } finally {
      await ctx.close();
    }
  });
}
