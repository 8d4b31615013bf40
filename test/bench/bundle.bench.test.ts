/**
 * Air-gap bundles (issue 36), against skopeo in the same run:
 *
 *   - create: `stowage bundle create` of a stored image of real layers (BENCH_MIB random + text),
 *     and `skopeo copy oci:STORE:REF oci-archive:FILE` of the same version (the store is an OCI layout);
 *   - import: `stowage bundle import FILE` into an empty store, and `skopeo copy oci-archive:FILE:REF
 *     oci:DIR:REF`;
 *   - the delta: a second image sharing all but one layer with the first; the delta bundle's size
 *     against the bytes of its new blobs (the issue asks within 5%);
 *   - growth: a delta of 2 new versions from stores of 1,000 and 10,000 versions (BENCH_BUNDLE_SIZES),
 *     its create and import cost, and the ratio between the two sizes.
 *
 * Prints times, peak RSS, core-seconds and the ratios; asserts only that the work was complete.
 *
 *   npm run bench -- bundle     (BENCH_ROUNDS, BENCH_MIB, BENCH_NO_SHA as for the other benchmarks)
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { storeImage } from '../harness/stored-image.js';
import { buildBenchLayout, indexOnlyStore } from './fixture.js';
import { addSample, cpuSetting, measureOn, median, sampleLine, samples } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const LAYERS_MIB = (process.env.BENCH_MIB ?? '300,100,50').split(',').map(Number);
const TEXT_MIB = Number(process.env.BENCH_TEXT_MIB ?? 64);
const SIZES = (process.env.BENCH_BUNDLE_SIZES ?? '1000,10000').split(',').map(Number);

let dir: string;
const children: ChildProcess[] = [];
let host: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-bundle-'));
  const started = await startRegistry({ mode: 'plain', dir: join(dir, 'registry') });
  children.push(started.child);
  host = started.registry.host;
  const home = join(dir, 'home');
  await mkdir(home, { recursive: true });
  const conf = join(dir, 'registries.conf');
  await writeFile(conf, `[[registry]]\nlocation = "${host}"\ninsecure = true\n`);
  await writeFile(join(dir, 'stowage.toml'), `[[job]]\nname = "big"\nsource = "${host}/bench/big"\n`);
  env = {
    ...process.env,
    HOME: home,
    CONTAINERS_REGISTRIES_CONF: conf,
    STOWAGE_STORE: join(dir, 'store'),
    STOWAGE_CONFIG: join(dir, 'stowage.toml'),
  };
  const layout = join(dir, 'layout');
  await buildBenchLayout(layout, LAYERS_MIB, { textMiB: TEXT_MIB });
  await run('skopeo', [
    'copy',
    '--quiet',
    '--dest-tls-verify=false',
    `oci:${layout}:bench`,
    `docker://${host}/bench/big:v1`,
  ]);
  await run(process.execPath, [BIN, 'sync'], { env });
}, 1_800_000);

afterAll(async () => {
  for (const c of children) await stopProcess(c);
  await rm(dir, { recursive: true, force: true });
});

/** A store of `n` versions no delta reads (index entries only), then 2 real ones taken later. */
async function storeOf(path: string, n: number): Promise<void> {
  await indexOnlyStore(path, n, 100);
  const store = await Store.open(path);
  const base = Buffer.alloc(4 << 20, 1);
  for (const tag of ['new-1', 'new-2'])
    await storeImage(store, {
      repository: 'registry.test/team/fresh',
      tag,
      layers: [base, Buffer.alloc(1 << 20, tag.length + Number(tag.slice(-1)))],
      taken: '2026-11-01T00:00:00.000Z',
    });
  await store.flush?.();
}

