/**
 * Registry scale (issue 32): how the cost of a sync grows with the tags of one repository (1,000 and
 * 10,000) and with the repositories of a namespace (500 x 5 tags, found by the catalog), against a
 * real docker-registry whose requests a proxy counts, with skopeo in the same run:
 *
 *   - stowage cold sync into the store, and `skopeo sync --dest dir` of the same tags;
 *   - stowage warm sync (nothing changed) into the store, and into a mirror that has every tag;
 *   - the same warm sync on the S3 + PostgreSQL store (radosgw, PostgreSQL), BENCH_SCALE_S3=0 skips it;
 *   - the first page of `stowage archives` and of GET /v1/archives over a store of 100,000 versions.
 *
 * Every scenario gets fresh registries seeded straight into their storage (test/harness/registry-seed.ts),
 * the mirror with the same images, so a warm mirror sync finds every tag current. Prints times, peak
 * RSS, core-seconds, requests per tag and the ratios the issue names; asserts only that the work was
 * complete (every tag stored, nothing fetched when warm).
 *
 *   npm run bench -- scale                               # 1000 and 10000 tags, 500 x 5
 *   BENCH_SCALE_SIZES=1000 BENCH_SCALE_REPOS=100 npm run bench -- scale
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { type RunningPostgres, startPostgres } from '../harness/postgres.js';
import { freePort, startProcess, stopProcess } from '../harness/processes.js';
import { type RunningS3, s3Bucket, startRadosgw } from '../harness/radosgw.js';
import { startRegistry } from '../harness/registry.js';
import { buildTags, type SeededRepository, seedRegistry } from '../harness/registry-seed.js';
import { indexOnlyStore } from './fixture.js';
import { cpuSetting, type Measured, measureOn } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const SIZES = (process.env.BENCH_SCALE_SIZES ?? '1000,10000').split(',').map(Number);
const REPOS = Number(process.env.BENCH_SCALE_REPOS ?? 500);
const WITH_S3 = process.env.BENCH_SCALE_S3 !== '0';
const LISTING_VERSIONS = Number(process.env.BENCH_SCALE_LISTING ?? 100_000);

let dir: string;
const children: ChildProcess[] = [];
let s3: RunningS3 | undefined;
let db: RunningPostgres | undefined;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-scale-'));
  if (WITH_S3) {
    [s3, db] = await Promise.all([startRadosgw(), startPostgres()]);
    await s3Bucket(s3, 'scale');
  }
}, 600_000);

afterAll(async () => {
  for (const c of children) await stopProcess(c);
  await Promise.all([s3?.stop(), db?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

interface Scenario {
  label: string;
  repos: SeededRepository[];
  /** The job's source and, for a mirror job, its mirror, as stowage.toml spells them. */
  source: (host: string) => string;
  mirror: (host: string) => string;
  /** skopeo sync's arguments for the same tags to a dir:. */
  skopeo: (host: string, out: string) => Promise<string[]>;
}

interface Row extends Measured {
  requests: number;
  heads: number;
}

