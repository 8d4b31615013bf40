/**
 * The engine's fan-out in process: one copy into several fake destinations, one of them failing; a dry
 * run; a digest cache shared by copies. No registry or other process started.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AMD64, FakeSource } from '../../test/harness/fake-source.js';
import { MemoryDestination } from '../../test/harness/memory-destination.js';
import { StowageError } from '../errors.js';
import { MediaType } from '../image/mediatypes.js';
import { type CopyImage, planImages } from './copy.js';
import type { BlobProvider, DestinationNeeds, ImageSet, WriteSettings } from './destination.js';
import { DigestCache } from './digest-cache.js';
import { copyToEach, firstFailure } from './fan-out.js';

const REGISTRY_LIKE: DestinationNeeds = {
  compressedLayers: true,
  singlePlatform: false,
  maxImages: 1,
  referrers: false,
};

/** A blob's bytes as the stream a lookup answers with. */
async function* oneChunk(buf: Buffer): AsyncGenerator<Uint8Array> {
  yield buf;
}

/** A destination named `name` that fails every write, as a registry refusing the push would. */
class RefusingDestination extends MemoryDestination {
  override readonly description: string;

  constructor(description: string, needs: DestinationNeeds) {
    super(needs);
    this.description = description;
  }

  override async write(_set: ImageSet, _p: BlobProvider, _s: WriteSettings): Promise<void> {
    this.events.push('write');
    throw new StowageError('UNAUTHORIZED', `${this.description} refused the push`);
  }
}

