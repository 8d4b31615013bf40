import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { inject } from 'vitest';
import type { HarnessInfo } from './info.js';
import { collectOutput } from './processes.js';

export const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const RSS_PRELOAD = resolve(import.meta.dirname, 'report-rss.mjs');

export function harness(): HarnessInfo {
  return inject('harness');
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Peak resident set size of the process in bytes (when measured). */
  maxRss?: number;
}

/**
 * A scratch directory per test with its own HOME (so the machine's auth.json and registries.conf are
 * never read) and a registries.conf written for the test.
 */
export async function workdir(
  name: string,
  registriesConf = '',
): Promise<{ dir: string; env: NodeJS.ProcessEnv; conf: string }> {
  const dir = await mkdtemp(join(harness().dir, `${name.replace(/[^a-z0-9]+/gi, '-')}-`));
  const home = join(dir, 'home');
  await mkdir(home);
  const conf = join(dir, 'registries.conf');
  await writeFile(conf, registriesConf);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    // auth.json's runtime location (login writes there); /run/containers/UID is never read.
    XDG_RUNTIME_DIR: join(dir, 'run'),
    CONTAINERS_REGISTRIES_CONF: conf,
    TZ: 'UTC',
  };
  return { dir, env, conf };
}

/** registries.conf lines marking registries insecure (plain HTTP, self-signed TLS). */
export function insecureConf(...hosts: string[]): string {
  return hosts.map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n');
}

/** Runs the built CLI. */
export async function stowage(
  args: string[],
  opts: { env: NodeJS.ProcessEnv; measureRss?: boolean; input?: string },
): Promise<CliResult> {
  const nodeArgs = opts.measureRss ? ['--import', RSS_PRELOAD, BIN, ...args] : [BIN, ...args];
  const child = spawn(process.execPath, nodeArgs, { env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin?.end(opts.input ?? '');
  const { code, stdout, stderr: raw } = await collectOutput(child);
  let stderr = raw;
  let maxRss: number | undefined;
  const m = /^stowage-test-max-rss: (\d+)$/m.exec(stderr);
  if (m) {
    maxRss = Number(m[1]);
    stderr = stderr.replace(m[0], '').trim();
  }
  return { code, stdout, stderr, ...(maxRss !== undefined ? { maxRss } : {}) };
}

/** Where stowage keeps the blob locations it learnt (registry/locations.ts), for a workdir's HOME. */
export function locationsDir(env: NodeJS.ProcessEnv): string {
  return join(env.HOME!, '.cache/stowage/locations');
}

/** Every shard of the learnt blob locations, as one text ('' when there are none). */
export async function learntLocations(env: NodeJS.ProcessEnv): Promise<string> {
  const dir = locationsDir(env);
  const names = await readdir(dir).catch(() => [] as string[]);
  const texts = await Promise.all(names.map((n) => readFile(join(dir, n), 'utf8')));
  return texts.join('\n');
}
