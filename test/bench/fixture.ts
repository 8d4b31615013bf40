import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { indexJson } from '../../src/store/index-files.js';
import { type StoredVersion, versionId } from '../../src/store/version.js';
import { buildImage, Layout } from '../harness/fixtures.js';
import { run } from '../harness/processes.js';

/**
 * Text-like bytes (words of a small vocabulary, pseudo-random order) that deflate shrinks about
 * threefold: what compresses in a real image (binaries, scripts, text) rather than seeded random bytes.
 */
export function wordsBytes(size: number): Buffer {
  const vocab = [
    'usr',
    'lib',
    'bin',
    'share',
    'python3',
    'site-packages',
    'so',
    'conf',
    'include',
    '\n',
    ' ',
    '/',
  ];
  const out = Buffer.alloc(size);
  let x = 12345;
  for (let at = 0; at < size; ) {
    x = (x * 1103515245 + 12345) >>> 0;
    at += out.write(vocab[(x >>> 16) % vocab.length] as string, at);
  }
  return out;
}

/**
 * An OCI layout with one image of len(layersMiB) gzip layers of seeded data (incompressible, like the
 * compressed files that make up much of an image), and a layer of `textMiB` of text if asked, tagged
 * "bench".
 */
export async function buildBenchLayout(
  dir: string,
  layersMiB: number[],
  opts: { textMiB?: number } = {},
): Promise<void> {
  const layout = new Layout(dir);
  await layout.init();
  const image = await buildImage(layout, {
    architecture: 'amd64',
    layers: [
      ...layersMiB.map((mib, i) => [
        {
          type: 'file' as const,
          name: `layer${i}/data.bin`,
          content: { seed: `bench-${i}-${mib}`, size: mib * 1024 * 1024 },
        },
      ]),
      ...(opts.textMiB
        ? [
            [
              {
                type: 'file' as const,
                name: 'text/words.txt',
                content: wordsBytes(opts.textMiB * 1024 * 1024),
              },
            ],
          ]
        : []),
    ],
  });
  await writeBenchIndex(dir, image.manifest);
}

/** The layout's index.json: the one image, named "bench". */
async function writeBenchIndex(dir: string, manifest: { digest: string; size: number }): Promise<void> {
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'org.opencontainers.image.ref.name': 'bench' },
        },
      ],
    }),
  );
}

/**
 * Which image the pull and push benchmarks use: BENCH_FIXTURE=random (the default: seeded random
 * layers, `layersMiB`) or debian (buildDebianLayout, gzipped by skopeo on its way to the registry).
 * Run them once with each to cover both.
 */
export const BENCH_FIXTURE = process.env.BENCH_FIXTURE === 'debian' ? 'debian' : 'random';

/** What the fixture is, for a benchmark's first line. */
export function fixtureLabel(layersMiB: number[]): string {
  return BENCH_FIXTURE === 'debian'
    ? `Debian files from /usr (${layersMiB.join('+')} MiB)`
    : `layers ${layersMiB.join('+')} MiB, random`;
}

/** Builds the bench image (BENCH_FIXTURE) at `layout` and pushes it with skopeo to `ref` (HOST/REPO:TAG). */
export async function pushBenchImage(layout: string, layersMiB: number[], ref: string): Promise<void> {
  if (BENCH_FIXTURE === 'debian') await buildDebianLayout(layout, layersMiB);
  else await buildBenchLayout(layout, layersMiB);
  await run('skopeo', [
    'copy',
    '--quiet',
    // The Debian layers are plain tar: a registry's image has them gzipped. (The random ones are already.)
    ...(BENCH_FIXTURE === 'debian' ? ['--dest-compress'] : []),
    '--dest-tls-verify=false',
    `oci:${layout}:bench`,
    `docker://${ref}`,
  ]);
}

/**
 * The Debian fixture: an image made of real files as Debian's packages installed them on this machine
 * (shared libraries, executables, documentation and data from /usr), in `layersMiB` layers, each the
 * first files of a tree in name order up to its size. Real layers compress unlike seeded random bytes
 * plus text (binaries about 2.5x, text 4x, already-compressed files not at all), and the restore
 * benchmark must see that mix. Layers are GNU tar with fixed owners and times; written as an OCI layout
 * with uncompressed layers (what docker save holds), tagged "bench".
 */
export async function buildDebianLayout(dir: string, layersMiB: number[] = [250, 130, 70]): Promise<void> {
  const trees = ['usr/lib/x86_64-linux-gnu', 'usr/bin', 'usr/share'];
  const layout = new Layout(dir);
  await layout.init();
  const layers: { digest: string; size: number }[] = [];
  for (const [i, mib] of layersMiB.entries()) {
    const list = await filesUpTo(`/${trees[i % trees.length]}`, mib * 1024 * 1024);
    const listFile = join(dir, `layer${i}.list`);
    await writeFile(listFile, list.map((p) => p.slice(1)).join('\n'));
    const tarFile = join(dir, `layer${i}.tar`);
    await run('tar', [
      '-C',
      '/',
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '--no-recursion',
      '-cf',
      tarFile,
      '-T',
      listFile,
    ]);
    const hash = createHash('sha256');
    for await (const c of createReadStream(tarFile, { highWaterMark: 1 << 20 })) hash.update(c as Buffer);
    const digest = `sha256:${hash.digest('hex')}`;
    const { size } = await stat(tarFile);
    await rename(tarFile, layout.blobPath(digest));
    layers.push({ digest, size });
    await rm(listFile);
  }
  const config = await layout.putJson({
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    history: layers.map(() => ({ created_by: 'debian files' })),
  });
  const m = await layout.putJson({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...l })),
  });
  await writeBenchIndex(dir, m);
}

/**
 * Regular files and symlinks under `root`, in name order, until their sizes reach `limit`. A file with
 * several names (Mesa's drivers are hard links of one) counts once: tar stores it once.
 */
async function filesUpTo(root: string, limit: number): Promise<string[]> {
  const out: string[] = [];
  const inodes = new Set<string>();
  let total = 0;
  const walk = async (d: string): Promise<boolean> => {
    out.push(d);
    const entries = (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        if (await walk(p)) return true;
      } else if (e.isFile() || e.isSymbolicLink()) {
        const s = await lstat(p).catch(() => undefined);
        if (!s) continue;
        out.push(p);
        const inode = `${s.dev}:${s.ino}`;
        if (e.isFile() && !inodes.has(inode)) total += s.size;
        inodes.add(inode);
        if (total >= limit) return true;
      }
    }
    return false;
  };
  await walk(root);
  return out;
}

/**
 * A store of `n` versions spread over `repositories` repositories, as index entries only (index.json
 * written as the store writes it; no blobs): what listings, deltas and scale checks read.
 */
export async function indexOnlyStore(path: string, n: number, repositories: number): Promise<void> {
  await mkdir(join(path, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(path, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const versions: StoredVersion[] = [];
  for (let i = 0; i < n; i++) {
    const repository = `registry.test/team/app${String(i % repositories).padStart(3, '0')}`;
    const tag = `build-${String(Math.floor(i / repositories)).padStart(5, '0')}`;
    const digest = `sha256:${i.toString(16).padStart(64, '0')}`;
    versions.push({
      id: versionId(repository, tag, digest),
      repository,
      tag,
      descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: 500 },
      source: `${repository}:${tag}`,
      taken: new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString(),
      platforms: ['linux/amd64'],
    });
  }
  await writeFile(join(path, 'index.json'), indexJson(versions));
}
