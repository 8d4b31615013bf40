/**
 * A repository of many tags sharing a base layer, as the sync tests and benchmark need: each tag is the
 * shared base plus a small layer of its own. Built as an OCI layout (tags as ref.name), pushed by skopeo.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage, Layout } from './fixtures.js';
import { run } from './processes.js';

export interface TaggedRepo {
  layout: string;
  tags: string[];
  /** Every distinct blob (configs and layers) with its size. */
  blobs: Map<string, number>;
  /** Manifest digest per tag. */
  digests: Map<string, string>;
}

export async function buildTaggedRepo(
  dir: string,
  opts: { count: number; baseKiB: number; ownKiB: number; seed: string; tagPrefix?: string },
): Promise<TaggedRepo> {
  const layout = new Layout(dir);
  await layout.init();
  const base = {
    type: 'file' as const,
    name: 'base/data.bin',
    content: { seed: `${opts.seed}-base`, size: opts.baseKiB * 1024 },
  };
  const tags: string[] = [];
  const blobs = new Map<string, number>();
  const digests = new Map<string, string>();
  const manifests: unknown[] = [];
  for (let i = 0; i < opts.count; i++) {
    const tag = `${opts.tagPrefix ?? '1.'}${i}.0`;
    const own = {
      type: 'file' as const,
      name: `own/${tag}.bin`,
      content: { seed: `${opts.seed}-${tag}`, size: opts.ownKiB * 1024 },
    };
    const img = await buildImage(layout, { architecture: 'amd64', layers: [[base], [own]], labels: { tag } });
    for (const b of [img.config, ...img.layers]) blobs.set(b.digest, b.size);
    digests.set(tag, img.manifest.digest);
    tags.push(tag);
    manifests.push({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      ...img.manifest,
      annotations: { 'org.opencontainers.image.ref.name': tag },
    });
  }
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests }));
  return { layout: dir, tags, blobs, digests };
}

/** Pushes tags of a layout to a registry repository with skopeo (a third party, not the code under test). */
export async function pushTags(layout: string, tags: string[], repo: string): Promise<void> {
  for (const tag of tags) {
    await run('skopeo', [
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      `oci:${layout}:${tag}`,
      `docker://${repo}:${tag}`,
    ]);
  }
}
