/**
 * Deterministic fixture images, written as an OCI image layout by the harness (seeded pseudo-random
 * content, fixed timestamps), then seeded into registries with skopeo, so what the registry holds
 * was put there by a third-party tool, not by the code under test.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';

const EPOCH = new Date(0);

/** A deterministic byte stream: AES-128-CTR keystream keyed by the seed. */
export function seededStream(seed: string, size: number): Readable {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zero = Buffer.alloc(1 << 20);
  let left = size;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, zero.length);
      left -= n;
      this.push(cipher.update(zero.subarray(0, n)));
    },
  });
}

export function seededBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

export type LayerEntry =
  | { type: 'file'; name: string; content: Buffer | { seed: string; size: number }; mode?: number }
  | { type: 'directory'; name: string; mode?: number }
  | { type: 'symlink'; name: string; target: string }
  | { type: 'link'; name: string; target: string };

export interface Blob {
  digest: string;
  size: number;
}

export interface BuiltLayer extends Blob {
  diffId: string;
}

/** An OCI image layout being written by the harness. */
export class Layout {
  constructor(readonly dir: string) {}
  blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digest.slice(7));
  }
  async init(): Promise<void> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(this.dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  }
  async putJson(value: unknown): Promise<Blob> {
    const bytes = Buffer.from(JSON.stringify(value));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    await writeFile(this.blobPath(digest), bytes);
    return { digest, size: bytes.length };
  }
  /** A gzip-compressed layer tar; digests of both forms computed while streaming. */
  async putLayer(entries: LayerEntry[]): Promise<BuiltLayer> {
    const pack = tar.pack();
    const diffHash = createHash('sha256');
    const blobHash = createHash('sha256');
    let size = 0;
    const tmp = join(this.dir, 'blobs', `tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
    const writing = pipeline(
      pack,
      async function* (src) {
        for await (const chunk of src) {
          diffHash.update(chunk as Buffer);
          yield chunk;
        }
      },
      createGzip({ level: 1 }),
      async function* (src) {
        for await (const chunk of src) {
          blobHash.update(chunk as Buffer);
          size += chunk.length;
          yield chunk;
        }
      },
      createWriteStream(tmp),
    );
    for (const e of entries) {
      const base = { name: e.name, mtime: EPOCH, uid: 0, gid: 0, uname: '', gname: '' };
      if (e.type === 'directory') {
        pack.entry({ ...base, type: 'directory', mode: e.mode ?? 0o755 });
      } else if (e.type === 'symlink') {
        pack.entry({ ...base, type: 'symlink', linkname: e.target, mode: 0o777 });
      } else if (e.type === 'link') {
        pack.entry({ ...base, type: 'link', linkname: e.target, mode: 0o644 });
      } else if (Buffer.isBuffer(e.content)) {
        pack.entry({ ...base, type: 'file', mode: e.mode ?? 0o644 }, e.content);
      } else {
        const { seed, size: n } = e.content;
        const stream = pack.entry({ ...base, type: 'file', mode: e.mode ?? 0o644, size: n });
        await pipeline(seededStream(seed, n), stream);
      }
    }
    pack.finalize();
    await writing;
    const digest = `sha256:${blobHash.digest('hex')}`;
    await rename(tmp, this.blobPath(digest));
    return { digest, size, diffId: `sha256:${diffHash.digest('hex')}` };
  }
}

export interface ImageSpec {
  architecture: string;
  os?: string;
  variant?: string;
  layers: LayerEntry[][];
  labels?: Record<string, string>;
}

export interface BuiltImage {
  manifest: Blob;
  config: Blob;
  layers: BuiltLayer[];
}

export async function buildImage(layout: Layout, spec: ImageSpec): Promise<BuiltImage> {
  const layers: BuiltLayer[] = [];
  for (const l of spec.layers) layers.push(await layout.putLayer(l));
  const config = await layout.putJson({
    architecture: spec.architecture,
    os: spec.os ?? 'linux',
    ...(spec.variant ? { variant: spec.variant } : {}),
    created: '2024-01-01T00:00:00Z',
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['/bin/sh'],
      Labels: spec.labels ?? {},
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({ created: '2024-01-01T00:00:00Z', created_by: 'stowage test harness' })),
  });
  const manifest = await layout.putJson({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: l.digest,
      size: l.size,
    })),
  });
  return { manifest, config, layers };
}

export interface FixtureSet {
  layoutDir: string;
  /** Tag name in the layout -> digest of the manifest or index. */
  images: Record<string, { digest: string; mediaType: string }>;
  /** Sizes of the large layer fixture. */
  largeLayerBytes: number;
}

function files(prefix: string, seed: string, count: number, size: number): LayerEntry[] {
  return Array.from({ length: count }, (_, i) => ({
    type: 'file' as const,
    name: `${prefix}/file-${i}.bin`,
    content: { seed: `${seed}-${i}`, size },
  }));
}

/**
 * Builds every fixture into one OCI layout: small (one layer), multi (three layers with whiteouts and an
 * opaque directory), large (one layer of `largeMiB` MiB), multiarch (an index of linux/amd64 and linux/arm64).
 */
export async function buildFixtures(dir: string, largeMiB: number): Promise<FixtureSet> {
  const layout = new Layout(dir);
  await layout.init();
  const index: { mediaType: string; digest: string; size: number; annotations: Record<string, string> }[] =
    [];
  const images: FixtureSet['images'] = {};
  const add = (name: string, mediaType: string, blob: Blob) => {
    index.push({ mediaType, ...blob, annotations: { 'org.opencontainers.image.ref.name': name } });
    images[name] = { digest: blob.digest, mediaType };
  };
  const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

  const small = await buildImage(layout, {
    architecture: 'amd64',
    layers: [
      [
        { type: 'directory', name: 'etc' },
        { type: 'file', name: 'etc/hostname', content: Buffer.from('small\n') },
        ...files('data', 'small', 2, 64 * 1024),
      ],
    ],
    labels: { fixture: 'small' },
  });
  add('small', OCI_MANIFEST, small.manifest);

  const multi = await buildImage(layout, {
    architecture: 'amd64',
    layers: [
      [
        { type: 'directory', name: 'a' },
        { type: 'file', name: 'a/keep', content: Buffer.from('keep\n') },
        { type: 'file', name: 'a/gone', content: Buffer.from('gone\n') },
        { type: 'directory', name: 'opq' },
        { type: 'file', name: 'opq/old', content: Buffer.from('old\n') },
        { type: 'symlink', name: 'a/link', target: 'keep' },
        ...files('base', 'multi-base', 3, 300 * 1024),
      ],
      [
        { type: 'file', name: 'a/.wh.gone', content: Buffer.alloc(0) },
        { type: 'directory', name: 'opq' },
        { type: 'file', name: 'opq/.wh..wh..opq', content: Buffer.alloc(0) },
        { type: 'file', name: 'opq/new', content: Buffer.from('new\n') },
        { type: 'link', name: 'a/hard', target: 'a/keep' },
      ],
      files('app', 'multi-app', 4, 700 * 1024),
    ],
    labels: { fixture: 'multi' },
  });
  add('multi', OCI_MANIFEST, multi.manifest);

  const largeBytes = largeMiB * 1024 * 1024;
  const large = await buildImage(layout, {
    architecture: 'amd64',
    layers: [
      [{ type: 'file', name: 'big/payload.bin', content: { seed: `large-${largeMiB}`, size: largeBytes } }],
      files('small', 'large-extra', 2, 128 * 1024),
    ],
    labels: { fixture: 'large' },
  });
  add('large', OCI_MANIFEST, large.manifest);

  const platforms = [
    { architecture: 'amd64', variant: undefined },
    { architecture: 'arm64', variant: 'v8' },
  ];
  const children: { mediaType: string; digest: string; size: number; platform: Record<string, string> }[] =
    [];
  for (const p of platforms) {
    const img = await buildImage(layout, {
      architecture: p.architecture,
      ...(p.variant ? { variant: p.variant } : {}),
      layers: [
        [{ type: 'file', name: 'etc/arch', content: Buffer.from(`${p.architecture}\n`) }],
        files('shared', 'multiarch-shared', 2, 200 * 1024),
      ],
      labels: { fixture: 'multiarch', arch: p.architecture },
    });
    children.push({
      mediaType: OCI_MANIFEST,
      ...img.manifest,
      platform: { architecture: p.architecture, os: 'linux', ...(p.variant ? { variant: p.variant } : {}) },
    });
  }
  const idx = await layout.putJson({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: children,
  });
  add('multiarch', 'application/vnd.oci.image.index.v1+json', idx);

  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: index }));
  return { layoutDir: dir, images, largeLayerBytes: largeBytes };
}
