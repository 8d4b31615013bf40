/**
 * Restore and mirror benchmark: stowage against skopeo 1.9 in the same run, alternating, into a second
 * loopback registry: an oci-archive of the large fixture pushed back (`stowage push` against
 * `skopeo copy oci-archive: docker://`), and registry to registry (`stowage copy` against
 * `skopeo copy docker:// docker://`). Every round goes to new repositories and skopeo's blob-info
 * cache and stowage's blob locations are removed first, so both really upload every byte (no HEAD hits,
 * no mounts). The registry copy's floors: the same blobs streamed by `curl | curl` (floor.ts), and its
 * CPU floor, the core-seconds of the tool and of both registries (from /proc) over the cores. Then the
 * same copy "seen before": into a new repository of the registry that holds the blobs, each tool with
 * what its earlier runs learnt (skopeo's blob-info cache, stowage's locations/), so both mount.
 * Start-up is measured apart, as a floor: `node -e 0` (Node's own start: with NODE_EXTRA_CA_CERTS set,
 * Node 20 parses those certificates before any script runs), `stowage --version` (Node's start plus the
 * bundle's) and `skopeo --version`, so a copy's ratio can be read without each tool's fixed start.
 * Prints time ratios and peak RSS; asserts only that every copy kept the manifest digest.
 *
 *   npm run bench                   # 3 layers, about 450 MB, 5 rounds
 *   BENCH_ROUNDS=9 BENCH_MIB=300,100,50 npm run bench
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { fixtureLabel, pushBenchImage } from './fixture.js';
import { curlUpload, type FloorBlob } from './floor.js';
import {
  addSample,
  coreSecondsOf,
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
const SKOPEO_CACHE = '/var/lib/containers/cache/blob-info-cache-v1.boltdb';

let dir: string;
const children: ChildProcess[] = [];
let src: string;
let dst: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-push-'));
  for (const name of ['src', 'dst']) {
    const started = await startRegistry({ mode: 'plain', dir: join(dir, name) });
    children.push(started.child);
    if (name === 'src') src = started.registry.host;
    else dst = started.registry.host;
  }
  await pushBenchImage(join(dir, 'layout'), LAYERS_MIB, `${src}/bench/big:v1`);
});

afterAll(async () => {
  for (const c of children) await stopProcess(c);
  await rm(dir, { recursive: true, force: true });
  await rm(SKOPEO_CACHE, { force: true });
});

const fmtMB = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;

/** CPU seconds both of the benchmark's registries have used so far (they share the cores with the tool). */
const registriesCoreSeconds = () => coreSecondsOf(children.map((c) => c.pid!));

