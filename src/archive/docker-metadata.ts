import { StowageError } from '../errors.js';
import { digestHex, sha256Digest } from '../image/digest.js';
import type { Descriptor, ImageConfig, ImageManifest } from '../image/schemas.js';
import type { TarEntry } from './tar.js';

export interface DockerArchiveImage {
  manifest: ImageManifest;
  config: { descriptor: Descriptor; bytes: Buffer; parsed: ImageConfig };
  /** RepoTags: "registry/repository:tag". */
  repoTags: string[];
}

export interface LayerJob {
  diffId: string;
  source: Descriptor;
  name: string;
}

/** The legacy layer IDs (one per layer of each image, chained by parent), as a pure function of the image. */
function legacyLayers(image: DockerArchiveImage): { id: string; parent?: string; diffId: string }[] {
  const out: { id: string; parent?: string; diffId: string }[] = [];
  let chain = '';
  let parent: string | undefined;
  for (const diffId of image.config.parsed.rootfs?.diff_ids ?? []) {
    chain = chain ? sha256Digest(`${chain} ${diffId}`) : diffId;
    const id = digestHex(sha256Digest(`${parent ?? ''}\n${chain}`));
    out.push({ id, ...(parent ? { parent } : {}), diffId });
    parent = id;
  }
  return out;
}

function splitRepoTag(t: string): [string, string] {
  const i = t.lastIndexOf(':');
  return i > t.lastIndexOf('/') ? [t.slice(0, i), t.slice(i + 1)] : [t, 'latest'];
}

/** The archive's metadata entries (everything but layer data), in archive order, with their bytes. */
export function dockerMetadata(images: DockerArchiveImage[]): {
  entries: [TarEntry, Buffer][];
  layers: LayerJob[];
} {
  const entries: [TarEntry, Buffer][] = [];
  const file = (name: string, data: Buffer) =>
    entries.push([{ name, type: 'file', size: data.length }, data]);
  const layers = new Map<string, LayerJob>();
  const manifest: { Config: string; RepoTags: string[]; Layers: string[] }[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  const seenConfigs = new Set<string>();
  const seenLegacy = new Set<string>();
  const legacy: [TarEntry, Buffer][] = [];
  for (const image of images) {
    const diffIds = image.config.parsed.rootfs?.diff_ids ?? [];
    if (diffIds.length !== image.manifest.layers.length) {
      throw new StowageError(
        'INVALID_MANIFEST',
        `image ${image.config.descriptor.digest}: the config lists ${diffIds.length} diff_ids for ${image.manifest.layers.length} layers`,
      );
    }
    const configName = `${digestHex(image.config.descriptor.digest)}.json`;
    if (!seenConfigs.has(configName)) {
      seenConfigs.add(configName);
      file(configName, image.config.bytes);
    }
    const layerNames = diffIds.map((diffId, i) => {
      const name = `${digestHex(diffId)}.tar`;
      if (!layers.has(diffId)) layers.set(diffId, { diffId, source: image.manifest.layers[i]!, name });
      return name;
    });
    const existing = manifest.find((m) => m.Config === configName);
    if (existing) existing.RepoTags.push(...image.repoTags.filter((t) => !existing.RepoTags.includes(t)));
    else manifest.push({ Config: configName, RepoTags: [...image.repoTags], Layers: layerNames });
    const chain = legacyLayers(image);
    const top = chain.at(-1);
    for (const [i, l] of chain.entries()) {
      if (seenLegacy.has(l.id)) continue;
      seenLegacy.add(l.id);
      const json: Record<string, unknown> = { id: l.id, ...(l.parent ? { parent: l.parent } : {}) };
      if (i === chain.length - 1) {
        const c = image.config.parsed as Record<string, unknown>;
        for (const k of [
          'architecture',
          'config',
          'container',
          'container_config',
          'created',
          'docker_version',
          'os',
        ]) {
          if (c[k] !== undefined) json[k] = c[k];
        }
      }
      legacy.push([{ name: `${l.id}/VERSION`, type: 'file', size: 3 }, Buffer.from('1.0')]);
      const jb = Buffer.from(JSON.stringify(json));
      legacy.push([{ name: `${l.id}/json`, type: 'file', size: jb.length }, jb]);
      legacy.push([
        { name: `${l.id}/layer.tar`, type: 'symlink', size: 0, linkname: `../${digestHex(l.diffId)}.tar` },
        Buffer.alloc(0),
      ]);
    }
    if (top) {
      for (const t of image.repoTags) {
        const [name, tag] = splitRepoTag(t);
        repositories[name] = { ...repositories[name], [tag]: top.id };
      }
    }
  }
  entries.push(...legacy);
  file('manifest.json', Buffer.from(JSON.stringify(manifest)));
  const repoJson: Record<string, Record<string, string>> = {};
  for (const name of Object.keys(repositories).sort()) {
    const tags = repositories[name]!;
    repoJson[name] = Object.fromEntries(
      Object.keys(tags)
        .sort()
        .map((t) => [t, tags[t]!]),
    );
  }
  file('repositories', Buffer.from(JSON.stringify(repoJson)));
  return { entries, layers: [...layers.values()] };
}
