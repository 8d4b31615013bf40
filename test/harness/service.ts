/**
 * Starts `stowage serve` as a real process on a free loopback port, with its own store, state,
 * stowage.toml (tokens by scope) and registries.conf, and talks to it over HTTP.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, workdir } from './cli.js';
import { freePort } from './processes.js';

/**
 * The sha256 of a token, as the README says stowage.toml holds it: computed here independently of
 * stowage's own tokenHash, so a change there that broke the documented form would fail the tests.
 */
const sha256Hex = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

export const TOKENS = {
  admin: 'stw_test-admin-token-0123456789',
  reader: 'stw_test-reader-token-0123456789',
  puller: 'stw_test-puller-token-0123456789',
  pusher: 'stw_test-pusher-token-0123456789',
} as const;

const SCOPES: Record<keyof typeof TOKENS, string[]> = {
  admin: ['admin'],
  reader: ['read'],
  puller: ['read', 'pull'],
  pusher: ['read', 'push'],
};

export interface ServiceDir {
  dir: string;
  env: NodeJS.ProcessEnv;
  config: string;
  store: string;
  state: string;
  /** The Node that runs serve (default: the test runner's; see node.ts for replicas). */
  node?: string | undefined;
}

export interface RunningService {
  url: string;
  child: ChildProcess;
  /** Everything it printed (JSON log lines on stdout, messages on stderr). */
  output: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** A work directory with stowage.toml (tokens, store, extra TOML) and registries.conf. */
export async function serviceDir(name: string, registriesConf: string, extraToml = ''): Promise<ServiceDir> {
  const w = await workdir(name, registriesConf);
  const store = join(w.dir, 'store');
  const state = join(w.dir, 'state');
  const config = join(w.dir, 'stowage.toml');
  const tokens = Object.entries(TOKENS)
    .map(
      ([n, t]) =>
        `[[server.token]]\nname = "${n}"\nsha256 = "${sha256Hex(t)}"\nscopes = [${SCOPES[n as keyof typeof TOKENS].map((s) => `"${s}"`).join(', ')}]\n`,
    )
    .join('\n');
  await writeFile(
    config,
    `[store]\npath = "${store}"\n\n[server]\nstate = "${state}"\n${extraToml}\n${tokens}`,
  );
  return { dir: w.dir, env: w.env, config, store, state };
}

export async function startService(d: ServiceDir, extraArgs: string[] = []): Promise<RunningService> {
  const port = await freePort();
  const child = spawn(
    d.node ?? process.execPath,
    [BIN, 'serve', '--config', d.config, '--listen', `127.0.0.1:${port}`, ...extraArgs],
    { env: d.env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  const keep = (b: Buffer) => {
    out += b.toString();
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`stowage serve exited ${child.exitCode}:\n${out}`);
    const ok = await fetch(`${url}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 300) throw new Error(`stowage serve did not become ready:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    child,
    output: () => out,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** fetch with a token of the given role. */
export function api(
  s: { url: string },
  role: keyof typeof TOKENS | undefined,
  path: string,
  init: RequestInit & { json?: unknown } = {},
): Promise<Response> {
  const headers = new Headers(init.headers);
  if (role) headers.set('authorization', `Bearer ${TOKENS[role]}`);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(init.json);
  }
  return fetch(`${s.url}${path}`, {
    ...init,
    headers,
    body,
    ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
  });
}

export interface SseEvent {
  id: string;
  event: string;
  data: unknown;
}

/** Reads a job's event stream to its end. */
export async function followEvents(
  s: { url: string },
  jobId: string,
  role: keyof typeof TOKENS = 'reader',
): Promise<SseEvent[]> {
  const res = await api(s, role, `/v1/jobs/${jobId}/events`);
  if (res.status !== 200) throw new Error(`events: HTTP ${res.status} ${await res.text()}`);
  expectType(res.headers.get('content-type'), 'text/event-stream');
  const text = await res.text();
  const events: SseEvent[] = [];
  for (const block of text.split('\n\n')) {
    const lines = block.split('\n').filter((l) => l && !l.startsWith(':'));
    if (!lines.length) continue;
    const field = (k: string) =>
      lines
        .filter((l) => l.startsWith(`${k}:`))
        .map((l) => l.slice(k.length + 1).replace(/^ /, ''))
        .join('\n');
    events.push({ id: field('id'), event: field('event'), data: JSON.parse(field('data')) });
  }
  return events;
}

function expectType(got: string | null, want: string): void {
  if (!got?.startsWith(want)) throw new Error(`content-type ${got}, expected ${want}`);
}

/** Polls a job until it ends. */
export async function waitJob(s: { url: string }, id: string): Promise<Record<string, unknown>> {
  for (let i = 0; i < 1200; i++) {
    const job = (await (await api(s, 'reader', `/v1/jobs/${id}`)).json()) as Record<string, unknown>;
    if (['succeeded', 'failed', 'canceled'].includes(job.state as string)) return job;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`job ${id} did not end`);
}
