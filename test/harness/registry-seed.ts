/**
 * Many tiny images written straight into a real docker-registry's storage (its filesystem driver's
 * layout: blobs by digest, and per repository the links that make them its layers, revisions and
 * tags), so that a test or benchmark can have 10,000 tags or 500 repositories in seconds instead of
 * pushing each. The registry then serves them as it serves anything pushed: it reads its storage on
 * every request (no cache is configured). Each tag is its own image (a config of its own) over one
 * shared empty layer, as CI builds are.
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export interface SeededRepository {
  name: string;
  tags: string[];
}

export interface SeededRegistry {
  /** Manifest digest per repository:tag. */
  digests: Map<string, string>;
  /** Distinct blobs written (configs, the layer; manifests not counted). */
  blobs: number;
}

class Writer {
  private readonly dirs = new Set<string>();
  constructor(private readonly root: string) {}

  async file(path: string, data: string | Buffer): Promise<void> {
    const dir = path.slice(0, path.lastIndexOf('/'));
    if (!this.dirs.has(dir)) {
      await mkdir(dir, { recursive: true });
      this.dirs.add(dir);
    }
    await writeFile(path, data);
  }

  async blob(bytes: Buffer): Promise<string> {
    const hex = sha(bytes);
    await this.file(join(this.root, 'blobs/sha256', hex.slice(0, 2), hex, 'data'), bytes);
    return hex;
  }

  link(repo: string, rel: string, hex: string): Promise<void> {
    return this.file(join(this.root, 'repositories', repo, rel, 'link'), `sha256:${hex}`);
  }
}

/**
 * Writes the repositories into the storage under `dataRoot` (the registry's rootdirectory), a few
 * files at a time. Tag `i` of repository `r` gets a config naming both, so every image differs.
 */
export async function seedRegistry(dataRoot: string, repos: SeededRepository[]): Promise<SeededRegistry> {
  const w = new Writer(join(dataRoot, 'docker/registry/v2'));
  // An empty tar (two zero blocks), gzipped: a valid layer every image shares.
  const tar = Buffer.alloc(1024);
  const layer = gzipSync(tar);
  const layerHex = await w.blob(layer);
  const digests = new Map<string, string>();
  let blobs = 1;
  const one = async (repo: string, tag: string) => {
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Labels: { repository: repo, tag } },
        rootfs: { type: 'layers', diff_ids: [`sha256:${sha(tar)}`] },
      }),
    );
    const configHex = await w.blob(config);
    blobs++;
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: `sha256:${configHex}`,
          size: config.length,
        },
        layers: [
          {
            mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
            digest: `sha256:${layerHex}`,
            size: layer.length,
          },
        ],
      }),
    );
    const manifestHex = await w.blob(manifest);
    await w.link(repo, `_layers/sha256/${configHex}`, configHex);
    await w.link(repo, `_manifests/revisions/sha256/${manifestHex}`, manifestHex);
    await w.link(repo, `_manifests/tags/${tag}/current`, manifestHex);
    await w.link(repo, `_manifests/tags/${tag}/index/sha256/${manifestHex}`, manifestHex);
    digests.set(`${repo}:${tag}`, `sha256:${manifestHex}`);
  };
  const work = repos.flatMap((r) => r.tags.map((t) => [r.name, t] as const));
  for (const r of repos) await w.link(r.name, `_layers/sha256/${layerHex}`, layerHex);
  // Sixteen files at a time: fast on any disk, and the order of writes does not matter.
  for (let i = 0; i < work.length; i += 16) {
    await Promise.all(work.slice(i, i + 16).map(([repo, tag]) => one(repo, tag)));
  }
  return { digests, blobs };
}

/** Tag names as CI makes them: build-00001, build-00002, ... */
export function buildTags(count: number, prefix = 'build-'): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}${String(i + 1).padStart(5, '0')}`);
}
