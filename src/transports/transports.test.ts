/**
 * The transports in process: every archive destination written by the engine from a source in memory,
 * read back through openSource, and what they refuse; no registry or other process started.
 */
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AMD64, FakeSource } from '../../test/harness/fake-source.js';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { DigestCache } from '../engine/digest-cache.js';
import { copy } from '../engine/fan-out.js';
import { sha256Digest } from '../image/digest.js';
import { Context } from '../registry/context.js';
import { archiveDestination } from './archive/destinations.js';
import { isArchiveReference, openSource, parseDestination } from './open.js';

const temp = tempDirs();

function twoPlatforms(): FakeSource {
  const src = new FakeSource();
  const shared = src.blob('shared base layer');
  const amd = src.image('amd', [shared, src.blob('amd64 layer')]);
  const arm64 = { os: 'linux', architecture: 'arm64' };
  const arm = src.image('arm', [shared, src.blob('arm64 layer')], arm64);
  src.index('multi', [
    { d: amd, platform: AMD64 },
    { d: arm, platform: arm64 },
  ]);
  return src;
}

async function context(dir: string): Promise<Context> {
  const conf = join(dir, 'registries.conf');
  await writeFile(conf, '');
  return Context.create({ registriesConf: conf, env: {} });
}

const names = {
  repoTags: ['127.0.0.1:5000/team/app:1.0'],
  annotations: { 'org.opencontainers.image.ref.name': '1.0' },
};

describe('reading references', () => {
  it('tells archives from registry images, and refuses a destination path that names no format', () => {
    expect(isArchiveReference('docker://127.0.0.1:5000/a/b:1')).toBe(false);
    expect(isArchiveReference('127.0.0.1:5000/a/b:1')).toBe(false);
    expect(isArchiveReference('./image.tar')).toBe(true);
    expect(isArchiveReference('oci:/srv/layout:1.0')).toBe(true);
    expect(parseDestination('oci-archive:/tmp/x.tar:app:1.0')).toEqual({
      kind: 'archive',
      format: 'oci-archive',
      path: '/tmp/x.tar',
      name: 'app:1.0',
    });
    expect(parseDestination('127.0.0.1:5000/a/b:1')).toMatchObject({ kind: 'registry' });
    expect(() => parseDestination('/tmp/x.tar')).toThrow(/oci-archive:\/tmp\/x.tar/);
  });
});

