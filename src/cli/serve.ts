import { type Command, Option } from 'commander';
import { newToken, tokenHash } from '../api/auth.js';
import { API_SCOPES, type ApiScope, DEFAULT_LISTEN } from '../config/stowage.js';
import { StowageError } from '../errors.js';
import { parseBool } from './options.js';

interface ServeCliOptions {
  config?: string;
  store?: string;
  state?: string;
  listen?: string;
  registriesConf?: string;
  authfile?: string;
  tlsVerify?: boolean;
  certDir?: string;
  logLevel?: string;
}

export function serveCommand(program: Command, version: string): void {
  program
    .command('serve')
    .summary(
      'run the gateway: the HTTP API for pulls, pushes, syncs and downloads, and the store as a registry',
    )
    .description(
      `Runs the HTTP service on ${DEFAULT_LISTEN} (loopback only unless --listen or [server] listen says otherwise). ` +
        'Every endpoint but /healthz and /readyz needs an API token (Authorization: Bearer TOKEN) with the scope it ' +
        'asks for: read, pull, push, sync or admin. Tokens come from stowage.toml [[server.token]] (stowage token makes ' +
        'one); with none configured, an admin token is made on first start and kept in STATE/api-token (mode 0600). ' +
        'Sync jobs with a schedule run by it. The OpenAPI document is GET /openapi.json. SIGTERM or SIGINT stops ' +
        'taking requests, aborts running jobs (they leave nothing partial) and exits.\n\n' +
        'The store is also served as a read-only registry at /v2/: podman pull GATEWAY/127.0.0.1_5000/team/app:1.4 ' +
        "(a host's port spelled HOST_PORT; an older version as TAG--ID), after podman login with any user name and an " +
        'API token with the read scope as the password ([server.registry] anonymous-pull = true opens it to anyone).\n\n' +
        'With [store.s3] and [server] database in stowage.toml, any number of replicas share the store (blobs in ' +
        'the bucket) and the jobs, history and schedules (PostgreSQL, through pg-boss: Node 22.12 or newer): a ' +
        "schedule fires once across them, and a stopped or dead replica's running jobs are finished by another. " +
        '$STOWAGE_REPLICA names the replica (default HOST-PID).',
    )
    .option(
      '--config <file>',
      'stowage.toml (default: $STOWAGE_CONFIG, else ./config/stowage.toml if present)',
    )
    .option('--store <dir>', 'the archive store (overrides [store] path)')
    .option(
      '--state <dir>',
      'job history, the generated token and caches (default: $STOWAGE_STATE, else ~/.local/share/stowage/state)',
    )
    .option('--listen <host:port>', `address to listen on (default ${DEFAULT_LISTEN})`)
    .option('--registries-conf <file>', 'registries.conf to use')
    .option('--authfile <file>', 'auth.json with registry credentials')
    .addOption(
      new Option(
        '--tls-verify <bool>',
        'require HTTPS with a verified certificate for every registry',
      ).argParser(parseBool),
    )
    .option('--cert-dir <dir>', 'directory with CA certificates (*.crt) for registries')
    .addOption(
      new Option('--log-level <level>', 'log level (JSON lines on stdout)').choices([
        'debug',
        'info',
        'warn',
        'error',
      ]),
    )
    .action(async (opts: ServeCliOptions) => {
      // Loaded here, not at start-up: hono, pino and prom-client cost every other command ~0.1 s and 12 MB.
      const { startServer } = await import('../server.js');
      const server = await startServer({ ...opts, version });
      if (server.tokenFile) process.stderr.write(`stowage: API token (admin) in ${server.tokenFile}\n`);
      process.stderr.write(`stowage: listening on ${server.url}\n`);
      await new Promise<void>((resolve) => {
        const stop = () => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          void server.close().then(resolve);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
      });
    });
}

export function tokenCommand(program: Command): void {
  program
    .command('token')
    .summary('make an API token for stowage serve')
    .description(
      'Prints a new random token on stdout (give it to the client; it is shown only this once) and, on stderr, the ' +
        '[[server.token]] entry for stowage.toml, which holds only its sha256.',
    )
    .argument('<name>', 'a name for the token (shown in logs), e.g. ci')
    .option('--scopes <list>', `comma-separated: ${API_SCOPES.join(', ')}`, 'read')
    .action((name: string, opts: { scopes: string }) => {
      if (!/^[A-Za-z0-9._-]+$/.test(name)) {
        throw new StowageError(
          'INVALID_ARGUMENT',
          `token name "${name}": use letters, digits, ".", "_" and "-"`,
        );
      }
      const scopes = opts.scopes.split(',').map((s) => s.trim());
      const bad = scopes.filter((s) => !(API_SCOPES as readonly string[]).includes(s));
      if (bad.length) {
        throw new StowageError(
          'INVALID_ARGUMENT',
          `unknown scope ${bad.join(', ')}; use ${API_SCOPES.join(', ')}`,
        );
      }
      const token = newToken();
      process.stdout.write(`${token}\n`);
      process.stderr.write(
        `# add to stowage.toml:\n[[server.token]]\nname = "${name}"\nsha256 = "${tokenHash(token)}"\nscopes = [${(scopes as ApiScope[]).map((s) => `"${s}"`).join(', ')}]\n`,
      );
    });
}
