/**
 * Archives in the layouts `docker save` writes, built from the format's documentation (docker does not
 * run on these machines) and written with a third party's tar code (tar-stream): before v25, one directory per layer (VERSION, json, layer.tar), the config
 * as <id>.json, manifest.json and repositories; from v25, an OCI image layout with uncompressed
 * layers plus manifest.json and repositories in the same tar. Images come from an OCI layout (written
 * by skopeo), their layers decompressed as docker stores them.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { writeTarFixture } from './third-party-tar.js';

const hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

export interface SavedImage {
  /** As docker writes RepoTags: "name:tag", docker.io names shortened. */
  repoTag: string;
  config: Buffer;
  /** Uncompressed layer tars, bottom first. */
  layers: Buffer[];
}

/** Reads an image of an OCI layout (by ref.name) as docker holds it: config plus uncompressed layers. */
export async function imageFromLayout(layout: string, refName: string, repoTag: string): Promise<SavedImage> {
  const blob = (digest: string) => readFile(join(layout, 'blobs', 'sha256', digest.slice(7)));
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
  const d = index.manifests.find(
    (m: { annotations?: Record<string, string> }) =>
      m.annotations?.['org.opencontainers.image.ref.name'] === refName,
  );
  if (!d) throw new Error(`${layout} has no image named ${refName}`);
  const manifest = JSON.parse((await blob(d.digest)).toString('utf8'));
  const layers: Buffer[] = [];
  for (const l of manifest.layers) {
    const bytes = await blob(l.digest);
    layers.push(bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes);
  }
  return { repoTag, config: await blob(manifest.config.digest), layers };
}

type Entry = { name: string; type: 'file' | 'directory'; data?: Buffer };

/** docker save's entries carry real times; any fixed one will do. Written by tar-stream, not by us. */
async function writeTar(path: string, entries: Entry[]): Promise<void> {
  await writeTarFixture(path, entries, 1_700_000_000);
}

function splitRepoTag(t: string): [string, string] {
  const i = t.lastIndexOf(':');
  return [t.slice(0, i), t.slice(i + 1)];
}

/** docker save before v25. */
export async function dockerSaveLegacy(path: string, images: SavedImage[]): Promise<void> {
  const entries: Entry[] = [];
  const manifest: unknown[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  for (const img of images) {
    const configHex = hex(img.config);
    entries.push({ name: `${configHex}.json`, type: 'file', data: img.config });
    let parent = '';
    const layerPaths: string[] = [];
    for (const layer of img.layers) {
      const id = hex(`${parent}\n${hex(layer)}`);
      const json = {
        id,
        ...(parent ? { parent } : {}),
        created: '1970-01-01T00:00:00Z',
        container_config: {},
      };
      entries.push(
        { name: `${id}/`, type: 'directory' },
        { name: `${id}/VERSION`, type: 'file', data: Buffer.from('1.0') },
        { name: `${id}/json`, type: 'file', data: Buffer.from(JSON.stringify(json)) },
        { name: `${id}/layer.tar`, type: 'file', data: layer },
      );
      layerPaths.push(`${id}/layer.tar`);
      parent = id;
    }
    manifest.push({ Config: `${configHex}.json`, RepoTags: [img.repoTag], Layers: layerPaths });
    const [name, tag] = splitRepoTag(img.repoTag);
    repositories[name] = { ...repositories[name], [tag]: parent };
  }
  entries.push(
    { name: 'manifest.json', type: 'file', data: Buffer.from(JSON.stringify(manifest)) },
    { name: 'repositories', type: 'file', data: Buffer.from(JSON.stringify(repositories)) },
  );
  await writeTar(path, entries);
}

/**
 * docker save from v25: an OCI layout inside, with manifest.json beside it. Returns the manifest
 * digests. `byId`: saved by image id, not name (`docker save 3f5f15c1e671`): index.json says
 * "manifests": null, manifest.json "RepoTags": null, and there is no repositories file.
 */
export async function dockerSave25(
  path: string,
  images: SavedImage[],
  opts: { byId?: boolean } = {},
): Promise<string[]> {
  const blobs = new Map<string, Buffer>();
  const put = (b: Buffer) => {
    const h = hex(b);
    blobs.set(h, b);
    return h;
  };
  const index: unknown[] = [];
  const manifestJson: unknown[] = [];
  const repositories: Record<string, Record<string, string>> = {};
  const digests: string[] = [];
  for (const img of images) {
    const configHex = put(img.config);
    const layerHex = img.layers.map(put);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: `sha256:${configHex}`,
          size: img.config.length,
        },
        layers: img.layers.map((l, i) => ({
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: `sha256:${layerHex[i]}`,
          size: l.length,
        })),
      }),
    );
    const manifestHex = put(manifest);
    digests.push(`sha256:${manifestHex}`);
    const [name, tag] = splitRepoTag(img.repoTag);
    const fullName =
      name.includes('/') && name.split('/')[0]!.includes('.') ? name : `docker.io/library/${name}`;
    index.push({
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${manifestHex}`,
      size: manifest.length,
      annotations: {
        'io.containerd.image.name': `${fullName}:${tag}`,
        'org.opencontainers.image.ref.name': tag,
      },
    });
    manifestJson.push({
      Config: `blobs/sha256/${configHex}`,
      RepoTags: opts.byId ? null : [img.repoTag],
      Layers: layerHex.map((h) => `blobs/sha256/${h}`),
    });
    repositories[name] = { ...repositories[name], [tag]: layerHex[layerHex.length - 1]! };
  }
  const entries: Entry[] = [
    { name: 'blobs/', type: 'directory' },
    { name: 'blobs/sha256/', type: 'directory' },
  ];
  for (const [h, b] of [...blobs].sort(([a], [b]) => (a < b ? -1 : 1)))
    entries.push({ name: `blobs/sha256/${h}`, type: 'file', data: b });
  entries.push(
    {
      name: 'index.json',
      type: 'file',
      data: Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.oci.image.index.v1+json',
          manifests: opts.byId ? null : index,
        }),
      ),
    },
    { name: 'manifest.json', type: 'file', data: Buffer.from(JSON.stringify(manifestJson)) },
    { name: 'oci-layout', type: 'file', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
  );
  if (!opts.byId)
    entries.push({ name: 'repositories', type: 'file', data: Buffer.from(JSON.stringify(repositories)) });
  await writeTar(path, entries);
  return digests;
}
