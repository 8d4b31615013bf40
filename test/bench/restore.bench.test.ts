/**
 * Restoring what `docker save` / `podman save` write: a docker-archive (plain layers, no manifest)
 * pushed into a registry, against `skopeo copy docker-archive: docker://` in the same run, alternating.
 * The first restore of each round goes to a new repository of a fresh registry state (every layer is
 * compressed and sent); the second pushes the same archive to the same repository again (every blob is
 * there: stowage's digest cache should let it compress nothing). Prints times, core-seconds (and per
 * GB of archive) and peak RSS, and the CPU; asserts only that both tools' restores agree on the layers.
 *
 *   npm run bench    (BENCH_ROUNDS, BENCH_MIB as for the other benchmarks)
 *   BENCH_NO_SHA=stowage|both npm run bench    (SHA extensions masked: see measure.ts)
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { buildBenchLayout } from './fixture.js';
import { addSample, cpuSetting, measureOn, median, sampleLine, samples } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const LAYERS_MIB = (process.env.BENCH_MIB ?? '300,100,50').split(',').map(Number);
/** A layer of text besides the random ones: compression has work to do (BENCH_TEXT_MIB=0: none). */
const TEXT_MIB = Number(process.env.BENCH_TEXT_MIB ?? 64);
const SKOPEO_CACHE = '/var/lib/containers/cache/blob-info-cache-v1.boltdb';

let dir: string;
const children: ChildProcess[] = [];
let host: string;
let archive: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-restore-'));
  const started = await startRegistry({ mode: 'plain', dir: join(dir, 'registry') });
  children.push(started.child);
  host = started.registry.host;
  const layout = join(dir, 'layout');
  await buildBenchLayout(layout, LAYERS_MIB, { textMiB: TEXT_MIB });
  // What docker save writes: plain layers, manifest.json, no manifest of the registry's.
  archive = join(dir, 'saved.tar');
  await run('skopeo', ['copy', '--quiet', `oci:${layout}:bench`, `docker-archive:${archive}:bench/big:v1`]);
});

afterAll(async () => {
  for (const c of children) await stopProcess(c);
  await rm(dir, { recursive: true, force: true });
  await rm(SKOPEO_CACHE, { force: true });
});

describe('restore benchmark', () => {
  it('stowage push vs skopeo copy of a docker-archive, first and second time', async () => {
    const home = join(dir, 'home');
    await mkdir(home, { recursive: true });
    const conf = join(dir, 'registries.conf');
    await writeFile(conf, `[[registry]]\nlocation = "${host}"\ninsecure = true\n`);
    const cpu = await cpuSetting();
    const env = { ...process.env, HOME: home, CONTAINERS_REGISTRIES_CONF: conf };
    const names = ['skopeo first', 'stowage first', 'skopeo again', 'stowage again'] as const;
    const results = Object.fromEntries(names.map((n) => [n, samples()]));
    const measured = async (name: (typeof names)[number], cmd: string, args: string[]) => {
      await run('sync', []);
      addSample(results[name]!, await measureOn(cpu, cmd, args, env));
    };
    const stowage = (to: string) => [BIN, 'push', '-q', archive, `${host}/${to}`];
    const skopeo = (to: string) => [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `docker-archive:${archive}`,
      `docker://${host}/${to}`,
    ];
    for (let i = 0; i < ROUNDS; i++) {
      // Each round starts with neither tool's memory of earlier compressions.
      await rm(SKOPEO_CACHE, { force: true });
      await rm(join(home, '.cache', 'stowage'), { recursive: true, force: true });
      const pair = [
        async () => {
          await measured('skopeo first', 'skopeo', skopeo(`r${i}-skopeo/big:v1`));
          await measured('skopeo again', 'skopeo', skopeo(`r${i}-skopeo/big:v1`));
        },
        async () => {
          await measured('stowage first', process.execPath, stowage(`r${i}-stowage/big:v1`));
          await measured('stowage again', process.execPath, stowage(`r${i}-stowage/big:v1`));
        },
      ];
      for (const go of i % 2 === 0 ? pair : [...pair].reverse()) await go();
    }
    // Both restores hold the same layers, uncompressed (the compressed bytes differ: different gzips).
    const layers = async (ref: string) =>
      JSON.parse(
        (await run('skopeo', ['inspect', '--config', '--tls-verify=false', `docker://${ref}`])).stdout,
      ).rootfs.diff_ids;
    expect(await layers(`${host}/r0-stowage/big:v1`)).toEqual(await layers(`${host}/r0-skopeo/big:v1`));
    const bytes = (await stat(archive)).size;
    const lines = [
      `restore benchmark: docker-archive of ${LAYERS_MIB.join('+')} MiB random + ${TEXT_MIB} MiB text, ${ROUNDS} rounds; ${cpu.label}`,
    ];
    for (const n of names) lines.push(sampleLine(n, results[n]!, 16, bytes));
    const ratio = (a: string, b: string) => (median(results[a]!.t) / median(results[b]!.t)).toFixed(2);
    lines.push(`  first restore speed-up over skopeo: ${ratio('skopeo first', 'stowage first')}x median`);
    lines.push(`  second restore speed-up over skopeo: ${ratio('skopeo again', 'stowage again')}x median`);
    process.stdout.write(`\n${lines.join('\n')}\n\n`);
  });
});
