/**
 * Restoring what `docker save` / `podman save` write: a docker-archive (plain layers, no manifest)
 * pushed into a registry, against `skopeo copy docker-archive: docker://` in the same run, alternating;
 * and an oci-archive (compressed layers) pushed back, against `skopeo copy oci-archive: docker://`.
 * Each comparison runs on two fixtures: seeded random layers plus a layer of text (what the engine was
 * first tuned on), and an image of real files from this machine's Debian packages (/usr: libraries,
 * executables, documentation), which compress the way real images do.
 *
 * The first docker-archive restore of each round goes to a new repository (every layer is compressed
 * and sent); the second pushes the same archive to the same repository again (every blob is there:
 * stowage's digest cache should let it compress nothing). Prints times, core-seconds (and per GB of
 * archive) and peak RSS, and the CPU; asserts only that both tools' restores agree on the layers.
 *
 *   npm run bench    (BENCH_ROUNDS; BENCH_FIXTURES=random,debian; BENCH_MIB, BENCH_TEXT_MIB for the
 *                     random fixture, BENCH_DEBIAN_MIB for the Debian one)
 *   BENCH_NO_SHA=stowage|both npm run bench    (SHA extensions masked: see measure.ts)
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { buildBenchLayout, buildDebianLayout } from './fixture.js';
import { curlUpload, type FloorBlob, largestBlob, layoutBlobs } from './floor.js';
import {
  addSample,
  coreSecondsOf,
  cpuSetting,
  forgetLearned,
  measureOn,
  median,
  sampleLine,
  samples,
} from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const LAYERS_MIB = (process.env.BENCH_MIB ?? '300,100,50').split(',').map(Number);
/** A layer of text besides the random ones: compression has work to do (BENCH_TEXT_MIB=0: none). */
const TEXT_MIB = Number(process.env.BENCH_TEXT_MIB ?? 64);
const DEBIAN_MIB = (process.env.BENCH_DEBIAN_MIB ?? '250,130,70').split(',').map(Number);
const FIXTURES = (process.env.BENCH_FIXTURES ?? 'random,debian').split(',');
/**
 * Extra stowage restores of the docker-archive, for floor experiments: "none" sends the layers plain
 * (compression removed), a number is --compress-level N (BENCH_VARIANTS=none,6).
 */
const VARIANTS = (process.env.BENCH_VARIANTS ?? '').split(',').filter(Boolean);
const SKOPEO_CACHE = '/var/lib/containers/cache/blob-info-cache-v1.boltdb';

let dir: string;
const children: ChildProcess[] = [];
let host: string;

interface Fixture {
  name: string;
  label: string;
  dockerArchive: string;
  ociArchive: string;
  /** The oci-archive's blobs, unpacked (outside any timing) for the upload floor. */
  ociBlobs: FloorBlob[];
}
const fixtures: Fixture[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-restore-'));
  const started = await startRegistry({ mode: 'plain', dir: join(dir, 'registry') });
  children.push(started.child);
  host = started.registry.host;
  for (const name of FIXTURES) {
    const layout = join(dir, `layout-${name}`);
    let label: string;
    if (name === 'debian') {
      await buildDebianLayout(layout, DEBIAN_MIB);
      label = `Debian files from /usr (${DEBIAN_MIB.join('+')} MiB)`;
    } else {
      await buildBenchLayout(layout, LAYERS_MIB, { textMiB: TEXT_MIB });
      label = `${LAYERS_MIB.join('+')} MiB random + ${TEXT_MIB} MiB text`;
    }
    // What docker save writes: plain layers, manifest.json, no manifest of the registry's.
    const dockerArchive = join(dir, `${name}-saved.tar`);
    await run('skopeo', [
      'copy',
      '--quiet',
      `oci:${layout}:bench`,
      `docker-archive:${dockerArchive}:bench/big:v1`,
    ]);
    // What skopeo copy to oci-archive writes: gzip layers.
    const ociArchive = join(dir, `${name}-oci.tar`);
    await run('skopeo', [
      'copy',
      '--quiet',
      '--dest-compress',
      `oci:${layout}:bench`,
      `oci-archive:${ociArchive}:bench`,
    ]);
    await rm(layout, { recursive: true, force: true });
    const unpacked = join(dir, `${name}-oci`);
    await mkdir(unpacked);
    await run('tar', ['-xf', ociArchive, '-C', unpacked]);
    const blobDir = join(unpacked, 'blobs', 'sha256');
    const ociBlobs = layoutBlobs(blobDir, await readdir(blobDir));
    fixtures.push({ name, label, dockerArchive, ociArchive, ociBlobs });
  }
}, 600_000);

