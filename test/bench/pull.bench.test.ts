/**
 * Pull benchmark: stowage against skopeo 1.9 on the same fixture, the same loopback registry, in the
 * same run, alternating; oci-archive and docker-archive (layers decompressed and diff_ids checked). Prints time ratios and peak RSS; asserts only that both archives are correct.
 *
 *   npm run bench                   # 3 layers, about 450 MB, 5 rounds
 *   BENCH_ROUNDS=9 BENCH_MIB=300,100,50 npm run bench
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { buildBenchLayout } from './fixture.js';
import { measure, median } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const LAYERS_MIB = (process.env.BENCH_MIB ?? '300,100,50').split(',').map(Number);
const SMALL_LAYERS_MIB = [100, 20, 8];

let dir: string;
let child: ChildProcess;
let host: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-'));
  const started = await startRegistry({ mode: 'plain', dir });
  child = started.child;
  host = started.registry.host;
  for (const [name, layers] of [
    ['big', LAYERS_MIB],
    ['smaller', SMALL_LAYERS_MIB],
  ] as const) {
    const layout = join(dir, `layout-${name}`);
    await buildBenchLayout(layout, layers);
    await run('skopeo', [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `oci:${layout}:bench`,
      `docker://${host}/bench/${name}:v1`,
    ]);
  }
});

afterAll(async () => {
  await stopProcess(child);
  await rm(dir, { recursive: true, force: true });
});

const fmtMB = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;

describe('pull benchmark', () => {
  it('stowage pull vs skopeo copy to oci-archive', async () => {
    const home = join(dir, 'home');
    await mkdir(home, { recursive: true });
    const conf = join(dir, 'registries.conf');
    await writeFile(conf, `[[registry]]\nlocation = "${host}"\ninsecure = true\n`);
    const env = { ...process.env, HOME: home, CONTAINERS_REGISTRIES_CONF: conf };
    const out = join(dir, 'out');
    await mkdir(out, { recursive: true });
    const results: Record<string, { t: number[]; rss: number[] }> = {
      skopeo: { t: [], rss: [] },
      stowage: { t: [], rss: [] },
      'stowage (smaller image)': { t: [], rss: [] },
      'skopeo docker-archive': { t: [], rss: [] },
      'stowage docker-archive': { t: [], rss: [] },
    };
    const ref = `${host}/bench/big:v1`;
    // Each measurement starts with no dirty pages left by the previous one (skopeo does not fsync its
    // output; stowage does, and would otherwise pay for flushing skopeo's writes too).
    const settle = () => run('sync', []);
    for (let i = 0; i < ROUNDS; i++) {
      for (const f of [
        'skopeo.tar',
        'stowage.tar',
        'smaller.tar',
        'skopeo-d.tar',
        'stowage-d.tar',
        'stowage-d.tar.sha256',
      ])
        await rm(join(out, f), { force: true });
      await rm('/var/lib/containers/cache/blob-info-cache-v1.boltdb', { force: true });
      const record = async (name: keyof typeof results, cmd: string, args: string[]) => {
        await settle();
        const r = await measure(cmd, args, env);
        results[name]!.t.push(r.seconds);
        results[name]!.rss.push(r.maxRssBytes);
      };
      await record('skopeo', 'skopeo', [
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        `docker://${ref}`,
        `oci-archive:${join(out, 'skopeo.tar')}`,
      ]);
      await record('stowage', process.execPath, [BIN, 'pull', '-q', ref, '-o', join(out, 'stowage.tar')]);
      await record('stowage (smaller image)', process.execPath, [
        BIN,
        'pull',
        '-q',
        `${host}/bench/smaller:v1`,
        '-o',
        join(out, 'smaller.tar'),
      ]);
      await record('skopeo docker-archive', 'skopeo', [
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        `docker://${ref}`,
        `docker-archive:${join(out, 'skopeo-d.tar')}:${ref}`,
      ]);
      await record('stowage docker-archive', process.execPath, [
        BIN,
        'pull',
        '-q',
        '-f',
        'docker-archive',
        ref,
        '-o',
        join(out, 'stowage-d.tar'),
      ]);
    }
    // Both docker-archives hold the same config and layers.
    const theirsD = JSON.parse(
      (await run('skopeo', ['inspect', `docker-archive:${join(out, 'skopeo-d.tar')}`])).stdout,
    );
    const oursD = JSON.parse(
      (await run('skopeo', ['inspect', `docker-archive:${join(out, 'stowage-d.tar')}`])).stdout,
    );
    expect(oursD.Layers).toEqual(theirsD.Layers);
    // Both archives hold the same image, and ours verifies.
    const layout = join(out, 'check');
    await run('skopeo', ['copy', '--quiet', `oci-archive:${join(out, 'stowage.tar')}`, `oci:${layout}:x`]);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    const theirs = JSON.parse(
      (await run('skopeo', ['inspect', `oci-archive:${join(out, 'skopeo.tar')}`])).stdout,
    );
    expect(index.manifests[0].digest).toBe(theirs.Digest);
    await run('sha256sum', ['-c', 'stowage.tar.sha256'], { cwd: out });

    const size = (await stat(join(out, 'stowage.tar'))).size;
    const lines = [
      `pull benchmark: ${fmtMB(size)} archive (layers ${LAYERS_MIB.join('+')} MiB), ${ROUNDS} rounds`,
    ];
    for (const [name, r] of Object.entries(results)) {
      lines.push(
        `  ${name.padEnd(24)} best ${Math.min(...r.t).toFixed(2)} s  median ${median(r.t).toFixed(2)} s  peak RSS ${fmtMB(Math.max(...r.rss))}`,
      );
    }
    const ratioBest = Math.min(...results.skopeo!.t) / Math.min(...results.stowage!.t);
    const ratioMedian = median(results.skopeo!.t) / median(results.stowage!.t);
    lines.push(`  speed-up over skopeo: best ${ratioBest.toFixed(2)}x, median ${ratioMedian.toFixed(2)}x`);
    const ratioD = (f: (x: number[]) => number) =>
      f(results['skopeo docker-archive']!.t) / f(results['stowage docker-archive']!.t);
    lines.push(
      `  docker-archive speed-up over skopeo: best ${ratioD((x) => Math.min(...x)).toFixed(2)}x, median ${ratioD(median).toFixed(2)}x`,
    );
    lines.push(
      `  throughput (stowage, median): ${(size / 1024 / 1024 / median(results.stowage!.t)).toFixed(0)} MiB/s`,
    );
    process.stdout.write(`\n${lines.join('\n')}\n\n`);
  });
});