describe('bundle benchmark', () => {
  it('create and import against skopeo oci-archive, the delta size, and cost against store size', async () => {
    const cpu = await cpuSetting();
    const names = ['skopeo create', 'stowage create', 'skopeo import', 'stowage import'] as const;
    const results = Object.fromEntries(names.map((n) => [n, samples()]));
    const measured = async (name: (typeof names)[number], cmd: string, args: string[], e = env) => {
      await run('sync', []);
      addSample(results[name]!, await measureOn(cpu, cmd, args, e));
    };
    const ref = `${host}/bench/big:v1`;
    const full = join(dir, 'full.tar');
    for (let i = 0; i < ROUNDS; i++) {
      const out = join(dir, `r${i}`);
      await mkdir(out, { recursive: true });
      const pair = [
        async () => {
          await measured('skopeo create', 'skopeo', [
            'copy',
            '--quiet',
            `oci:${join(dir, 'store')}:${ref}`,
            `oci-archive:${join(out, 'skopeo.tar')}:${ref}`,
          ]);
          await measured('skopeo import', 'skopeo', [
            'copy',
            '--quiet',
            `oci-archive:${full}:${ref}`,
            `oci:${join(out, 'skopeo-far')}:${ref}`,
          ]);
        },
        async () => {
          await measured('stowage create', process.execPath, [
            BIN,
            'bundle',
            'create',
            '-q',
            'big',
            '-o',
            i === 0 ? full : join(out, 'stowage.tar'),
          ]);
          await measured('stowage import', process.execPath, [BIN, 'bundle', 'import', '-q', full], {
            ...env,
            STOWAGE_STORE: join(out, 'stowage-far'),
          });
        },
      ];
      // The first round's stowage bundle is what both tools import: stowage goes first then.
      for (const go of i === 0 ? [...pair].reverse() : i % 2 === 0 ? pair : [...pair].reverse()) await go();
      await rm(out, { recursive: true, force: true });
    }
    const bytes = (await stat(full)).size;

    // The delta: a second image sharing every layer but its last.
    const layout2 = join(dir, 'layout2');
    await buildBenchLayout(layout2, [...LAYERS_MIB.slice(0, -1), LAYERS_MIB.at(-1)! + 1], {
      textMiB: TEXT_MIB,
    });
    await run('skopeo', [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `oci:${layout2}:bench`,
      `docker://${host}/bench/big:v2`,
    ]);
    await run(process.execPath, [BIN, 'sync'], { env });
    const delta = join(dir, 'delta.tar');
    const made = JSON.parse(
      (
        await run(process.execPath, [BIN, 'bundle', 'create', '--since', full, '-o', delta, '--json'], {
          env,
        })
      ).stdout,
    );
    expect(made.versions).toBe(1);
    const manifest = JSON.parse((await run('tar', ['-xOf', delta, 'stowage-bundle.json'])).stdout) as {
      blobs: { digest: string; size: number }[];
    };
    const newBytes = manifest.blobs.reduce((n, b) => n + b.size, 0);
    const deltaSize = (await stat(delta)).size;

    // Growth: the same 2-version delta from stores of SIZES versions.
    const growth: string[] = [];
    const perSize: number[] = [];
    for (const n of SIZES) {
      const store = join(dir, `grow-${n}`);
      await storeOf(store, n);
      const e = { ...env, STOWAGE_STORE: store };
      const create = samples();
      const imp = samples();
      for (let i = 0; i < ROUNDS; i++) {
        const file = join(dir, `grow-${n}-${i}.tar`);
        addSample(
          create,
          await measureOn(
            cpu,
            process.execPath,
            [BIN, 'bundle', 'create', '-q', '--since', '2026-06-01', '-o', file],
            e,
          ),
        );
        // Into a far store that holds the same N versions already (what a site that imported them has).
        const far = join(dir, `grow-${n}-far-${i}`);
        await storeOf(far, n);
        await rm(join(far, 'index.json'));
        await writeFile(join(far, 'index.json'), await readFile(join(store, 'index.json')));
        addSample(
          imp,
          await measureOn(cpu, process.execPath, [BIN, 'bundle', 'import', '-q', file], {
            ...env,
            STOWAGE_STORE: far,
          }),
        );
        await rm(far, { recursive: true, force: true });
      }
      perSize.push(median(create.t));
      growth.push(
        sampleLine(`create, ${n} versions`, create, 26, 0),
        sampleLine(`import, ${n} versions`, imp, 26, 0),
      );
    }

    const ratio = (a: string, b: string) => (median(results[a]!.t) / median(results[b]!.t)).toFixed(2);
    const lines = [
      `bundle benchmark: ${LAYERS_MIB.join('+')} MiB random + ${TEXT_MIB} MiB text (${(bytes / 2 ** 20).toFixed(0)} MiB bundle), ${ROUNDS} rounds; ${cpu.label}`,
      ...names.map((n) => sampleLine(n, results[n]!, 15, bytes)),
      `  create speed-up over skopeo oci-archive: ${ratio('skopeo create', 'stowage create')}x median`,
      `  import speed-up over skopeo from oci-archive: ${ratio('skopeo import', 'stowage import')}x median`,
      `  delta of one new version: ${deltaSize} bytes for ${newBytes} bytes of new blobs (${((deltaSize / newBytes - 1) * 100).toFixed(2)}% over)`,
      ...growth,
      `  create cost ${SIZES.at(-1)} vs ${SIZES[0]} versions: ${(perSize.at(-1)! / perSize[0]!).toFixed(2)}x`,
    ];
    process.stdout.write(`\n${lines.join('\n')}\n\n`);
  });
});
