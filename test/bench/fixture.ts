import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage, Layout } from '../harness/fixtures.js';

/** An OCI layout with one image of len(layersMiB) gzip layers of seeded data, tagged "bench". */
export async function buildBenchLayout(dir: string, layersMiB: number[]): Promise<void> {
  const layout = new Layout(dir);
  await layout.init();
  const image = await buildImage(layout, {
    architecture: 'amd64',
    layers: layersMiB.map((mib, i) => [
      {
        type: 'file' as const,
        name: `layer${i}/data.bin`,
        content: { seed: `bench-${i}-${mib}`, size: mib * 1024 * 1024 },
      },
    ]),
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
