import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
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
  await writeFile(
    join(dir, 'index.json'),
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

/** Builds the bench image (buildBenchLayout) at `layout` and pushes it with skopeo to `ref` (HOST/REPO:TAG). */
export async function pushBenchImage(layout: string, layersMiB: number[], ref: string): Promise<void> {
  await buildBenchLayout(layout, layersMiB);
  await run('skopeo', [
    'copy',
    '--quiet',
    '--dest-tls-verify=false',
    `oci:${layout}:bench`,
    `docker://${ref}`,
  ]);
}