describe('push benchmark', () => {
  it('stowage push/copy vs skopeo copy into a registry', async () => {
    const home = join(dir, 'home');
    await mkdir(home, { recursive: true });
    const conf = join(dir, 'registries.conf');
    await writeFile(
      conf,
      [src, dst].map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n'),
    );
    const env = { ...process.env, HOME: home, CONTAINERS_REGISTRIES_CONF: conf };
    const archive = join(dir, 'big.tar');
    await run(process.execPath, [BIN, 'pull', '-q', `${src}/bench/big:v1`, '-o', archive], { env });
    const digest = `sha256:${createHash('sha256')
      .update((await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}`])).stdout)
      .digest('hex')}`;

    const cpu = await cpuSetting();
    const results: Record<string, Samples> = {
      'skopeo restore': samples(),
      'stowage push': samples(),
      'skopeo registry copy': samples(),
      'stowage copy': samples(),
      'floor: curl | curl': samples(),
      'skopeo copy, seen before': samples(),
      'stowage copy, seen before': samples(),
      'start: node -e 0': samples(),
      'start: stowage --version': samples(),
      'start: skopeo --version': samples(),
    };
    // The registry copy's floor: each blob streamed by curl from one registry into the other.
    const manifest = JSON.parse(
      (await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${src}/bench/big:v1`]))
        .stdout,
    );
    const blobs: FloorBlob[] = [manifest.config, ...manifest.layers].map((d: { digest: string }) => ({
      digest: d.digest,
      source: `http://${src}/v2/bench/big/blobs/${d.digest}`,
    }));
    // The registry copy, as each tool is told to make it.
    const skopeoCopy = (to: string) => [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${src}/bench/big:v1`,
      `docker://${to}`,
    ];
    const stowageCopy = (to: string) => [BIN, 'copy', '-q', `docker://${src}/bench/big:v1`, `docker://${to}`];
    const written: string[] = [];
    // The registries' CPU during each measurement: with the tool's, the copy's CPU floor over the cores.
    const registryCpu: Record<string, number[]> = Object.fromEntries(
      Object.keys(results).map((n) => [n, [] as number[]]),
    );
    const measured = async (name: keyof typeof results, cmd: string, args: string[]) => {
      const before = await registriesCoreSeconds();
      addSample(results[name]!, await measureOn(cpu, cmd, args, env));
      registryCpu[name]!.push((await registriesCoreSeconds()) - before);
    };
    const record = async (
      name: keyof typeof results,
      target: string,
      cmd: string,
      args: string[],
      opts: { forget: boolean } = { forget: true },
    ) => {
      // Each tool forgets its own memory only: the seen-before rounds below start from each one's last.
      if (opts.forget && cmd === 'skopeo') await rm(SKOPEO_CACHE, { force: true });
      else if (opts.forget) await forgetLearned(env);
      await run('sync', []);
      await measured(name, cmd, args);
      written.push(target);
    };
    for (let i = 0; i < ROUNDS; i++) {
      const to = (who: string) => `${dst}/r${i}-${who}/big:v1`;
      const restore = [
        () =>
          record('skopeo restore', to('sr'), 'skopeo', [
            'copy',
            '--quiet',
            '--dest-tls-verify=false',
            `oci-archive:${archive}`,
            `docker://${to('sr')}`,
          ]),
        () => record('stowage push', to('tr'), process.execPath, [BIN, 'push', '-q', archive, to('tr')]),
      ];
      const copy = [
        () => record('skopeo registry copy', to('sc'), 'skopeo', skopeoCopy(to('sc'))),
        () => record('stowage copy', to('tc'), process.execPath, stowageCopy(to('tc'))),
      ];
      copy.push(async () => {
        await run('sync', []);
        const [bash, args] = curlUpload(dst, `r${i}-curl/big`, blobs);
        await measured('floor: curl | curl', bash, args);
      });
      // Who goes first alternates, so that neither always follows the other.
      for (const pair of [restore, copy]) {
        for (const go of i % 2 === 0 ? pair : [...pair].reverse()) await go();
      }
    }
    // Seen before: both tools keep what their last run above learnt of where dst holds the blobs.
    const kept = { forget: false };
    for (let i = 0; i < ROUNDS; i++) {
      const to = (who: string) => `${dst}/w${i}-${who}/big:v1`;
      const pair = [
        () => record('skopeo copy, seen before', to('sc'), 'skopeo', skopeoCopy(to('sc')), kept),
        () => record('stowage copy, seen before', to('tc'), process.execPath, stowageCopy(to('tc')), kept),
      ];
      for (const go of i % 2 === 0 ? pair : [...pair].reverse()) await go();
    }
    // Each tool's fixed start, measured as the copies are: what a copy pays before its first request.
    for (let i = 0; i < ROUNDS; i++) {
      const starts: [keyof typeof results, string, string[]][] = [
        ['start: node -e 0', process.execPath, ['-e', '0']],
        ['start: stowage --version', process.execPath, [BIN, '--version']],
        ['start: skopeo --version', 'skopeo', ['--version']],
      ];
      for (const [name, cmd, args] of starts) addSample(results[name]!, await measureOn(cpu, cmd, args, env));
    }
    for (const ref of written) {
      const raw = (await run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${ref}`])).stdout;
      expect(`sha256:${createHash('sha256').update(raw).digest('hex')}`, ref).toBe(digest);
    }

    const size = (await stat(archive)).size;
    const lines = [
      `push benchmark: ${fmtMB(size)} image (${fixtureLabel(LAYERS_MIB)}), ${ROUNDS} rounds; ${cpu.label}`,
    ];
    for (const [name, r] of Object.entries(results)) {
      lines.push(sampleLine(name, r, 26, name.startsWith('start:') ? 0 : size));
    }
    const ratio = (a: string, b: string, f: (x: number[]) => number) =>
      (f(results[a]!.t) / f(results[b]!.t)).toFixed(2);
    const best = (x: number[]) => Math.min(...x);
    const cores = availableParallelism();
    const cpuFloor = ([label, n]: [string, string]) => {
      const floor = (median(results[n]!.cpu) + median(registryCpu[n]!)) / cores;
      return `${label} ${floor.toFixed(2)} s (${(floor / median(results['skopeo registry copy']!.t)).toFixed(2)}x; registries ${median(registryCpu[n]!).toFixed(2)} core-s)`;
    };
    const floorOf: [string, string][] = [
      ['skopeo', 'skopeo registry copy'],
      ['stowage', 'stowage copy'],
      ['curl | curl', 'floor: curl | curl'],
    ];
    lines.push(
      `  restore speed-up over skopeo: best ${ratio('skopeo restore', 'stowage push', best)}x, median ${ratio('skopeo restore', 'stowage push', median)}x`,
      `  registry copy speed-up over skopeo: best ${ratio('skopeo registry copy', 'stowage copy', best)}x, median ${ratio('skopeo registry copy', 'stowage copy', median)}x`,
      `  registry copy floor (curl | curl, every blob at once) over skopeo: median ${ratio('skopeo registry copy', 'floor: curl | curl', median)}x`,
      `  registry copy without each tool's start (median copy - median --version) speed-up over skopeo: ${(
        (median(results['skopeo registry copy']!.t) - median(results['start: skopeo --version']!.t)) /
          (median(results['stowage copy']!.t) - median(results['start: stowage --version']!.t))
      ).toFixed(2)}x`,
      `  registry copy, CPU floor (core-s of the tool and both registries, over ${cores} cores) and its ratio to skopeo's time: ${floorOf.map(cpuFloor).join(', ')}`,
      `  copy seen before (blobs mounted) speed-up over skopeo: best ${ratio('skopeo copy, seen before', 'stowage copy, seen before', best)}x, median ${ratio('skopeo copy, seen before', 'stowage copy, seen before', median)}x`,
    );
    process.stdout.write(`\n${lines.join('\n')}\n\n`);
  });
});
