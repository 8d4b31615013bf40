/**
 * Pull benchmark: stowage against skopeo 1.9 on the same fixture, the same loopback registry, in the
 * same run, alternating; oci-archive and docker-archive (layers decompressed and diff_ids checked), each
 * also with --no-checksum (no FILE.sha256: one pass less). Prints time ratios, core-seconds (and per GB)
 * and peak RSS, and the CPU; asserts only that both archives are correct.
 *
 *   npm run bench                   # 3 layers, about 450 MB, 5 rounds
 *   BENCH_ROUNDS=9 BENCH_MIB=300,100,50 npm run bench
 *   BENCH_NO_SHA=stowage|both npm run bench    (SHA extensions masked: see measure.ts)
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { fixtureLabel, pushBenchImage } from './fixture.js';
import {
  addSample,
  cpuSetting,
  forgetLearned,
  measureOn,
  median,
  type Samples,
  sampleLine,
  samples,
} from './measure.js';

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
    await pushBenchImage(join(dir, `layout-${name}`), [...layers], `${host}/bench/${name}:v1`);
  }
});

afterAll(async () => {
  await stopProcess(child);
  await rm(dir, { recursive: true, force: true });
});

type Name =
  | 'skopeo'
  | 'stowage'
  | 'stowage --no-checksum'
  | 'stowage (smaller image)'
  | 'skopeo docker-archive'
  | 'stowage docker-archive'
  | 'stowage docker-archive --no-checksum'
  | 'stowage docker-archive, layers seen before';

const fmtMB = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;

describe('pull benchmark', () => {
  it('stowage pull vs skopeo copy to oci-archive', async () => {
    const home = join(dir, 'home');
    await mkdir(home, { recursive: true });
    const conf = join(dir, 'registries.conf');
    await writeFile(conf, `[[registry]]\nlocation = "${host}"\ninsecure = true\n`);
    const cpu = await cpuSetting();
    const env = { ...process.env, HOME: home, CONTAINERS_REGISTRIES_CONF: conf };
    const out = join(dir, 'out');
    await mkdir(out, { recursive: true });
    const results: Record<Name, Samples> = {
      skopeo: samples(),
      stowage: samples(),
      'stowage --no-checksum': samples(),
      'stowage (smaller image)': samples(),
      'skopeo docker-archive': samples(),
      'stowage docker-archive': samples(),
      'stowage docker-archive --no-checksum': samples(),
      'stowage docker-archive, layers seen before': samples(),
    };
    const ref = `${host}/bench/big:v1`;
    // Each measurement starts with no dirty pages left by the previous one (skopeo does not fsync its
    // output; stowage does, and would otherwise pay for flushing skopeo's writes too), and with the
    // previous outputs deleted: on these VMs, writing into memory the guest has not used before costs
    // several times the system time (450 MB: 1.3 s instead of 0.13 s once a few GB sit in the page
    // cache), so whichever tool ran after a pile of kept archives paid for it.
    const settle = async () => {
      for (const f of await readdir(out)) await rm(join(out, f), { force: true });
      await run('sync', []);
    };
    const commands = {
      skopeo: [
        'skopeo',
        [
          'copy',
          '--quiet',
          '--src-tls-verify=false',
          `docker://${ref}`,
          `oci-archive:${join(out, 'skopeo.tar')}`,
        ],
      ],
      stowage: [process.execPath, [BIN, 'pull', '-q', ref, '-o', join(out, 'stowage.tar')]],
      'stowage --no-checksum': [
        process.execPath,
        [BIN, 'pull', '-q', '--no-checksum', ref, '-o', join(out, 'stowage-n.tar')],
      ],
      'stowage (smaller image)': [
        process.execPath,
        [BIN, 'pull', '-q', `${host}/bench/smaller:v1`, '-o', join(out, 'smaller.tar')],
      ],
      'skopeo docker-archive': [
        'skopeo',
        [
          'copy',
          '--quiet',
          '--src-tls-verify=false',
          `docker://${ref}`,
          `docker-archive:${join(out, 'skopeo-d.tar')}:${ref}`,
        ],
      ],
      'stowage docker-archive': [
        process.execPath,
        [BIN, 'pull', '-q', '-f', 'docker-archive', ref, '-o', join(out, 'stowage-d.tar')],
      ],
      'stowage docker-archive --no-checksum': [
        process.execPath,
        [BIN, 'pull', '-q', '--no-checksum', '-f', 'docker-archive', ref, '-o', join(out, 'stowage-dn.tar')],
      ],
      'stowage docker-archive, layers seen before': [
        process.execPath,
        [BIN, 'pull', '-q', '-f', 'docker-archive', ref, '-o', join(out, 'stowage-ds.tar')],
      ],
    } satisfies Record<Name, [string, string[]]>;
    const record = async (name: Name) => {
      await settle();
      // Every pull starts without stowage's digest cache (which remembers the diff_ids it checked),
      // but the one measuring what that memory saves.
      if (!name.includes('seen before')) await forgetLearned(env);
      const [cmd, args] = commands[name];
      addSample(results[name]!, await measureOn(cpu, cmd, args, env));
    };
    /** Runs a command again, unmeasured, for its output. */
    const again = async (name: Name) => {
      const [cmd, args] = commands[name];
      await run(cmd, args, { env });
    };
    let size = 0;
    for (let i = 0; i < ROUNDS; i++) {
      await rm('/var/lib/containers/cache/blob-info-cache-v1.boltdb', { force: true });
      // Who goes first alternates, so that neither always follows the other.
      const pairs = [
        ['skopeo', 'stowage'],
        ['skopeo docker-archive', 'stowage docker-archive'],
      ] as const;
      for (const [theirs, ours] of pairs) {
        for (const name of i % 2 === 0 ? [theirs, ours] : [ours, theirs]) await record(name);
      }
      // Right after the docker-archive pull above, whose cache it keeps.
      await record('stowage docker-archive, layers seen before');
      await record('stowage --no-checksum');
      await record('stowage docker-archive --no-checksum');
      await record('stowage (smaller image)');
    }
    // The last outputs of each kind are checked: the same image, and ours verifies.
    await settle();
    await again('stowage');
    await again('skopeo');
    const layout = join(dir, 'check');
    await run('skopeo', ['copy', '--quiet', `oci-archive:${join(out, 'stowage.tar')}`, `oci:${layout}:x`]);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    const theirs = JSON.parse(
      (await run('skopeo', ['inspect', `oci-archive:${join(out, 'skopeo.tar')}`])).stdout,
    );
    expect(index.manifests[0].digest).toBe(theirs.Digest);
    await run('sha256sum', ['-c', 'stowage.tar.sha256'], { cwd: out });
    size = (await stat(join(out, 'stowage.tar'))).size;
    // Both docker-archives hold the same config and layers.
    await again('stowage docker-archive');
    await again('skopeo docker-archive');
    const theirsD = JSON.parse(
      (await run('skopeo', ['inspect', `docker-archive:${join(out, 'skopeo-d.tar')}`])).stdout,
    );
    const oursD = JSON.parse(
      (await run('skopeo', ['inspect', `docker-archive:${join(out, 'stowage-d.tar')}`])).stdout,
    );
    expect(oursD.Layers).toEqual(theirsD.Layers);
    await run('sha256sum', ['-c', 'stowage-d.tar.sha256'], { cwd: out });

    const lines = [
      `pull benchmark: ${fmtMB(size)} archive (${fixtureLabel(LAYERS_MIB)}), ${ROUNDS} rounds; ${cpu.label}`,
    ];
    for (const [name, r] of Object.entries(results)) {
      lines.push(sampleLine(name, r, 42, name.includes('smaller') ? 0 : size));
    }
    const ratioBest = Math.min(...results.skopeo!.t) / Math.min(...results.stowage!.t);
    const ratioMedian = median(results.skopeo!.t) / median(results.stowage!.t);
    lines.push(`  speed-up over skopeo: best ${ratioBest.toFixed(2)}x, median ${ratioMedian.toFixed(2)}x`);
    const ratioD = (f: (x: number[]) => number) =>
      f(results['skopeo docker-archive']!.t) / f(results['stowage docker-archive']!.t);
    lines.push(
      `  docker-archive speed-up over skopeo: best ${ratioD((x) => Math.min(...x)).toFixed(2)}x, median ${ratioD(median).toFixed(2)}x`,
    );
    const vs = (theirs: Name, ours: Name) => (median(results[theirs].t) / median(results[ours].t)).toFixed(2);
    lines.push(
      `  with --no-checksum, median speed-up: oci-archive ${vs('skopeo', 'stowage --no-checksum')}x, docker-archive ${vs('skopeo docker-archive', 'stowage docker-archive --no-checksum')}x`,
    );
    lines.push(
      `  throughput (stowage, median): ${(size / 1024 / 1024 / median(results.stowage!.t)).toFixed(0)} MiB/s`,
    );
    process.stdout.write(`\n${lines.join('\n')}\n\n`);
  });
});
