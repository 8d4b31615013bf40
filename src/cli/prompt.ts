/**
 * Asking for a password on the terminal, as skopeo does for `--creds USER`: the prompt on stderr,
 * nothing echoed, Enter ends it, Ctrl-C gives up. Only on a terminal: a pipe or a CI job gets an error
 * saying how to pass the password instead.
 */
import { StowageError } from '../errors.js';

export function readPassword(prompt: string, input: NodeJS.ReadStream = process.stdin): Promise<string> {
  if (!input.isTTY) {
    return Promise.reject(
      new StowageError(
        'INVALID_ARGUMENT',
        '--creds names no password and there is no terminal to ask on: give USER:PASSWORD, or use --authfile (stowage login writes one)',
      ),
    );
  }
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let typed = '';
    input.setRawMode(true);
    input.resume();
    input.setEncoding('utf8');
    const done = (err?: Error) => {
      input.setRawMode(false);
      input.pause();
      input.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(typed);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new StowageError('ABORTED', 'interrupted at the password prompt'));
        if (ch === '\u007f' || ch === '\b') typed = typed.slice(0, -1);
        else typed += ch;
      }
    };
    input.on('data', onData);
  });
}
