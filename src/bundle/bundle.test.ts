/**
 * Bundles in process, on real stores in temporary directories: what a full bundle and a delta carry,
 * that the same store gives the same bytes, that bases resolve by file, id and time, and that an
 * import checks its base before it writes anything.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { storeImage } from '../../test/harness/stored-image.js';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { sha256Digest } from '../image/digest.js';
import { Store } from '../store/store.js';
import { createBundle } from './create.js';
import { importBundles } from './import.js';
import { readBundleManifest } from './read.js';
import { chooseVersions, resolveBase } from './select.js';

const temp = tempDirs();
const REPO = '127.0.0.1:5000/team/app';
const base = Buffer.alloc(40_000, 7);
const own = (n: number) => Buffer.alloc(3_000 + n, n);
const sum = async (p: string) =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex');

async function family(count: number) {
  const dir = await temp('bundle-');
  const store = await Store.open(join(dir, 'store'));
  for (let i = 0; i < count; i++)
    await storeImage(store, {
      repository: REPO,
      tag: `1.${i}`,
      layers: [base, own(i)],
      taken: `2026-01-0${i + 1}T00:00:00.000Z`,
    });
  return { dir, store };
}

describe('bundles', () => {
  it('carries every blob in a full bundle and only the new ones in a delta, the same bytes each time', async () => {
    const { dir, store } = await family(3);
    const full = join(dir, 'full.tar');
    const made = await createBundle(store, { output: full, filter: { versions: 'all' } });
    expect(made.versions).toBe(3);
    expect(made.assumes).toBe(0);
    // Two more, sharing the base layer: the delta since the full bundle holds neither that layer nor the old tags.
    await storeImage(store, {
      repository: REPO,
      tag: '1.3',
      layers: [base, own(3)],
      taken: '2026-02-01T00:00:00.000Z',
    });
    await storeImage(store, {
      repository: REPO,
      tag: '1.4',
      layers: [base, own(4)],
      taken: '2026-02-02T00:00:00.000Z',
    });
    const delta = join(dir, 'delta.tar');
    const d = await createBundle(store, { output: delta, since: full, filter: { versions: 'all' } });
    const { manifest } = await readBundleManifest(delta);
    expect(manifest.versions.map((v) => v.tag)).toEqual(['1.3', '1.4']);
    expect(manifest.bases).toEqual([made.id]);
    expect(manifest.assumes).toEqual([{ digest: sha256Digest(base), size: base.length }]);
    expect(manifest.blobs.map((b) => b.digest)).not.toContain(sha256Digest(base));
    expect(manifest.blobs.map((b) => b.digest)).toContain(sha256Digest(own(3)));
    expect(d.bytes).toBeLessThan(base.length);
    // Again, by the recorded id: the same bytes; and one record per bundle.
    const again = join(dir, 'again.tar');
    await createBundle(store, { output: again, since: made.id.slice(7, 15), filter: { versions: 'all' } });
    expect(await sum(again)).toBe(await sum(delta));
    expect((await store.bundles().list()).map((r) => r.id)).toEqual([made.id, d.id]);
  });

  it('takes a time as the base (every bundle recorded by then), and the newest of each tag when asked', async () => {
    const { dir, store } = await family(2);
    const first = await createBundle(store, { output: join(dir, 'a.tar'), filter: { versions: 'all' } });
    const later = new Date(Date.now() + 1000).toISOString();
    const b = await resolveBase(store, later);
    expect(b.ids).toEqual([first.id]);
    await storeImage(store, {
      repository: REPO,
      tag: '1.0',
      layers: [base, own(9)],
      taken: '2026-03-01T00:00:00.000Z',
    });
    const all = await store.versions();
    expect(chooseVersions(all, { ...b, after: '' }, { versions: 'newest' }).map((v) => v.taken)).toEqual([
      '2026-01-02T00:00:00.000Z',
      '2026-03-01T00:00:00.000Z',
    ]);
    expect(chooseVersions(all, b, { versions: 'all', tag: '1\\.1' })).toEqual([]);
    await expect(resolveBase(store, 'yesterday')).rejects.toThrow(/neither a bundle file/);
    await expect(resolveBase(store, 'abcdef')).rejects.toThrow(/no bundle abcdef is recorded/);
  });

  it('refuses a delta whose base the store lacks before writing, then imports full and delta, twice without change', async () => {
    const { dir, store } = await family(2);
    const full = join(dir, 'full.tar');
    const f = await createBundle(store, { output: full, filter: { versions: 'all' } });
    await storeImage(store, {
      repository: REPO,
      tag: '1.2',
      layers: [base, own(2)],
      taken: '2026-02-01T00:00:00.000Z',
    });
    const delta = join(dir, 'delta.tar');
    await createBundle(store, { output: delta, since: full, filter: { versions: 'all' } });

    const far = await Store.open(join(dir, 'far'));
    const err = await importBundles([{ name: delta, parts: [delta] }], { store: far }).catch((e: Error) => e);
    expect(String(err)).toContain(f.id.slice(7, 19));
    expect(await far.versions()).toEqual([]);
    expect(await far.hasBlob(sha256Digest(own(2)))).toBe(false);

    const files = [full, delta].map((p) => ({ name: p, parts: [p] }));
    const first = await importBundles(files, { store: far });
    expect(first.map((r) => r.versions)).toEqual([2, 1]);
    const strip = (vs: { id: string; tag: string; taken: string; descriptor: { digest: string } }[]) =>
      vs.map((v) => [v.id, v.tag, v.taken, v.descriptor.digest]);
    expect(strip(await far.versions())).toEqual(strip(await store.versions()));
    const second = await importBundles(files, { store: far });
    expect(second.map((r) => [r.present, r.written])).toEqual([
      [2, 0],
      [1, 0],
    ]);
    expect((await far.versions()).length).toBe(3);
  });
});
