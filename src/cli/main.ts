import { Command, CommanderError } from 'commander';
import { printable } from '../core/printable.js';
import { toStowageError } from '../errors.js';
import type { RegistryRequestRecord } from '../registry/http.js';
import { archivesCommand, dfCommand, storeCommand } from './archives.js';
import { bundleCommand } from './bundle.js';
import { completionCommand } from './completion.js';
import { eventsCommand } from './events.js';
import { inspectCommand } from './inspect.js';
import { loginCommand, logoutCommand } from './login.js';
import { reportWaits } from './progress.js';
import { pullCommand } from './pull.js';
import { copyCommand, pushCommand } from './push.js';
import { registriesCommand } from './registries.js';
import { exportCommand, flattenCommand, importCommand } from './rootfs.js';
import { serveCommand, tokenCommand } from './serve.js';
import { syncCommand } from './sync.js';
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
    .option('--debug', 'print each registry request on stderr, and the stack of an unexpected failure')
    .exitOverride()
    // Registry waits (retries, 429s) said on stderr as the command's -q and --progress allow; the
    // service logs its own.
    .hook('preAction', (_program, action) => {
      if (action.name() !== 'serve') reportWaits(action.opts());
    });
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
  bundleCommand(program);
  registriesCommand(program);
  loginCommand(program);
  logoutCommand(program);
  serveCommand(program, VERSION);
  eventsCommand(program);
  tokenCommand(program);
  completionCommand(program);
  program
    .command('version')
    .summary('print the version (as --version does)')
    .action(() => {
      process.stdout.write(`${VERSION}\n`);
    });
  return program;
}

/** Flags that take true or false: given bare, as skopeo allows, they mean true. */
const BOOLEAN_FLAGS = new Set(['--tls-verify', '--src-tls-verify', '--dest-tls-verify']);

/**
 * The command line as commander should read it: `--debug` anywhere (skopeo puts it before the
 * command), and a bare boolean flag as `--flag=true`, so that it never takes the next argument (an
 * image reference) for its value.
 */
export function normalizeArgv(argv: string[]): { argv: string[]; debug: boolean } {
  const out: string[] = [];
  let debug = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (i >= 2 && a === '--debug') {
      debug = true;
      continue;
    }
    if (i >= 2 && BOOLEAN_FLAGS.has(a) && !/^(true|false|1|0)$/.test(argv[i + 1] ?? ''))
      out.push(`${a}=true`);
    else out.push(a);
  }
  return { argv: out, debug };
}

export async function main(rawArgv: string[]): Promise<number> {
  let exitCode = 0;
  const program = buildProgram((code) => {
    exitCode = code;
  });
  const { argv, debug } = normalizeArgv(rawArgv);
  if (debug) {
    process.env.STOWAGE_DEBUG = '1';
    const { REGISTRY_REQUESTS_CHANNEL } = await import('../registry/http.js');
    const { subscribe } = await import('node:diagnostics_channel');
    subscribe(REGISTRY_REQUESTS_CHANNEL, (m) => {
      const r = m as RegistryRequestRecord;
      process.stderr.write(
        `debug: ${r.method} ${r.host} -> ${r.status || 'no answer'} in ${Math.round(r.seconds * 1000)} ms\n`,
      );
    });
  }
  try {
    await program.parseAsync(argv);
    return exitCode;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const err = toStowageError(e);
    // No escape sequence from a registry's answer reaches the terminal.
    process.stderr.write(`stowage: ${printable(err.message, { keepNewlines: true })}\n`);
    if (process.env.STOWAGE_DEBUG)
      process.stderr.write(`${(err.cause as Error | undefined)?.stack ?? (e as Error).stack}\n`);
    return err.exitCode;
  }
}
