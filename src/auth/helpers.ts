/**
 * Credential helpers by the docker-credential-helpers protocol: `docker-credential-NAME get|store|erase`
 * with the server on stdin (or a JSON record, for store) and JSON on stdout. Every call has a timeout;
 * a helper's output never reaches a message (it may hold the secret).
 */
import { spawn } from 'node:child_process';
import { StowageError } from '../errors.js';
import type { Credentials } from './authfile.js';

const TIMEOUT_MS = 15_000;
/** What helpers print on stdout/stderr when they have nothing for a server. */
const NOT_FOUND = /credentials not found|not found in native keychain|no credentials/i;

interface HelperResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runHelper(name: string, action: 'get' | 'store' | 'erase', input: string): Promise<HelperResult> {
  const program = `docker-credential-${name}`;
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    return Promise.reject(
      new StowageError('INVALID_CONFIG', `credential helper name "${name}" is not a plain program name`),
    );
  }
  return new Promise((resolve, reject) => {
    const child = spawn(program, [action], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new StowageError(
          'INVALID_CONFIG',
          `credential helper ${program} ${action} did not answer within ${TIMEOUT_MS / 1000} s; check that it works on its own`,
        ),
      );
    }, TIMEOUT_MS);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new StowageError(
          'INVALID_CONFIG',
          e.code === 'ENOENT'
            ? `credential helper ${program} is not installed (not on PATH); install it or remove it from the configuration`
            : `credential helper ${program} could not be started: ${e.message}`,
        ),
      );
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        code,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/** The first line of a helper's complaint, cut short: enough to act on, too little to hold a secret. */
function complaint(r: HelperResult): string {
  const line = (r.stderr || r.stdout).trim().split('\n')[0] ?? '';
  return line.length > 120 ? `${line.slice(0, 120)}...` : line || `exit code ${r.code}`;
}

/** Credentials a helper holds for `server`, or undefined when it has none. */
export async function helperGet(name: string, server: string): Promise<Credentials | undefined> {
  const r = await runHelper(name, 'get', server);
  if (r.code !== 0) {
    if (NOT_FOUND.test(r.stdout) || NOT_FOUND.test(r.stderr)) return undefined;
    throw new StowageError(
      'INVALID_CONFIG',
      `credential helper docker-credential-${name} failed to get credentials for ${server}: ${complaint(r)}`,
    );
  }
  let body: { Username?: unknown; Secret?: unknown };
  try {
    body = JSON.parse(r.stdout) as typeof body;
  } catch {
    throw new StowageError(
      'INVALID_CONFIG',
      `credential helper docker-credential-${name} answered for ${server} with something that is not JSON`,
    );
  }
  if (typeof body.Secret !== 'string' || body.Secret === '') return undefined;
  const username = typeof body.Username === 'string' ? body.Username : '';
  // "<token>" as the user name marks an identity (refresh) token, as docker stores them.
  if (username === '<token>') return { kind: 'identityToken', token: body.Secret };
  return { kind: 'basic', username, password: body.Secret };
}

export async function helperStore(
  name: string,
  server: string,
  username: string,
  secret: string,
): Promise<void> {
  const r = await runHelper(
    name,
    'store',
    JSON.stringify({ ServerURL: server, Username: username, Secret: secret }),
  );
  if (r.code !== 0) {
    throw new StowageError(
      'INVALID_CONFIG',
      `credential helper docker-credential-${name} could not store credentials for ${server}: ${complaint(r)}`,
    );
  }
}

/** Erases a helper's credentials for `server`; false when it had none. */
export async function helperErase(name: string, server: string): Promise<boolean> {
  const r = await runHelper(name, 'erase', server);
  if (r.code === 0) return true;
  if (NOT_FOUND.test(r.stdout) || NOT_FOUND.test(r.stderr)) return false;
  throw new StowageError(
    'INVALID_CONFIG',
    `credential helper docker-credential-${name} could not erase credentials for ${server}: ${complaint(r)}`,
  );
}
