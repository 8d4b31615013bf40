/**
 * Export benchmark: `stowage export` of an OCI layout against `umoci unpack --rootless` followed by
 * `tar -cf` of the unpacked root filesystem (the way to get a rootfs tarball with the peers), in the
 * same run, alternating. Two images: a few large layers (BENCH_MIB, as in the other benchmarks) and
 * many small files over three layers with whiteouts. Prints time ratios and peak RSS; asserts only
 * that both produced the same file list.
 *
 *   npm run bench                   # 300+100+50 MiB, 3 x 3000 files, 5 rounds
 *   BENCH_ROUNDS=9 BENCH_MIB=300,100,50 npm run bench
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, type LayerEntry, Layout } from '../harness/fixtures.js';
import { run } from '../harness/processes.js';
import { buildBenchLayout } from './fixture.js';
import { measure, median } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const LAYERS_MIB = (process.env.BENCH_MIB ?? '300,100,50').split(',').map(Number);
const FILES = 3000;

let dir: string;

/** Three layers of FILES small files each; the upper ones delete and replace some of the lower. */
async function buildManyFiles(layoutDir: string): Promise<void> {
  const layout = new Layout(layoutDir);
  await layout.init();
  const layer = (n: number): LayerEntry[] => {
    const out: LayerEntry[] = [{ type: 'directory', name: `d${n}` }];
    for (let i = 0; i < FILES; i++) {
      const dirName = `d${n}/sub${i % 30}`;
      if (i < 30) out.push({ type: 'directory', name: dirName });
      out.push({
        type: 'file',
        name: `${dirName}/f${i}`,
        content: { seed: `many-${n}-${i}`, size: 1024 + (i % 7) * 1000 },
      });
    }
    if (n > 0)
      for (let i = 0; i < 100; i++)
        out.push({ type: 'file', name: `d${n - 1}/sub${i % 30}/.wh.f${i}`, content: Buffer.alloc(0) });
    return out;
  };
  const image = await buildImage(layout, { architecture: 'amd64', layers: [layer(0), layer(1), layer(2)] });
  await writeFile(
    join(layoutDir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...image.manifest,
          annotations: { 'org.opencontainers.image.ref.name': 'bench' },
        },
      ],
    }),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-rootfs-'));
  await buildBenchLayout(join(dir, 'big'), LAYERS_MIB);
  await buildManyFiles(join(dir, 'many'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const fmtMB = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;

async function listing(tarball: string): Promise<string[]> {
  const { stdout } = await run('tar', ['-tf', tarball]);
  return stdout
    .split('\n')
    .map((l) => l.replace(/^\.\//, '').replace(/\/$/, ''))
    .filter((l) => l !== '' && l !== '.')
    .sort();
}

describe('export benchmark', () => {
  it('stowage export vs umoci unpack + tar', async () => {
    const lines: string[] = [];
    for (const image of ['big', 'many']) {
      const layout = join(dir, image);
      const results = {
        umoci: { t: [] as number[], rss: [] as number[] },
        stowage: { t: [] as number[], rss: [] as number[] },
      };
      for (let round = 0; round < ROUNDS; round++) {
        const bundle = join(dir, `bundle-${round}`);
        const theirs = join(dir, `umoci-${round}.tar`);
        const ours = join(dir, `stowage-${round}.tar`);
        const u = await measure('sh', [
          '-c',
          `umoci unpack --rootless --image "${layout}:bench" "${bundle}" >/dev/null && tar -C "${bundle}/rootfs" -cf "${theirs}" .`,
        ]);
        results.umoci.t.push(u.seconds);
        results.umoci.rss.push(u.maxRssBytes);
        const s = await measure(process.execPath, [BIN, 'export', '-q', `oci:${layout}:bench`, '-o', ours]);
        results.stowage.t.push(s.seconds);
        results.stowage.rss.push(s.maxRssBytes);
        if (round === 0) expect(await listing(ours)).toEqual(await listing(theirs));
        await rm(bundle, { recursive: true, force: true });
        await rm(theirs, { force: true });
        await rm(ours, { force: true });
        await rm(`${ours}.sha256`, { force: true });
      }
      const u = median(results.umoci.t);
      const s = median(results.stowage.t);
      lines.push(
        `${image}: umoci unpack + tar ${u.toFixed(2)} s (peak RSS ${fmtMB(Math.max(...results.umoci.rss))}), ` +
          `stowage export ${s.toFixed(2)} s (peak RSS ${fmtMB(Math.max(...results.stowage.rss))}): ${(u / s).toFixed(2)}x`,
      );
    }
    process.stdout.write(
      `\nexport benchmark (${ROUNDS} rounds, medians; big = ${LAYERS_MIB.join('+')} MiB, many = 3 x ${FILES} files)\n${lines.join('\n')}\n`,
    );
  });
});
