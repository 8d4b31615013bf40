import { Command, CommanderError } from 'commander';
import { isStowageError, toStowageError } from '../errors.js';
import { inspectCommand } from './inspect.js';
import { pullCommand } from './pull.js';
import { tagsCommand } from './tags.js';

export const VERSION = '0.1.0';

export function buildProgram(): Command {
  const program = new Command('stowage')
    .description('Registry-to-tarball sync gateway: pull, archive and inspect container images reproducibly.')
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 internal error, 2 bad input or config, 3 registry blocked, 4 authentication\n' +
        'or access denied, 5 not found, 6 unsupported or invalid content, 7 digest mismatch, 8 network or\n' +
        'registry error, 9 file system error, 130 interrupted.',
    )
    .exitOverride();
  pullCommand(program);
  inspectCommand(program);
  tagsCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const err = toStowageError(e);
    process.stderr.write(`stowage: ${err.message}\n`);
    if (!isStowageError(e) && process.env.STOWAGE_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    return err.exitCode;
  }
}