function image(source: FakeSource, reference: string): CopyImage {
  return { source, reference, names: { repoTags: [], annotations: {} }, label: reference };
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-fan-out-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A source with one image of one plain (uncompressed) layer, as a docker-archive holds it. */
function plainImage(): { src: FakeSource; layer: string } {
  const src = new FakeSource();
  const plain = src.blob(Buffer.alloc(16_384, 5), MediaType.OciLayerTar);
  src.image('plain', [plain], AMD64, MediaType.OciLayerTar);
  return { src, layer: plain.digest };
}

describe('copyToEach()', () => {
  it('writes into every destination; one failing leaves the others whole, and says which and why', async () => {
    const { src, layer } = plainImage();
    const a = new MemoryDestination(REGISTRY_LIKE);
    const refusing = new RefusingDestination('registry-b/app', REGISTRY_LIKE);
    const c = new MemoryDestination(REGISTRY_LIKE);
    const cache = await DigestCache.open(join(dir, 'digests.json'));
    const planned = await planImages([image(src, 'plain')], { platforms: [AMD64] });
    const r = await copyToEach(planned, [{ destination: a }, { destination: refusing }, { destination: c }], {
      concurrency: 2,
      digestCache: cache,
    });
    expect(r.outcomes.map((o) => o.ok)).toEqual([true, false, true]);
    const failed = firstFailure(r.outcomes)!;
    expect(failed.code).toBe('UNAUTHORIZED');
    expect(r.outcomes[1]!.destination).toBe('registry-b/app');
    // Both others hold the image, committed; the refusing one was aborted, never committed.
    expect(a.events).toEqual(['write', 'commit']);
    expect(c.events).toEqual(['write', 'commit']);
    expect(refusing.events).toEqual(['write', 'abort']);
    const gz = r.set.blobs.find((b) => b.mediaType === MediaType.OciLayerGzip)!;
    expect(a.stored.get(gz.digest)).toEqual(c.stored.get(gz.digest));
    // The plain layer was compressed once for all three (through a scratch file), read once.
    expect(src.reads.filter((d) => d === layer)).toHaveLength(1);
  });

  it('fails every destination of a kind the images cannot go to, and still writes the others', async () => {
    const src = new FakeSource();
    src.image('one', [src.blob('layer one')]);
    src.image('other', [src.blob('layer two')]);
    const planned = await planImages([image(src, 'one'), image(src, 'other')], { platforms: [AMD64] });
    const single = new MemoryDestination({ ...REGISTRY_LIKE, compressedLayers: false });
    const many = new MemoryDestination();
    const r = await copyToEach(planned, [{ destination: single }, { destination: many }], {
      concurrency: 2,
      digestCache: false,
    });
    expect(r.outcomes[0]).toMatchObject({ ok: false });
    expect(firstFailure(r.outcomes)!.message).toContain('holds one image');
    expect(r.outcomes[1]).toMatchObject({ ok: true });
    expect(single.events).toEqual([]);
    expect(many.events).toEqual(['write', 'commit']);
  });

  it('asks a destination’s own lookups before the source', async () => {
    const src = new FakeSource();
    const l = src.blob('from the store');
    src.image('x', [l]);
    const planned = await planImages([image(src, 'x')], { platforms: [AMD64] });
    const withLookup = new MemoryDestination();
    const plain = new MemoryDestination({ ...REGISTRY_LIKE, maxImages: 2 });
    const asked: string[] = [];
    await copyToEach(
      planned,
      [
        {
          destination: withLookup,
          lookups: [
            async (d) => {
              asked.push(d.digest);
              return d.digest === l.digest ? oneChunk(Buffer.from('from the store')) : undefined;
            },
          ],
        },
        { destination: plain },
      ],
      { concurrency: 1, digestCache: false },
    );
    expect(asked).toContain(l.digest);
    // The first destination took the layer from its lookup; only the second read it from the source.
    expect(src.reads.filter((d) => d === l.digest)).toHaveLength(1);
    expect(withLookup.stored.get(l.digest)?.toString()).toBe('from the store');
    expect(plain.stored.get(l.digest)?.toString()).toBe('from the store');
  });

  it('on a dry run plans and checks every destination, reads no layer, writes and saves nothing', async () => {
    const { src, layer } = plainImage();
    const a = new MemoryDestination(REGISTRY_LIKE);
    const b = new MemoryDestination(REGISTRY_LIKE);
    const path = join(dir, 'digests.json');
    const cache = await DigestCache.open(path);
    const planned = await planImages([image(src, 'plain')], { platforms: [AMD64] });
    const r = await copyToEach(planned, [{ destination: a }, { destination: b }], {
      concurrency: 2,
      dryRun: true,
      digestCache: cache,
    });
    expect(r.outcomes.every((o) => o.ok && o.committed === undefined)).toBe(true);
    expect(src.reads).not.toContain(layer);
    expect(a.events).toEqual([]);
    expect(b.events).toEqual([]);
    // Nothing converted, so the plan is the source's own.
    expect(r.images[0]!.plan.root.descriptor.digest).toBe(src.tags.get('plain'));
    await cache.save();
    expect((await DigestCache.open(path)).get(layer, 'gzip')).toBeUndefined();
  });

  it('shares one digest cache between copies: the second compresses nothing the first did', async () => {
    const { src, layer } = plainImage();
    const cache = await DigestCache.open(join(dir, 'digests.json'));
    const first = new MemoryDestination(REGISTRY_LIKE);
    const p1 = await planImages([image(src, 'plain')], { platforms: [AMD64] });
    const r1 = await copyToEach(p1, [{ destination: first }], { concurrency: 2, digestCache: cache });
    expect(src.reads.filter((d) => d === layer)).toHaveLength(1);
    const gz = r1.set.blobs.find((b) => b.mediaType === MediaType.OciLayerGzip)!;
    // A second copy into a destination that has the compressed layer (a registry pushed to before):
    // the cache gives its digest, so the layer is neither read nor compressed again.
    const second = new MemoryDestination(REGISTRY_LIKE);
    second.present.add(gz.digest);
    const hasBlob = async (d: { digest: string }) => second.present.has(d.digest);
    Object.assign(second, { hasBlob });
    const before = src.reads.length;
    const p2 = await planImages([image(src, 'plain')], { platforms: [AMD64] });
    const r2 = await copyToEach(p2, [{ destination: second }], { concurrency: 2, digestCache: cache });
    expect(r2.outcomes[0]).toMatchObject({ ok: true });
    expect(r2.images[0]!.plan.root.descriptor.digest).toBe(r1.images[0]!.plan.root.descriptor.digest);
    expect(src.reads.slice(before).filter((d) => d === layer)).toEqual([]);
    // A converted image's manifest is stowage's own, not one a docker-archive could go back to: it is
    // not recorded as its config's.
    const config = JSON.parse(r1.images[0]!.plan.root.bytes.toString()).config.digest;
    expect(cache.manifestFor(config)).toBeUndefined();
  });
});