const mib = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MB`;
const line = (name: string, r: Row, tags: number) =>
  `  ${name.padEnd(34)} ${r.seconds.toFixed(2).padStart(7)} s  peak RSS ${mib(r.maxRssBytes).padStart(6)}  core-s ${r.coreSeconds.toFixed(2).padStart(6)}  requests ${String(r.requests).padStart(6)} (${(r.requests / tags).toFixed(2)} a tag)`;

async function run(
  name: string,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  proxy: FaultProxy,
): Promise<Row> {
  const cpu = await cpuSetting();
  const mark = proxy.seen.length;
  const m = await measureOn(cpu, cmd, args, env);
  const seen = proxy.seen.slice(mark);
  process.stdout.write(`    ${name}: ${m.seconds.toFixed(2)} s\n`);
  return { ...m, requests: seen.length, heads: seen.filter((s) => s.method === 'HEAD').length };
}

async function countFiles(path: string): Promise<number> {
  return (await readdir(path, { recursive: true })).length;
}

async function scenario(s: Scenario): Promise<Record<string, Row>> {
  const base = join(dir, s.label.replace(/\W+/g, '-'));
  const [src, dst] = await Promise.all([
    startRegistry({ mode: 'plain', dir: join(base, 'src') }),
    startRegistry({ mode: 'plain', dir: join(base, 'dst') }),
  ]);
  children.push(src.child, dst.child);
  await seedRegistry(join(src.registry.root, 'data'), s.repos);
  await seedRegistry(join(dst.registry.root, 'data'), s.repos);
  const proxy = await startFaultProxy({ upstream: src.registry.url });
  const mirrorProxy = await startFaultProxy({ upstream: dst.registry.url });
  const home = join(base, 'home');
  await mkdir(home, { recursive: true });
  const conf = join(base, 'registries.conf');
  await writeFile(
    conf,
    [proxy.host, mirrorProxy.host]
      .map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`)
      .join('\n'),
  );
  const env = {
    ...process.env,
    HOME: home,
    CONTAINERS_REGISTRIES_CONF: conf,
    ...(s3 ? { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey } : {}),
  };
  const job = (extra: string) => `[[job]]\nname = "scale"\nsource = "${s.source(proxy.host)}"\n${extra}`;
  const local = join(base, 'local.toml');
  await writeFile(local, `[store]\npath = "${join(base, 'store')}"\n\n${job('')}`);
  const mirror = join(base, 'mirror.toml');
  await writeFile(
    mirror,
    `[store]\npath = "${join(base, 'store-unused')}"\n\n${job(`archive = false\nmirror = "${s.mirror(mirrorProxy.host)}"\n`)}`,
  );
  const tags = s.repos.reduce((n, r) => n + r.tags.length, 0);
  const rows: Record<string, Row> = {};
  const sync = (config: string) => [BIN, 'sync', '-q', '--config', config];
  rows['stowage cold, to the store'] = await run('stowage cold', process.execPath, sync(local), env, proxy);
  rows['stowage warm, to the store'] = await run('stowage warm', process.execPath, sync(local), env, proxy);
  rows['stowage warm, to the store (again)'] = await run(
    'stowage warm',
    process.execPath,
    sync(local),
    env,
    proxy,
  );
  rows['stowage warm, to a mirror'] = await run(
    'stowage warm mirror',
    process.execPath,
    sync(mirror),
    env,
    proxy,
  );
  rows['stowage warm, to a mirror (again)'] = await run(
    'stowage warm mirror',
    process.execPath,
    sync(mirror),
    env,
    proxy,
  );
  const out = join(base, 'skopeo-dir');
  rows['skopeo sync --dest dir, cold'] = await run(
    'skopeo cold',
    'skopeo',
    await s.skopeo(proxy.host, out),
    env,
    proxy,
  );
  expect(await countFiles(out)).toBeGreaterThan(tags);
  await rm(out, { recursive: true, force: true });
  if (s3 && db) {
    const remote = join(base, 's3.toml');
    const prefix = s.label.replace(/\W+/g, '-');
    await writeFile(
      remote,
      `[store.s3]\nendpoint = "${s3.endpoint}"\nbucket = "scale"\nprefix = "${prefix}/"\n[server]\ndatabase = "${db.url}"\n\n${job('')}`,
    );
    rows['stowage cold, to the S3 store'] = await run(
      'stowage cold s3',
      process.execPath,
      sync(remote),
      env,
      proxy,
    );
    rows['stowage warm, to the S3 store'] = await run(
      'stowage warm s3',
      process.execPath,
      sync(remote),
      env,
      proxy,
    );
    rows['stowage warm, to the S3 store (again)'] = await run(
      'stowage warm s3',
      process.execPath,
      sync(remote),
      env,
      proxy,
    );
  }
  // Complete: every tag in the store, and a warm run fetched nothing (one HEAD a tag).
  const listed = await measureOn(
    await cpuSetting(),
    process.execPath,
    [BIN, 'archives', '--json', '--config', local],
    env,
  );
  expect(JSON.parse(listed.stdout)).toHaveLength(tags);
  expect(rows['stowage warm, to the store']!.heads).toBe(tags);
  await proxy.close();
  await mirrorProxy.close();
  await stopProcess(src.child);
  await stopProcess(dst.child);
  await rm(base, { recursive: true, force: true });
  return rows;
}

function report(label: string, tags: number, rows: Record<string, Row>): string[] {
  const out = [`${label} (${tags} tags):`];
  for (const [name, r] of Object.entries(rows)) out.push(line(name, r, tags));
  const best = (a: string, b: string) =>
    Math.min(rows[a]!.seconds, rows[b]?.seconds ?? Number.POSITIVE_INFINITY);
  const warmStore = best('stowage warm, to the store', 'stowage warm, to the store (again)');
  const warmMirror = best('stowage warm, to a mirror', 'stowage warm, to a mirror (again)');
  out.push(`  warm store / warm mirror: ${(warmStore / warmMirror).toFixed(2)} (target <= 1)`);
  out.push(
    `  cold store / skopeo dir: ${(rows['stowage cold, to the store']!.seconds / rows['skopeo sync --dest dir, cold']!.seconds).toFixed(2)} (target <= 0.5)`,
  );
  if (rows['stowage warm, to the S3 store']) {
    const warmS3 = best('stowage warm, to the S3 store', 'stowage warm, to the S3 store (again)');
    out.push(`  warm S3 store / warm local store: ${(warmS3 / warmStore).toFixed(2)} (target <= 1.5)`);
  }
  return out;
}

/** A store of `n` versions (index.json written as the store writes it; listings read nothing else). */
const bigStore = (path: string, n: number) => indexOnlyStore(path, n, 500);

