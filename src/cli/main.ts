import { Command, CommanderError } from 'commander';
import { isStowageError, toStowageError } from '../errors.js';
import { inspectCommand } from './inspect.js';
import { loginCommand, logoutCommand } from './login.js';
import { pullCommand } from './pull.js';
import { copyCommand, pushCommand } from './push.js';
import { registriesCommand } from './registries.js';
import { exportCommand, flattenCommand, importCommand } from './rootfs.js';
import { serveCommand, tokenCommand } from './serve.js';
import { archivesCommand, dfCommand, storeCommand, syncCommand } from './sync.js';
import { tagsCommand } from './tags.js';
import { verifyCommand } from './verify.js';

export const VERSION = '0.1.0';

export function buildProgram(setExitCode: (code: number) => void = () => {}): Command {
  const program = new Command('stowage')
    .description(
      'Registry-to-tarball sync gateway: pull images into reproducible archives, push them back, copy, inspect and verify.',
    )
    .version(VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 internal error, 2 bad input or config, 3 registry blocked, 4 authentication\n' +
        'or access denied, 5 not found, 6 unsupported or invalid content, 7 digest mismatch, 8 network or\n' +
        'registry error, 9 file system error, 10-12 verify found a problem (see verify --help), 13 sync: some\n' +
        'jobs or tags failed, 130 interrupted.',
    )
    .exitOverride();
  pullCommand(program);
  pushCommand(program);
  copyCommand(program);
  inspectCommand(program);
  tagsCommand(program);
  verifyCommand(program, setExitCode);
  exportCommand(program);
  importCommand(program);
  flattenCommand(program);
  syncCommand(program, setExitCode);
  archivesCommand(program);
  dfCommand(program);
  storeCommand(program);
  registriesCommand(program);
  loginCommand(program);
  logoutCommand(program);
  serveCommand(program, VERSION);
  tokenCommand(program);
  program
    .command('version')
    .summary('print the version (as --version does)')
    .action(() => {
      process.stdout.write(`${VERSION}\n`);
    });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = buildProgram((code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const err = toStowageError(e);
    process.stderr.write(`stowage: ${err.message}\n`);
    if (!isStowageError(e) && process.env.STOWAGE_DEBUG) process.stderr.write(`${(e as Error).stack}\n`);
    return err.exitCode;
  }
}
