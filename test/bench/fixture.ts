import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { seededStream } from '../harness/fixtures.js';

/** An OCI layout with one image of len(layersMiB) gzip layers of seeded data, tagged "bench". */
export async function buildBenchLayout(dir: string, layersMiB: number[]): Promise<void> {
  await mkdir(join(dir, 'blobs/sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const put = async (bytes: Buffer) => {
    const hex = createHash('sha256').update(bytes).digest('hex');
    await writeFile(join(dir, 'blobs/sha256', hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const layers: { digest: string; size: number; diffId: string }[] = [];
  for (const [i, mib] of layersMiB.entries()) {
    const pack = tar.pack();
    const diff = createHash('sha256');
    const blob = createHash('sha256');
    let size = 0;
    const tmp = join(dir, `layer-${i}.tmp`);
    const done = pipeline(
      pack,
      async function* (src) {
        for await (const c of src) {
          diff.update(c as Buffer);
          yield c;
        }
      },
      createGzip({ level: 1 }),
      async function* (src) {
        for await (const c of src) {
          blob.update(c as Buffer);
          size += (c as Buffer).length;
          yield c;
        }
      },
      createWriteStream(tmp),
    );
    const n = mib * 1024 * 1024;
    const entry = pack.entry({ name: `layer${i}/data.bin`, size: n, mtime: new Date(0), mode: 0o644 });
    await pipeline(seededStream(`bench-${i}-${mib}`, n), entry);
    pack.finalize();
    await done;
    const hex = blob.digest('hex');
    await rename(tmp, join(dir, 'blobs/sha256', hex));
    layers.push({ digest: `sha256:${hex}`, size, diffId: `sha256:${diff.digest('hex')}` });
  }
  const config = await put(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        created: '2024-01-01T00:00:00Z',
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
        config: {},
      }),
    ),
  );
  const manifest = await put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: layers.map((l) => ({
          mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
          digest: l.digest,
          size: l.size,
        })),
      }),
    ),
  );
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
