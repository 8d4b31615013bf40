/**
 * Sync benchmark: 20 tags sharing a base layer, stowage sync against skopeo sync (1.9) in the same run,
 * alternating: registry to registry cold (new destination repositories each round, skopeo's blob cache
 * removed) and warm (the same destinations again), and to disk cold, with the bytes each stores.
 * Prints ratios, peak RSS, the manifest GETs of warm runs (counted by a proxy in front of the source) and
 * Node's own start-up time here; asserts only that the results are complete. Warm runs are repeated
 * BENCH_SYNC_WARM_REPEATS times a round (default 5).
 *
 *   npm run bench                        # 20 tags, 48 MiB base + 256 KiB each, 3 rounds
 *   BENCH_ROUNDS=5 BENCH_SYNC_BASE_MIB=100 npm run bench
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { buildTaggedRepo, pushTags, type TaggedRepo } from '../harness/tagged-repo.js';
import { measure, median } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const BASE_MIB = Number(process.env.BENCH_SYNC_BASE_MIB ?? 48);
const WARM_REPEATS = Number(process.env.BENCH_SYNC_WARM_REPEATS ?? 5);
const SKOPEO_CACHE = '/var/lib/containers/cache/blob-info-cache-v1.boltdb';

let dir: string;
const children: ChildProcess[] = [];
let src: string;
let dst: string;
let proxy: FaultProxy;
let repo: TaggedRepo;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-sync-'));
  for (const name of ['src', 'dst']) {
    const started = await startRegistry({ mode: 'plain', dir: join(dir, name) });
    children.push(started.child);
    if (name === 'src') src = started.registry.url;
    else dst = started.registry.host;
  }
  proxy = await startFaultProxy({ upstream: src });
  repo = await buildTaggedRepo(join(dir, 'layout'), {
    count: 20,
    baseKiB: BASE_MIB * 1024,
    ownKiB: 256,
    seed: 'bench',
  });
  await pushTags(repo.layout, repo.tags, `${proxy.host}/bench/app`);
}, 600_000);

afterAll(async () => {
  await proxy.close();
  for (const c of children) await stopProcess(c);
  await rm(dir, { recursive: true, force: true });
  await rm(SKOPEO_CACHE, { force: true });
});

const fmtMB = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;

async function du(path: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(path, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += (await stat(join(e.parentPath, e.name))).size;
  }
  return n;
}

describe('sync benchmark', () => {
  it('stowage sync vs skopeo sync, 20 tags', async () => {
    const home = join(dir, 'home');
    await mkdir(home, { recursive: true });
    const conf = join(dir, 'registries.conf');
    await writeFile(
      conf,
      [proxy.host, dst].map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n'),
    );
    const env = { ...process.env, HOME: home, CONTAINERS_REGISTRIES_CONF: conf };
    const source = `${proxy.host}/bench/app`;
    const results: Record<string, { t: number[]; rss: number[]; cpu: number[] }> = {};
    const record = async (name: string, cmd: string, args: string[], clearCache: boolean) => {
      // Cold means no cache for either: skopeo's blob-info cache, and stowage's mirror blob cache (the
      // blobs of earlier rounds, which a cold run would otherwise read instead of the source).
      if (clearCache) {
        await rm(SKOPEO_CACHE, { force: true });
        await rm(join(home, '.cache', 'stowage', 'blobs'), { recursive: true, force: true });
      }
      await run('sync', []);
      const r = await measure(cmd, args, env);
      results[name] ??= { t: [], rss: [], cpu: [] };
      results[name]!.t.push(r.seconds);
      results[name]!.rss.push(r.maxRssBytes);
      results[name]!.cpu.push(r.coreSeconds);
    };
    const stowageConfig = async (name: string, body: string) => {
      const path = join(dir, `${name}.toml`);
      await writeFile(
        path,
        `[store]\npath = "${join(dir, `store-${name}`)}"\n\n[[job]]\nname = "app"\nsource = "${source}"\n${body}`,
      );
      return path;
    };
    let warmManifestGets = 0;
    let bytesStowage = 0;
    let bytesSkopeo = 0;
    for (let i = 0; i < ROUNDS; i++) {
      const sk = [
        'sync',
        '--src',
        'docker',
        '--dest',
        'docker',
        '--src-tls-verify=false',
        '--dest-tls-verify=false',
      ];
      const mirror = await stowageConfig(`mirror-${i}`, `archive = false\nmirror = "${dst}/st-${i}/app"\n`);
      await record('skopeo registry cold', 'skopeo', [...sk, source, `${dst}/sk-${i}`], true);
      await record('stowage registry cold', process.execPath, [BIN, 'sync', '-q', '--config', mirror], true);
      // A warm run is short (a quarter of a second), so each round takes several, in alternating order.
      for (let j = 0; j < WARM_REPEATS; j++) {
        const warm = [
          () => record('skopeo registry warm', 'skopeo', [...sk, source, `${dst}/sk-${i}`], false),
          async () => {
            const mark = proxy.seen.length;
            await record(
              'stowage registry warm',
              process.execPath,
              [BIN, 'sync', '-q', '--config', mirror],
              false,
            );
            warmManifestGets += proxy.seen
              .slice(mark)
              .filter((s) => s.method === 'GET' && /\/manifests\//.test(s.path)).length;
          },
        ];
        for (const run of j % 2 === 0 ? warm : warm.reverse()) await run();
      }

      const skDir = join(dir, `skopeo-dir-${i}`);
      await record(
        'skopeo to disk cold',
        'skopeo',
        ['sync', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', source, skDir],
        true,
      );
      const store = await stowageConfig(`store-${i}`, '');
      await record('stowage to disk cold', process.execPath, [BIN, 'sync', '-q', '--config', store], true);
      bytesSkopeo = await du(skDir);
      bytesStowage = await du(join(dir, `store-store-${i}`));
      await rm(skDir, { recursive: true, force: true });
      await rm(join(dir, `store-store-${i}`), { recursive: true, force: true });
    }
    const tags = (await run('skopeo', ['list-tags', '--tls-verify=false', `docker://${dst}/st-0/app`]))
      .stdout;
    expect(JSON.parse(tags).Tags).toHaveLength(20);
    const unique = [...repo.blobs.values()].reduce((a, b) => a + b, 0);
    const lines = [
      `sync benchmark: 20 tags, ${BASE_MIB} MiB shared base + 256 KiB each, unique blobs ${fmtMB(unique)}, ${ROUNDS} rounds`,
    ];
    for (const [name, r] of Object.entries(results)) {
      lines.push(
        `  ${name.padEnd(24)} best ${Math.min(...r.t).toFixed(2)} s  median ${median(r.t).toFixed(2)} s  peak RSS ${fmtMB(Math.max(...r.rss))}  core-s ${median(r.cpu).toFixed(2)}`,
      );
    }
    const ratio = (what: string) =>
      `${(median(results[`skopeo ${what}`]!.t) / median(results[`stowage ${what}`]!.t)).toFixed(2)}x median, ${(Math.min(...results[`skopeo ${what}`]!.t) / Math.min(...results[`stowage ${what}`]!.t)).toFixed(2)}x best`;
    lines.push(`  registry cold: ${ratio('registry cold')}`);
    lines.push(
      `  registry warm: ${ratio('registry warm')}; stowage manifest GETs when warm: ${warmManifestGets}`,
    );
    lines.push(`  to disk cold: ${ratio('to disk cold')}`);
    // Node's own start, which every stowage run pays before any code of ours: NODE_EXTRA_CA_CERTS, when
    // set, makes Node parse that CA bundle at each start.
    const bare: number[] = [];
    for (let j = 0; j < 5; j++) bare.push((await measure(process.execPath, ['-e', '0'], env)).seconds);
    lines.push(
      `  node start-up alone: ${median(bare).toFixed(3)} s median (NODE_EXTRA_CA_CERTS ${process.env.NODE_EXTRA_CA_CERTS ? 'set' : 'not set'})`,
    );
    lines.push(
      `  bytes on disk: stowage ${fmtMB(bytesStowage)} (${(bytesStowage / unique).toFixed(2)}x unique), skopeo dir ${fmtMB(bytesSkopeo)} (${(bytesSkopeo / unique).toFixed(2)}x)`,
    );
    process.stdout.write(`\n${lines.join('\n')}\n\n`);
  });
});
