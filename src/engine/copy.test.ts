/**
 * The copy engine in process: a fake source and fake destinations (and the real file-system store),
 * no registry or other process started.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { AMD64, digestOf, FakeSource } from '../../test/harness/fake-source.js';
import { MemoryDestination } from '../../test/harness/memory-destination.js';
import type { ProgressEvent } from '../core/progress.js';
import { StowageError } from '../errors.js';
import { MediaType } from '../image/mediatypes.js';
import { Store } from '../store/store.js';
import { ociArchiveView, viewSha256 } from '../store/view.js';
import { exportVersion } from '../transfer/export.js';
import { openArchive } from '../transports/open.js';
import { StoreDestination } from '../transports/store/destination.js';
import { StoreSource } from '../transports/store/source.js';
import { copyBlobs } from './blobs.js';
import { type CopyImage, planImages, prepareCopy, writeTo } from './copy.js';
import type { DestinationNeeds } from './destination.js';
import { DigestCache } from './digest-cache.js';
import { copy } from './fan-out.js';

function image1(source: FakeSource): CopyImage {
  return image(source, '1.0');
}

function image(source: FakeSource, reference: string): CopyImage {
  return { source, reference, names: { repoTags: [], annotations: {} }, label: reference };
}

const settings = { concurrency: 3 };

describe('copy()', () => {
  it('writes each blob of several images once, reads each once, and commits after writing', async () => {
    const src = new FakeSource();
    const base = src.blob('base layer');
    const a = src.blob('layer a');
    const b = src.blob('layer b');
    src.image('a', [base, a]);
    src.image('b', [base, b]);
    const dest = new MemoryDestination();
    const r = await copy([image(src, 'a'), image(src, 'b')], dest, { platforms: [AMD64] }, settings);
    // Both images have the same config (same platform): it and three layers, each once.
    expect(r.set.blobs.length).toBe(4);
    expect(new Set(r.set.blobs.map((x) => x.digest)).size).toBe(4);
    // Planning reads the config of each image for its platform; each layer is read once.
    const layerReads = src.reads.filter((d) => [base, a, b].some((l) => l.digest === d));
    expect(layerReads.sort()).toEqual([base, a, b].map((l) => l.digest).sort());
    expect(dest.stored.get(base.digest)?.toString()).toBe('base layer');
    expect(dest.events).toEqual(['write', 'commit']);
    expect(r.images.map((i) => i.plan.root.descriptor.digest)).toEqual([
      src.tags.get('a'),
      src.tags.get('b'),
    ]);
  });

  it('reads nothing for blobs the destination has or can mount, and counts how each arrived', async () => {
    const src = new FakeSource();
    const kept = src.blob('kept');
    const linked = src.blob('linked');
    const sent = src.blob('sent');
    src.image('x', [kept, linked, sent]);
    const dest = new MemoryDestination();
    dest.present.add(kept.digest);
    dest.mountable.add(linked.digest);
    await copy([image(src, 'x')], dest, { platforms: [AMD64] }, settings);
    expect(src.reads).not.toContain(kept.digest);
    expect(src.reads).not.toContain(linked.digest);
    expect(src.reads).toContain(sent.digest);
    expect(dest.outcomes.sort()).toEqual(['existing', 'mounted', 'written', 'written']);
  });

  it('takes a blob from a cheaper place (the store, a cache) before its source', async () => {
    const src = new FakeSource();
    const layer = src.blob('cached layer');
    src.image('x', [layer]);
    const dest = new MemoryDestination();
    const looked: string[] = [];
    await copy(
      [image(src, 'x')],
      dest,
      { platforms: [AMD64] },
      {
        ...settings,
        lookups: [
          async (d) => {
            looked.push(d.digest);
            if (d.digest !== layer.digest) return undefined;
            const bytes = src.blobs.get(d.digest)!;
            return (async function* () {
              yield bytes;
            })();
          },
        ],
      },
    );
    expect(looked).toContain(layer.digest);
    expect(src.reads).not.toContain(layer.digest);
    expect(dest.stored.get(layer.digest)?.toString()).toBe('cached layer');
  });

  it('fails on a damaged blob, naming it, stops, and aborts the destination without committing', async () => {
    const src = new FakeSource();
    const bad = src.blob('damaged layer');
    src.image('x', [bad, src.blob('fine')]);
    src.damaged.add(bad.digest);
    const dest = new MemoryDestination();
    const err = await copy([image(src, 'x')], dest, { platforms: [AMD64] }, settings).catch((e) => e);
    expect(err).toBeInstanceOf(StowageError);
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain(bad.digest);
    expect(dest.events).toEqual(['write', 'abort']);
    expect(dest.stored.has(bad.digest)).toBe(false);
  });

  it('retries a blob after a transient failure', async () => {
    const src = new FakeSource();
    const layer = src.blob('flaky');
    src.image('x', [layer]);
    const dest = new MemoryDestination();
    dest.flaky.add(layer.digest);
    await copy([image(src, 'x')], dest, { platforms: [AMD64] }, settings);
    expect(dest.stored.get(layer.digest)?.toString()).toBe('flaky');
    expect(dest.flaky.size).toBe(0);
  });

  it('stops when aborted mid-blob: ABORTED, the destination aborted, nothing committed', async () => {
    const src = new FakeSource();
    src.image('x', [src.blob('slow layer')]);
    let release!: () => void;
    src.hold = new Promise((r) => {
      release = r;
    });
    const dest = new MemoryDestination();
    const controller = new AbortController();
    const p = copy(
      [image(src, 'x')],
      dest,
      { platforms: [AMD64] },
      { ...settings, signal: controller.signal },
    );
    while (src.reads.length === 0) await new Promise((r) => setTimeout(r, 1));
    controller.abort();
    release();
    const err = await p.catch((e) => e);
    expect(err.code).toBe('ABORTED');
    expect(dest.events).toEqual(['write', 'abort']);
  });

  it('reports progress: the plan, then each blob started and done', async () => {
    const src = new FakeSource();
    src.image('x', [src.blob('one'), src.blob('two')]);
    const events: ProgressEvent[] = [];
    const r = await copy(
      [image(src, 'x')],
      new MemoryDestination(),
      { platforms: [AMD64] },
      {
        ...settings,
        onProgress: (e) => events.push(e),
      },
    );
    const plan = events.find((e) => e.type === 'plan');
    expect(plan).toEqual({ type: 'plan', blobs: 3, totalBytes: r.set.blobs.reduce((n, b) => n + b.size, 0) });
    for (const b of r.set.blobs) {
      expect(events).toContainEqual({ type: 'blob-start', digest: b.digest, size: b.size });
      expect(events).toContainEqual({ type: 'blob-done', digest: b.digest, size: b.size });
    }
  });

  it('keeps an index whole, or chooses a platform, or refuses an index where one platform fits', async () => {
    const src = new FakeSource();
    const amd = src.image('amd', [src.blob('amd layer')]);
    const arm64 = { os: 'linux', architecture: 'arm64' };
    const arm = src.image('arm', [src.blob('arm layer')], arm64);
    const idx = src.index('multi', [
      { d: amd, platform: AMD64 },
      { d: arm, platform: arm64 },
    ]);
    const whole = await copy(
      [image(src, 'multi')],
      new MemoryDestination(),
      { all: true, platforms: [AMD64] },
      settings,
    );
    expect(whole.images[0]!.plan.root.descriptor.digest).toBe(idx.digest);
    expect(whole.set.documents.size).toBe(3);
    const one = await copy([image(src, 'multi')], new MemoryDestination(), { platforms: [arm64] }, settings);
    expect(one.images[0]!.plan.root.descriptor.digest).toBe(arm.digest);
    const single = new MemoryDestination({
      compressedLayers: false,
      singlePlatform: true,
      maxImages: 9,
      referrers: false,
    });
    const err = await copy([image(src, 'multi')], single, { all: true, platforms: [AMD64] }, settings).catch(
      (e) => e,
    );
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toContain('one platform per image');
    expect(single.events).toEqual([]);
  });

  it('gzips plain layers for a destination that holds compressed ones, and removes its scratch files', async () => {
    const src = new FakeSource();
    const plain = src.blob(Buffer.alloc(4096, 7), MediaType.OciLayerTar);
    src.image('plain', [plain], AMD64, MediaType.OciLayerTar);
    const scratchBefore = (await readdir(tmpdir())).filter((n) => n.startsWith('stowage-push-'));
    const dest = new MemoryDestination({
      compressedLayers: true,
      singlePlatform: false,
      maxImages: 1,
      referrers: false,
    });
    const r = await copy([image(src, 'plain')], dest, { platforms: [AMD64] }, settings);
    const converted = r.images[0]!;
    expect(converted.converted).toBe(true);
    expect(converted.plan.root.descriptor.digest).not.toBe(src.tags.get('plain'));
    const manifest = JSON.parse(converted.plan.root.bytes.toString());
    expect(manifest.layers[0].mediaType).toBe(MediaType.OciLayerGzip);
    const gz = dest.stored.get(manifest.layers[0].digest)!;
    expect(digestOf(gz)).toBe(manifest.layers[0].digest);
    expect(gunzipSync(gz)).toEqual(Buffer.alloc(4096, 7));
    // The same layer always gives the same bytes.
    const again = await copy(
      [image(src, 'plain')],
      new MemoryDestination(dest.needs),
      { platforms: [AMD64] },
      settings,
    );
    expect(again.images[0]!.plan.root.descriptor.digest).toBe(converted.plan.root.descriptor.digest);
    const scratchAfter = (await readdir(tmpdir())).filter((n) => n.startsWith('stowage-push-'));
    expect(scratchAfter.sort()).toEqual(scratchBefore.sort());
  });

  it('remembers what it compressed: a second conversion reads no layer, and the bytes come out the same', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-digests-'));
    try {
      const cachePath = join(dir, 'digests.json');
      const src = new FakeSource();
      const plain = src.blob(Buffer.alloc(8192, 3), MediaType.OciLayerTar);
      src.image('plain', [plain], AMD64, MediaType.OciLayerTar);
      const needs = { compressedLayers: true, singlePlatform: false, maxImages: 1, referrers: false };
      const first = new MemoryDestination(needs);
      const cache1 = await DigestCache.open(cachePath);
      const planned = await planImages([image(src, 'plain')], { platforms: [AMD64] });
      const p1 = await prepareCopy(planned, needs, { ...settings, digestCache: cache1 });
      await writeTo(first, p1, settings);
      await p1.cleanup();
      expect(src.reads.filter((d) => d === plain.digest)).toHaveLength(1);
      // Another run: the cache on disk gives the digest; nothing is read to plan.
      const before = src.reads.length;
      const p2 = await prepareCopy(await planImages([image(src, 'plain')], { platforms: [AMD64] }), needs, {
        ...settings,
        digestCache: await DigestCache.open(cachePath),
      });
      expect(p2.images[0]!.plan.root.descriptor.digest).toBe(p1.images[0]!.plan.root.descriptor.digest);
      expect(src.reads.slice(before).filter((d) => d === plain.digest)).toEqual([]);
      // A destination without the blob gets it compressed on the way, the same bytes.
      const second = new MemoryDestination(needs);
      await writeTo(second, p2, settings);
      const gz = p2.set.blobs.find((b) => b.mediaType === MediaType.OciLayerGzip)!;
      expect(second.stored.get(gz.digest)).toEqual(first.stored.get(gz.digest));
      // One that has it is checked against the plain layer (read once), not compressed again.
      const having = new MemoryDestination(needs);
      having.present.add(gz.digest);
      const reads = src.reads.length;
      await copyBlobs(having.sink, [gz], p2.provider, { ...settings, retries: 0, verifyExisting: true });
      expect(src.reads.slice(reads)).toEqual([plain.digest]);
      src.damaged.add(plain.digest);
      // (A new destination: the first one remembers it has the blob.)
      const again = new MemoryDestination(needs);
      again.present.add(gz.digest);
      const err = await copyBlobs(again.sink, [gz], p2.provider, {
        ...settings,
        retries: 0,
        verifyExisting: true,
      }).catch((e) => e);
      expect(err.code).toBe('DIGEST_MISMATCH');
      await p2.cleanup();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('--preserve-digests refuses, before reading a layer or writing, each copy that would change a digest', async () => {
    const src = new FakeSource();
    const amd = src.image('amd', [src.blob('amd layer')]);
    const arm64 = { os: 'linux', architecture: 'arm64' };
    const arm = src.image('arm', [src.blob('arm layer')], arm64);
    src.index('multi', [
      { d: amd, platform: AMD64 },
      { d: arm, platform: arm64 },
    ]);
    const plainLayer = src.blob(Buffer.alloc(512, 1), MediaType.OciLayerTar);
    src.image('plain', [plainLayer], AMD64, MediaType.OciLayerTar);
    const keep = { ...settings, preserveDigests: true };
    const refused = async (
      reference: string,
      selection: Parameters<typeof copy>[2],
      needs: DestinationNeeds,
      extra: object = {},
    ) => {
      const dest = new MemoryDestination(needs);
      const reads = src.reads.length;
      const err = await copy([image(src, reference)], dest, selection, { ...keep, ...extra }).catch((e) => e);
      expect(dest.events).toEqual([]);
      expect(src.reads.slice(reads).filter((d) => d === plainLayer.digest)).toEqual([]);
      return err as StowageError;
    };
    const anywhere = { compressedLayers: false, singlePlatform: false, maxImages: 9, referrers: false };
    const registry = { ...anywhere, compressedLayers: true };
    const dockerArchive = { ...anywhere, singlePlatform: true, plainLayers: true };
    // Two platforms of an index make a new index.
    const both = await refused('multi', { platforms: [AMD64, arm64] }, anywhere);
    expect(both.code).toBe('INVALID_ARGUMENT');
    expect(both.message).toContain('makes a new index');
    // A docker-archive keeps no manifest.
    const noManifest = await refused('amd', { platforms: [AMD64] }, dockerArchive);
    expect(noManifest.code).toBe('UNSUPPORTED');
    expect(noManifest.message).toContain('a docker-archive keeps no manifest');
    // Plain layers compressed for a registry: refused by default, and when asked for.
    const compressed = await refused('plain', { platforms: [AMD64] }, registry);
    expect(compressed.message).toContain('--compress none');
    const asked = await refused('plain', { platforms: [AMD64] }, anywhere, {
      compress: { format: 'gzip', level: 6 },
    });
    expect(asked.code).toBe('INVALID_ARGUMENT');
    // What keeps its digest goes through: one platform, the whole index, plain layers kept plain.
    const one = await copy([image(src, 'multi')], new MemoryDestination(), { platforms: [arm64] }, keep);
    expect(one.images[0]!.plan.root.descriptor.digest).toBe(arm.digest);
    const whole = await copy(
      [image(src, 'multi')],
      new MemoryDestination(),
      { all: true, platforms: [AMD64] },
      keep,
    );
    expect(whole.images[0]!.plan.root.descriptor.digest).toBe(src.tags.get('multi'));
    const asIs = await copy(
      [image(src, 'plain')],
      new MemoryDestination(registry),
      { platforms: [AMD64] },
      {
        ...keep,
        compress: { format: 'none' },
      },
    );
    expect(asIs.images[0]!.plan.root.descriptor.digest).toBe(src.tags.get('plain'));
  });

  it('plans without reading a layer on a dry run', async () => {
    const src = new FakeSource();
    const layer = src.blob('never read');
    src.image('x', [layer]);
    const dest = new MemoryDestination();
    const r = await copy([image(src, 'x')], dest, { platforms: [AMD64] }, { ...settings, dryRun: true });
    expect(r.committed).toBeUndefined();
    expect(src.reads).not.toContain(layer.digest);
    expect(dest.events).toEqual([]);
  });
});

describe('the store as destination and source', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  it('records a version at commit, and gives the same image back, digests intact', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-copy-'));
    dirs.push(dir);
    const store = await Store.open(join(dir, 'store'));
    const src = new FakeSource();
    const shared = src.blob('shared');
    src.image('1.0', [shared, src.blob('one')]);
    src.image('1.1', [shared, src.blob('two')]);
    const labels = ['1.0', '1.1'].map((tag) => ({
      repository: 'reg.test/app',
      tag,
      source: `reg.test/app:${tag}`,
    }));
    const r = await copy(
      [image(src, '1.0'), image(src, '1.1')],
      new StoreDestination(store, { labels }),
      { platforms: [AMD64] },
      settings,
    );
    expect(r.committed!.map((v) => [v.tag, v.descriptor.digest])).toEqual([
      ['1.0', src.tags.get('1.0')],
      ['1.1', src.tags.get('1.1')],
    ]);
    expect((await store.versions()).map((v) => v.tag)).toEqual(['1.0', '1.1']);
    // Back out of the store: the same manifest, every blob's bytes.
    const back = new MemoryDestination();
    const version = (await store.versions())[1]!;
    const out = await copy(
      [
        {
          source: new StoreSource(store),
          reference: version.descriptor.digest,
          names: { repoTags: [], annotations: {} },
          label: 'v',
        },
      ],
      back,
      { platforms: [AMD64] },
      settings,
    );
    expect(out.images[0]!.plan.root.descriptor.digest).toBe(src.tags.get('1.1'));
    for (const b of out.set.blobs) expect(back.stored.get(b.digest)).toEqual(src.blobs.get(b.digest));
  });

  it('records nothing when a blob fails, and a damaged blob never lands in the store', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-copy-'));
    dirs.push(dir);
    const store = await Store.open(join(dir, 'store'));
    const src = new FakeSource();
    const bad = src.blob('bad');
    src.image('x', [bad]);
    src.damaged.add(bad.digest);
    const labels = [{ repository: 'reg.test/app', tag: 'x', source: 'reg.test/app:x' }];
    const err = await copy(
      [image(src, 'x')],
      new StoreDestination(store, { labels }),
      { platforms: [AMD64] },
      settings,
    ).catch((e) => e);
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(await store.versions()).toEqual([]);
    expect(await store.hasBlob(bad.digest)).toBe(false);
  });

  it('keeps what is attached to a version, exports it as the download view serves it, and removes it with the version', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-copy-'));
    dirs.push(dir);
    const store = await Store.open(join(dir, 'store'));
    const src = new FakeSource();
    const image = src.image('1.0', [src.blob('layer')]);
    const sbom = src.attach(image, 'application/spdx+json', '{"spdxVersion":"SPDX-2.3"}');
    const sig = src.attach(
      sbom,
      'application/vnd.dev.cosign.simplesigning.v1+json',
      'payload',
      `${sbom.digest.replace(':', '-')}.sig`,
    );
    const labels = [{ repository: 'reg.test/app', tag: '1.0', source: 'reg.test/app:1.0' }];
    const r = await copy(
      [image1(src)],
      new StoreDestination(store, { labels }),
      { platforms: [AMD64] },
      settings,
    );
    const version = r.committed![0]!;
    expect(version.referrers?.map((x) => x.descriptor.digest)).toEqual([sbom.digest, sig.digest]);
    expect((await store.versions())[0]!.referrers?.[1]?.tag).toBe(`${sbom.digest.replace(':', '-')}.sig`);
    // Exported as an oci-archive, it is byte for byte what the download view serves.
    const out = join(dir, 'v.tar');
    const exported = await exportVersion(store, version.id, { output: out });
    const archive = await openArchive(out);
    expect(archive.attachments.map((d) => d.digest).sort()).toEqual([sbom.digest, sig.digest].sort());
    expect(archive.images.length).toBe(1);
    await archive.close();
    const stored = (await store.versions())[0]!;
    expect(await viewSha256(await ociArchiveView(store, stored))).toBe(exported.sha256);
    // Garbage collection keeps what a version holds, and takes it with the version.
    await store.collectGarbage();
    expect(await store.hasBlob(sig.digest)).toBe(true);
    await store.update(() => []);
    await store.collectGarbage();
    expect(await store.hasBlob(sbom.digest)).toBe(false);
    expect(await store.hasBlob(sig.digest)).toBe(false);
  });
});