async function listingLines(): Promise<string[]> {
  const cpu = await cpuSetting();
  const store = join(dir, 'listing-store');
  await bigStore(store, LISTING_VERSIONS);
  const env = { ...process.env, HOME: join(dir, 'listing-home') };
  const cli = await measureOn(
    cpu,
    process.execPath,
    [BIN, 'archives', '--limit', '20', '--store', store],
    env,
  );
  expect(cli.stdout.trim().split('\n')).toHaveLength(21);
  const port = await freePort();
  const state = join(dir, 'listing-state');
  const { child } = startProcess(process.execPath, [BIN, 'serve', '--listen', `127.0.0.1:${port}`], {
    ...env,
    STOWAGE_STORE: store,
    STOWAGE_STATE: state,
  });
  children.push(child);
  const url = `http://127.0.0.1:${port}/v1/archives?limit=20`;
  for (let i = 0; i < 200; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  // The admin token the service made on its first start.
  const token = (await readFile(join(state, 'api-token'), 'utf8')).trim();
  const timed = async (u: string) => {
    const t = performance.now();
    const r = await fetch(u, { headers: { authorization: `Bearer ${token}` } });
    const body = (await r.json()) as { archives: unknown[]; next?: string };
    return { ms: performance.now() - t, status: r.status, body, link: r.headers.get('link') };
  };
  const first = await timed(url);
  const second = await timed(url);
  const deep = await timed(`${url}&after=${first.body.next}`);
  await stopProcess(child);
  expect(first.status, JSON.stringify(first.body).slice(0, 300)).toBe(200);
  expect(first.body.archives).toHaveLength(20);
  return [
    `listing a store of ${LISTING_VERSIONS} versions:`,
    `  stowage archives --limit 20 (a whole process): ${cli.seconds.toFixed(2)} s, peak RSS ${mib(cli.maxRssBytes)}`,
    `  GET /v1/archives?limit=20: first ${first.ms.toFixed(0)} ms, then ${second.ms.toFixed(0)} ms; the next page ${deep.ms.toFixed(0)} ms (Link ${first.link ? 'sent' : 'missing'})`,
  ];
}

describe('registry scale benchmark', () => {
  it('syncs 1,000 and 10,000 tags and 500 repositories, warm and cold, against skopeo', async () => {
    const cpu = await cpuSetting();
    const lines = [`scale benchmark: ${cpu.label}`];
    const results: { label: string; tags: number; rows: Record<string, Row> }[] = [];
    for (const n of SIZES) {
      const tags = buildTags(n);
      const rows = await scenario({
        label: `one repository, ${n} tags`,
        repos: [{ name: 'scale/app', tags }],
        source: (h) => `${h}/scale/app`,
        mirror: (h) => `${h}/scale/app`,
        skopeo: async (h, out) => [
          'sync',
          '--src',
          'docker',
          '--dest',
          'dir',
          '--src-tls-verify=false',
          `${h}/scale/app`,
          out,
        ],
      });
      results.push({ label: `one repository`, tags: n, rows });
    }
    if (REPOS > 0) {
      const repos = Array.from({ length: REPOS }, (_, i) => ({
        name: `ns/r${String(i).padStart(3, '0')}`,
        tags: buildTags(5),
      }));
      const rows = await scenario({
        label: `${REPOS} repositories x 5 tags`,
        repos,
        source: (h) => `${h}/ns/**`,
        mirror: (h) => `${h}/{repository}`,
        skopeo: async (h, out) => {
          // skopeo sync takes one repository a run, or a YAML list of them.
          const yaml = join(dir, 'skopeo-sync.yaml');
          await writeFile(
            yaml,
            `${h}:\n  tls-verify: false\n  images:\n${repos.map((r) => `    ${r.name}: []`).join('\n')}\n`,
          );
          return ['sync', '--src', 'yaml', '--dest', 'dir', yaml, out];
        },
      });
      results.push({ label: `${REPOS} repositories x 5 tags`, tags: REPOS * 5, rows });
    }
    for (const r of results) lines.push(...report(r.label, r.tags, r.rows));
    const single = results.filter((r) => r.label === 'one repository');
    if (single.length === 2) {
      const [a, b] = single as [(typeof single)[0], (typeof single)[0]];
      const warm = (r: typeof a) =>
        Math.min(
          r.rows['stowage warm, to the store']!.seconds,
          r.rows['stowage warm, to the store (again)']!.seconds,
        );
      lines.push(
        `growth ${a.tags} -> ${b.tags} tags: warm ${(warm(b) / warm(a)).toFixed(2)}x (target <= 11), cold ${(b.rows['stowage cold, to the store']!.seconds / a.rows['stowage cold, to the store']!.seconds).toFixed(2)}x; peak RSS warm ${mib(a.rows['stowage warm, to the store']!.maxRssBytes)} -> ${mib(b.rows['stowage warm, to the store']!.maxRssBytes)}, cold ${mib(a.rows['stowage cold, to the store']!.maxRssBytes)} -> ${mib(b.rows['stowage cold, to the store']!.maxRssBytes)} (target <= 150 MB, within 20 MB)`,
      );
    }
    if (LISTING_VERSIONS > 0) lines.push(...(await listingLines()));
    process.stdout.write(`\n${lines.join('\n')}\n\n`);
  });
});