describe('archive destinations', () => {
  for (const format of ['oci-archive', 'oci', 'dir'] as const) {
    it(`${format}: the whole index written, read back by openSource with its digest intact`, async () => {
      const dir = await temp('stowage-transports-');
      const src = twoPlatforms();
      const out = join(dir, format === 'oci-archive' ? 'out.tar' : 'out');
      const all = format !== 'dir';
      const r = await copy(
        [{ source: src, reference: 'multi', names, label: 'multi' }],
        archiveDestination(format, out),
        { all, platforms: [AMD64] },
        { concurrency: 2 },
      );
      const expected = all ? src.tags.get('multi') : src.tags.get('amd');
      expect(r.images[0]!.plan.root.descriptor.digest).toBe(expected);
      if (format === 'oci-archive') {
        const bytes = await readFile(out);
        expect(await readFile(`${out}.sha256`, 'utf8')).toBe(`${sha256Digest(bytes).slice(7)}  out.tar\n`);
        expect(r.committed?.sha256).toBe(sha256Digest(bytes).slice(7));
      }
      const ctx = await context(dir);
      const opened = await openSource(ctx, `${format}:${out}`);
      try {
        expect(opened.images[0]!.reference).toBe(expected);
        const back = await opened.source.getManifest(expected!);
        expect(back.bytes).toEqual(src.docs.get(expected!)!.bytes);
      } finally {
        await opened.close();
        await ctx.close();
      }
      // Nothing left beside it but the output (and its checksum).
      const left = (await readdir(dir)).filter((n) => n !== 'registries.conf').sort();
      expect(left).toEqual(format === 'oci-archive' ? ['out.tar', 'out.tar.sha256'] : ['out']);
    });
  }

  it('docker-archive refuses an index before reading a layer, and takes one platform', async () => {
    const dir = await temp('stowage-transports-');
    const src = twoPlatforms();
    const out = join(dir, 'd.tar');
    const err = await copy(
      [{ source: src, reference: 'multi', names, label: 'multi' }],
      archiveDestination('docker-archive', out),
      { all: true, platforms: [AMD64] },
      { concurrency: 2 },
    ).catch((e) => e);
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(src.reads.filter((d) => src.blobs.get(d)?.toString().includes('layer'))).toEqual([]);
    expect(await stat(out).catch(() => undefined)).toBeUndefined();
  });

  it('leaves nothing at the destination when a blob is damaged', async () => {
    const dir = await temp('stowage-transports-');
    const src = twoPlatforms();
    const bad = [...src.blobs.entries()].find(([, b]) => b.toString() === 'amd64 layer')![0];
    src.damaged.add(bad);
    for (const format of ['oci-archive', 'oci', 'dir'] as const) {
      const out = join(dir, `out-${format}`);
      const err = await copy(
        [{ source: src, reference: 'amd', names, label: 'amd' }],
        archiveDestination(format, out),
        { platforms: [AMD64] },
        { concurrency: 2 },
      ).catch((e) => e);
      expect(err.code).toBe('DIGEST_MISMATCH');
    }
    expect(await readdir(dir)).toEqual([]);
  });

  it('checks a large blob of an archive in place, on a worker thread, and names the damage', async () => {
    const dir = await temp('stowage-transports-');
    const src = new FakeSource();
    const big = src.blob(Buffer.alloc(6 << 20, 'layer bytes '));
    const small = src.blob('a small layer');
    src.image('1.0', [big, small]);
    const ctx = await context(dir);
    for (const format of ['oci-archive', 'oci'] as const) {
      const out = join(dir, format === 'oci' ? 'layout' : 'out.tar');
      await copy(
        [{ source: src, reference: '1.0', names, label: 'app' }],
        archiveDestination(format, out),
        { platforms: [AMD64] },
        { concurrency: 2 },
      );
      const opened = await openSource(ctx, `${format}:${out}`);
      try {
        expect(await opened.source.checkBlob?.(big)).toBe(true);
        // A small one is cheaper to read through: the caller does.
        expect(await opened.source.checkBlob?.(small)).toBe(false);
      } finally {
        await opened.close();
      }
      // One byte changed in the middle of the big blob: the in-place check finds it.
      const file = format === 'oci' ? join(out, 'blobs/sha256', big.digest.slice(7)) : out;
      const bytes = await readFile(file);
      const at = bytes.indexOf(Buffer.alloc(64, 'layer bytes ')) + (3 << 20);
      bytes[at] = (bytes[at] as number) ^ 0xff;
      await writeFile(file, bytes);
      const damaged = await openSource(ctx, `${format}:${out}`);
      try {
        await expect(damaged.source.checkBlob?.(big)).rejects.toThrow(/the archive is damaged/);
      } finally {
        await damaged.close();
      }
    }
    await ctx.close();
  });

  it('docker-archive: a layer checked against its diff_id before is not hashed again; one never checked is', async () => {
    const dir = await temp('stowage-transports-');
    const { gzipSync } = await import('node:zlib');
    const plain = Buffer.alloc(200_000, 'tar bytes ');
    const src = new FakeSource();
    const layer = src.blob(gzipSync(plain));
    // A config that does not describe its layer: the diff_id check is what catches it.
    const wrong = `sha256:${'0'.repeat(64)}`;
    src.image('bad', [layer], AMD64, undefined, [wrong]);
    const good = sha256Digest(plain);
    src.image('good', [layer], AMD64, undefined, [good]);
    const cache = await DigestCache.open(join(dir, 'digests.json'));
    const write = (tag: string, out: string) =>
      copy(
        [{ source: src, reference: tag, names, label: tag }],
        archiveDestination('docker-archive', join(dir, out), { digestCache: cache }),
        { platforms: [AMD64] },
        { concurrency: 2 },
      );
    await expect(write('bad', 'bad.tar')).rejects.toThrow(/diff_id does not describe this layer/);
    expect(cache.diffIdOf(layer.digest)).toBeUndefined();
    // Checked once, remembered: the compressed digest (checked on every read) now vouches for it.
    await write('good', 'good.tar');
    expect(cache.diffIdOf(layer.digest)).toBe(good);
    // What was remembered is what is skipped, and only that: the bad config still fails.
    await expect(write('bad', 'bad-again.tar')).rejects.toThrow(/diff_id does not describe this layer/);
    const again = await write('good', 'good-again.tar');
    expect(again.committed?.sha256).toBe((await write('good', 'good-3.tar')).committed?.sha256);
    expect(await readFile(join(dir, 'good-again.tar'))).toEqual(await readFile(join(dir, 'good.tar')));
    // The skip itself: with an entry for this very pair the hash is not run, so not even this
    // config's lie is seen. Entries come from the user's own cache directory, written by stowage.
    cache.rememberDiffId(layer.digest, wrong);
    await expect(write('bad', 'trusted.tar')).resolves.toBeDefined();
  });

  it('adds to an existing OCI layout: blobs it holds are not read again, other names kept', async () => {
    const dir = await temp('stowage-transports-');
    const src = twoPlatforms();
    const out = join(dir, 'layout');
    const one = { repoTags: [], annotations: { 'org.opencontainers.image.ref.name': 'amd' } };
    const two = { repoTags: [], annotations: { 'org.opencontainers.image.ref.name': 'arm' } };
    const opts = { concurrency: 2 };
    await copy(
      [{ source: src, reference: 'amd', names: one, label: 'amd' }],
      archiveDestination('oci', out),
      { platforms: [AMD64] },
      opts,
    );
    const before = src.reads.length;
    const arm64 = { os: 'linux', architecture: 'arm64' };
    await copy(
      [{ source: src, reference: 'arm', names: two, label: 'arm' }],
      archiveDestination('oci', out),
      { platforms: [arm64] },
      opts,
    );
    const shared = [...src.blobs.entries()].find(([, b]) => b.toString() === 'shared base layer')![0];
    expect(src.reads.slice(before)).not.toContain(shared);
    const index = JSON.parse(await readFile(join(out, 'index.json'), 'utf8'));
    expect(
      index.manifests.map(
        (m: { annotations: Record<string, string> }) => m.annotations['org.opencontainers.image.ref.name'],
      ),
    ).toEqual(['amd', 'arm']);
  });
});