afterAll(async () => {
  for (const c of children) await stopProcess(c);
  await rm(dir, { recursive: true, force: true });
  await rm(SKOPEO_CACHE, { force: true });
});

/** CPU seconds used so far by the benchmark's docker-registry. */
const registryCoreSeconds = () => coreSecondsOf([children[0]!.pid!]);

const variantName = (v: string) => (v === 'none' ? 'stowage, no compression' : `stowage, gzip level ${v}`);
const NAMES = [
  'skopeo docker-archive',
  'stowage docker-archive',
  'skopeo again',
  'stowage again',
  'skopeo oci-archive',
  'stowage oci-archive',
  'floor: curl, every blob',
  'floor: curl, largest blob',
  'node -e 0 (start-up)',
  ...VARIANTS.map(variantName),
];

describe('restore benchmark', () => {
  it('stowage push vs skopeo copy of a docker-archive (first and second time) and an oci-archive', async () => {
    const home = join(dir, 'home');
    await mkdir(home, { recursive: true });
    const conf = join(dir, 'registries.conf');
    await writeFile(conf, `[[registry]]\nlocation = "${host}"\ninsecure = true\n`);
    const cpu = await cpuSetting();
    const env = { ...process.env, HOME: home, CONTAINERS_REGISTRIES_CONF: conf };
    const report: string[] = [];
    for (const f of fixtures) {
      const results = Object.fromEntries(NAMES.map((n) => [n, samples()]));
      const moved: Record<string, number> = {};
      // The registry's own CPU during each command: with the tool's, what the two cores had to do.
      const registryCpu: Record<string, number[]> = Object.fromEntries(NAMES.map((n) => [n, []]));
      const measured = async (name: string, cmd: string, args: string[], bytes: number) => {
        await run('sync', []);
        const before = await registryCoreSeconds();
        addSample(results[name]!, await measureOn(cpu, cmd, args, env));
        registryCpu[name]!.push((await registryCoreSeconds()) - before);
        moved[name] = bytes;
      };
      const stowage = (archive: string, to: string) => [BIN, 'push', '-q', archive, `${host}/${to}`];
      const skopeo = (src: string, to: string) => [
        'copy',
        '--quiet',
        '--dest-tls-verify=false',
        src,
        `docker://${host}/${to}`,
      ];
      const dockerBytes = (await stat(f.dockerArchive)).size;
      const ociBytes = (await stat(f.ociArchive)).size;
      for (let i = 0; i < ROUNDS; i++) {
        // Each round starts with neither tool's memory of earlier compressions.
        await rm(SKOPEO_CACHE, { force: true });
        await forgetLearned(env);
        const repo = (tool: string, kind: string) => `${f.name}-r${i}-${tool}-${kind}/big:v1`;
        const pair = [
          async () => {
            const src = `docker-archive:${f.dockerArchive}`;
            await measured('skopeo docker-archive', 'skopeo', skopeo(src, repo('skopeo', 'd')), dockerBytes);
            await measured('skopeo again', 'skopeo', skopeo(src, repo('skopeo', 'd')), dockerBytes);
            await rm(SKOPEO_CACHE, { force: true });
            const oci = `oci-archive:${f.ociArchive}:bench`;
            await measured('skopeo oci-archive', 'skopeo', skopeo(oci, repo('skopeo', 'o')), ociBytes);
          },
          async () => {
            const a = f.dockerArchive;
            await measured(
              'stowage docker-archive',
              process.execPath,
              stowage(a, repo('stowage', 'd')),
              dockerBytes,
            );
            await measured('stowage again', process.execPath, stowage(a, repo('stowage', 'd')), dockerBytes);
            const oci = f.ociArchive;
            await measured(
              'stowage oci-archive',
              process.execPath,
              stowage(oci, repo('stowage', 'o')),
              ociBytes,
            );
            // The floor: the registry taking the same blobs from curl; the largest alone bounds any tool.
            const [bash, all] = curlUpload(host, `${f.name}-r${i}-curl-all/big`, f.ociBlobs);
            await measured('floor: curl, every blob', bash, all, ociBytes);
            const largest = [await largestBlob(f.ociBlobs)];
            const [, one] = curlUpload(host, `${f.name}-r${i}-curl-one/big`, largest);
            await measured('floor: curl, largest blob', bash, one, 0);
            await measured('node -e 0 (start-up)', process.execPath, ['-e', '0'], 0);
            for (const v of VARIANTS) {
              const how = v === 'none' ? ['--compress', 'none'] : ['--compress-level', v];
              await forgetLearned(env);
              const args = [...stowage(a, repo('stowage', `v${v}`)), ...how];
              await measured(variantName(v), process.execPath, args, dockerBytes);
            }
          },
        ];
        for (const go of i % 2 === 0 ? pair : [...pair].reverse()) await go();
      }
      // Both restores hold the same layers, uncompressed (the compressed bytes differ: different gzips).
      const layers = async (ref: string) =>
        JSON.parse(
          (await run('skopeo', ['inspect', '--config', '--tls-verify=false', `docker://${ref}`])).stdout,
        ).rootfs.diff_ids;
      expect(await layers(`${host}/${f.name}-r0-stowage-d/big:v1`)).toEqual(
        await layers(`${host}/${f.name}-r0-skopeo-d/big:v1`),
      );
      const sizes = await Promise.all(
        [`${f.name}-r0-stowage-d`, `${f.name}-r0-skopeo-d`].map(async (r) =>
          JSON.parse(
            (await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${host}/${r}/big:v1`]))
              .stdout,
          ).layers.reduce((n: number, l: { size: number }) => n + l.size, 0),
        ),
      );
      report.push(
        `restore benchmark, ${f.label}: docker-archive ${(dockerBytes / 1e6).toFixed(0)} MB, oci-archive ${(ociBytes / 1e6).toFixed(0)} MB, ${ROUNDS} rounds; ${cpu.label}`,
      );
      for (const n of NAMES) report.push(sampleLine(n, results[n]!, 24, moved[n] ?? 0));
      const ratio = (a: string, b: string) => (median(results[b]!.t) / median(results[a]!.t)).toFixed(2);
      report.push(
        `  time of stowage / skopeo (medians): docker-archive ${ratio('skopeo docker-archive', 'stowage docker-archive')}x, ` +
          `again ${ratio('skopeo again', 'stowage again')}x, oci-archive ${ratio('skopeo oci-archive', 'stowage oci-archive')}x`,
      );
      report.push(
        `  oci-archive floor / skopeo: every blob by curl ${ratio('skopeo oci-archive', 'floor: curl, every blob')}x, ` +
          `the largest blob alone ${ratio('skopeo oci-archive', 'floor: curl, largest blob')}x ` +
          `(Node's own start-up here: ${median(results['node -e 0 (start-up)']!.t).toFixed(2)} s)`,
      );
      // No tool can finish before both cores have done its work and the registry's: a floor in seconds.
      const busy = (n: string) => median(results[n]!.cpu) + median(registryCpu[n]!);
      const cores = availableParallelism();
      const cpuFloor = (n: string) =>
        `${(busy(n) / cores).toFixed(2)} s (${(busy(n) / cores / median(results['skopeo docker-archive']!.t)).toFixed(2)}x)`;
      report.push(
        `  docker-archive, CPU floor (core-s of the tool and the registry, over ${cores} cores) and its ratio to skopeo's time: ` +
          `skopeo ${cpuFloor('skopeo docker-archive')}, stowage ${cpuFloor('stowage docker-archive')}; ` +
          `registry core-s: ${median(registryCpu['stowage docker-archive']!).toFixed(2)} under stowage, ${median(registryCpu['skopeo docker-archive']!).toFixed(2)} under skopeo`,
      );
      report.push(
        `  layers as pushed from the docker-archive: stowage ${(sizes[0] / 1e6).toFixed(1)} MB, skopeo ${(sizes[1] / 1e6).toFixed(1)} MB`,
      );
    }
    process.stdout.write(`\n${report.join('\n')}\n\n`);
  });
});
