import { type Command, Option } from 'commander';
import { keyringMode } from '../auth/keyring.js';
import {
  type CredentialStore,
  loginKey,
  removeCredentials,
  storeCredentials,
  storedLogin,
} from '../auth/login.js';
import { StowageError } from '../errors.js';
import { RegistryClient } from '../registry/client.js';
import { Context } from '../registry/context.js';
import { parseBool } from './options.js';

interface LoginCliOptions {
  username?: string;
  passwordStdin?: boolean;
  password?: string;
  authfile?: string;
  store: CredentialStore;
  getLogin?: boolean;
  registriesConf?: string;
  tlsVerify?: boolean;
  certDir?: string;
}

/** Asks on the terminal (stderr), without echo for secrets. Refuses when there is no terminal. */
async function ask(question: string, hidden: boolean, what: string): Promise<string> {
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `no terminal to ask for the ${what} on; ${what === 'password' ? 'pipe it with --password-stdin' : 'give it with --username'}`,
    );
  }
  const { createInterface } = await import('node:readline');
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  let muted = false;
  const out = rl as unknown as { _writeToOutput: (s: string) => void };
  out._writeToOutput = (s: string) => {
    if (!muted) process.stderr.write(s);
  };
  try {
    return await new Promise<string>((resolve) => {
      rl.question(question, (answer) => {
        if (hidden) process.stderr.write('\n');
        resolve(answer);
      });
      muted = hidden;
    });
  } finally {
    rl.close();
  }
}

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin) parts.push(c as Buffer);
  return Buffer.concat(parts)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

function parseStore(v: string): CredentialStore {
  if (v === 'auth.json' || v === 'keyring') return v;
  throw new StowageError('INVALID_ARGUMENT', `--store "${v}": use auth.json or keyring`);
}

export function loginCommand(program: Command): void {
  program
    .command('login')
    .summary('log in to a registry: verify credentials, then store them (auth.json or the OS keyring)')
    .description(
      'Verify a user name and password against REGISTRY (HTTP basic or token auth), then store them ' +
        'where podman and skopeo read them: auth.json (--authfile, $REGISTRY_AUTH_FILE, else ' +
        '$XDG_RUNTIME_DIR/containers/auth.json), rewritten atomically with mode 0600, or the credential ' +
        'helper auth.json names for that registry; or the OS keyring with --store keyring (the Secret ' +
        'Service or the kernel keyring; STOWAGE_KEYRING=secret-service|keyutils picks one). The password ' +
        'is read from the terminal without echo, or from stdin with --password-stdin; it is never ' +
        'accepted on the command line. REGISTRY may carry a namespace (registry:5000/team) for ' +
        'credentials that apply to it only.',
    )
    .argument('<registry>', 'registry host[:port][/namespace]')
    .option('-u, --username <name>', 'user name (asked on the terminal when missing)')
    .option('--password-stdin', 'read the password from stdin')
    .option('--authfile <file>', 'auth.json to write')
    .addOption(
      new Option('--store <where>', 'where to keep the credentials: auth.json or keyring')
        .argParser(parseStore)
        .default('auth.json'),
    )
    .option('--get-login', 'print the user name stored for REGISTRY, and exit')
    .option('--registries-conf <file>', 'registries.conf to use (insecure and blocked registries)')
    .addOption(new Option('--tls-verify <bool>', 'require verified HTTPS').argParser(parseBool))
    .option('--cert-dir <dir>', 'directory with CA certificates (*.crt)')
    // podman's and docker's -p: refused, since a password on a command line is visible to every user.
    .addOption(new Option('-p, --password <password>').hideHelp())
    .action(async (registry: string, opts: LoginCliOptions) => {
      if (opts.password !== undefined) {
        throw new StowageError(
          'INVALID_ARGUMENT',
          'stowage takes no password on the command line (ps shows it to every user of the machine); pipe it instead: printf %s "$PASSWORD" | stowage login -u USER --password-stdin REGISTRY, or leave both out to be asked',
        );
      }
      const key = loginKey(registry);
      const keyring = keyringMode();
      if (opts.getLogin) {
        const user = await storedLogin(key, { authFile: opts.authfile, keyring });
        if (!user) throw new StowageError('NOT_FOUND', `not logged in to ${key}`);
        process.stdout.write(`${user}\n`);
        return;
      }
      const username = opts.username ?? (await ask('Username: ', false, 'user name'));
      if (!username) throw new StowageError('INVALID_ARGUMENT', 'the user name is empty');
      const password = opts.passwordStdin ? await readStdin() : await ask('Password: ', true, 'password');
      if (!password) throw new StowageError('INVALID_ARGUMENT', 'the password is empty');
      const credentials = { kind: 'basic' as const, username, password };
      const host = key.split('/')[0]!;
      const ctx = await Context.create({ registriesConf: opts.registriesConf, tlsVerify: opts.tlsVerify });
      const endpoint = ctx.endpoint({
        domain: host,
        path: key.slice(host.length + 1) || 'x',
        shortName: false,
      });
      const client = new RegistryClient({
        host,
        insecure: endpoint.insecure,
        credentials,
        certDir: opts.certDir,
        retry: { maxRetries: 1 },
      });
      let checked: boolean;
      try {
        checked = await client.verifyLogin();
      } finally {
        await client.close();
        await ctx.close();
      }
      const where = await storeCredentials(key, credentials, {
        authFile: opts.authfile,
        store: opts.store,
        keyring,
      });
      if (!checked)
        process.stderr.write(`note: ${host} does not ask for credentials; they were stored anyway\n`);
      process.stdout.write(`Login Succeeded! (credentials for ${key} in ${where})\n`);
    });
}

interface LogoutCliOptions {
  authfile?: string;
  all?: boolean;
}

export function logoutCommand(program: Command): void {
  program
    .command('logout')
    .summary('remove stored credentials for a registry (or --all)')
    .description(
      'Remove the credentials stored for REGISTRY: its auth.json entry (the file login writes), the ' +
        'credential helper auth.json names for it, and the OS keyring entry. --all empties the ' +
        "auth.json's entries.",
    )
    .argument('[registry]', 'registry host[:port][/namespace]')
    .option('--authfile <file>', 'auth.json to change')
    .option('-a, --all', 'remove every entry of the auth file')
    .action(async (registry: string | undefined, opts: LogoutCliOptions) => {
      if (!registry && !opts.all)
        throw new StowageError('INVALID_ARGUMENT', 'name a registry, or give --all');
      if (registry && opts.all)
        throw new StowageError('INVALID_ARGUMENT', 'give a registry or --all, not both');
      const key = registry ? loginKey(registry) : undefined;
      const removed = await removeCredentials(key, { authFile: opts.authfile, keyring: keyringMode() });
      if (removed.length === 0) {
        throw new StowageError('NOT_FOUND', key ? `not logged in to ${key}` : 'no credentials to remove');
      }
      process.stdout.write(
        `Removed login credentials${key ? ` for ${key}` : ''} from ${removed.join(', ')}\n`,
      );
    });
}
