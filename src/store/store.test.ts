import { createHash } from 'node:crypto';
import { appendFile, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Store } from './store.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function store(): Promise<Store> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-store-'));
  dirs.push(dir);
  return Store.open(join(dir, 'store'));
}

function blob(text: string) {
  const bytes = Buffer.from(text);
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  return { descriptor: { mediaType: 'application/octet-stream', digest, size: bytes.length }, bytes };
}

async function* slowly(bytes: Buffer): AsyncGenerator<Uint8Array> {
  await new Promise((r) => setTimeout(r, 20));
  yield bytes;
}

describe('Store.fetchBlob', () => {
  it('fetches a blob once however many ask for it at once', async () => {
    const s = await store();
    const b = blob('shared layer');
    let opened = 0;
    const open = async () => {
      opened++;
      return slowly(b.bytes);
    };
    const results = await Promise.all([1, 2, 3].map(() => s.fetchBlob(b.descriptor, open)));
    expect(opened).toBe(1);
    expect(results.sort()).toEqual(['fetched', 'shared', 'shared']);
    expect(await s.fetchBlob(b.descriptor, open)).toBe('present');
    expect(opened).toBe(1);
  });

  it('a waiter whose fetch it waited on failed fetches for itself, and a lone failure is its caller’s', async () => {
    const s = await store();
    const b = blob('flaky layer');
    const failing = async () => slowly(Buffer.from('not the blob'));
    const first = s.fetchBlob(b.descriptor, failing);
    const second = s.fetchBlob(b.descriptor, async () => slowly(b.bytes));
    await expect(first).rejects.toThrow(b.descriptor.digest);
    expect(await second).toBe('fetched');
    expect(await s.hasBlob(b.descriptor.digest)).toBe(true);
    // Nothing half-written is left in .tmp.
    expect(await readdir(join(s.path, '.tmp'))).toEqual([]);
    // A failure nobody waits on rejects its own caller only (no unhandled rejection ends the process).
    const c = blob('another');
    await expect(s.fetchBlob(c.descriptor, failing)).rejects.toThrow();
  });
});

describe('Store index: a journal beside index.json', () => {
  function entry(repository: string, tag: string, n: number) {
    const digest = `sha256:${n.toString(16).padStart(64, '0')}`;
    return {
      repository,
      tag,
      descriptor: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest, size: 10 },
      source: `registry.test/${repository}:${tag}`,
      taken: new Date(Date.UTC(2026, 0, 1) + n).toISOString(),
      platforms: [],
    };
  }
  const indexEntries = async (s: Store) =>
    (JSON.parse(await readFile(join(s.path, 'index.json'), 'utf8')) as { manifests: unknown[] }).manifests;

  it('records a version as one journal line; index.json gets it when the store is flushed', async () => {
    const s = await store();
    await s.addVersion(entry('team/app', '1', 1));
    await s.addVersion(entry('team/app', '1', 2));
    expect(await indexEntries(s)).toHaveLength(0);
    const journal = await readFile(join(s.path, 'index.journal'), 'utf8');
    expect(journal.trim().split('\n')).toHaveLength(2);
    expect((await s.latest('team/app', '1'))?.descriptor.digest).toMatch(/2$/);
    await s.flush();
    expect(await indexEntries(s)).toHaveLength(2);
    expect(await stat(join(s.path, 'index.journal')).catch(() => undefined)).toBeUndefined();
    // The newest of the tag is named for `oci:STORE:team/app:1`; the stored id rides along.
    const names = (await indexEntries(s)).map(
      (m) => (m as { annotations: Record<string, string> }).annotations,
    );
    expect(names[1]!['org.opencontainers.image.ref.name']).toBe('team/app:1');
    expect(names[0]!['org.opencontainers.image.ref.name']).toMatch(/^team\/app:1@/);
    expect(names[1]!['io.stowage.id']).toBe((await s.latest('team/app', '1'))?.id);
  });

  it('another process’s store sees what this one appended, removed and compacted', async () => {
    const writer = await store();
    const reader = await Store.open(writer.path);
    await writer.addVersion(entry('team/app', '1', 1));
    expect((await reader.versions()).length).toBe(1);
    const v2 = await writer.addVersion(entry('team/app', '1', 2));
    await writer.recordArchive(v2.id, { sha256: 'a'.repeat(64), size: 5 });
    expect((await reader.latest('team/app', '1'))?.archive?.size).toBe(5);
    await writer.flush();
    expect((await reader.versions()).map((v) => v.id)).toEqual((await writer.versions()).map((v) => v.id));
    await writer.update((all) => all.filter((v) => v.id !== v2.id));
    expect((await reader.latest('team/app', '1'))?.descriptor.digest).toMatch(/1$/);
    await reader.addVersion(entry('team/db', '1', 3));
    expect((await writer.versions()).map((v) => v.repository)).toEqual(['team/app', 'team/db']);
  });

  it('keeps the pull-through mark through the journal and index.json', async () => {
    const s = await store();
    await s.addVersion({ ...entry('team/app', '1', 1), pulledThrough: true });
    await s.addVersion(entry('team/app', '2', 2));
    const marks = async (x: Store) => (await x.versions()).map((v) => v.pulledThrough ?? false);
    expect(await marks(await Store.open(s.path))).toEqual([true, false]);
    await s.flush();
    const folded = await Store.open(s.path, { sweep: true });
    expect(await marks(folded)).toEqual([true, false]);
  });

  it('a line a crash cut short is never read, and is cut off before the next append', async () => {
    const s = await store();
    await s.addVersion(entry('team/app', '1', 1));
    await appendFile(join(s.path, 'index.journal'), '{"put":{"id":"abc","repo');
    const other = await Store.open(s.path);
    expect((await other.versions()).length).toBe(1);
    await other.addVersion(entry('team/app', '2', 2));
    const lines = (await readFile(join(s.path, 'index.journal'), 'utf8')).split('\n');
    expect(lines.filter(Boolean).map((l) => JSON.parse(l).add.tag)).toEqual(['1', '2']);
    // A writer that opens the store after a crash folds the journal into index.json.
    const reopened = await Store.open(s.path, { sweep: true });
    expect(await indexEntries(reopened)).toHaveLength(2);
    expect((await reopened.versions()).map((v) => v.tag)).toEqual(['1', '2']);
  });

  it('a damaged line inside the journal is an error naming the journal and what to do', async () => {
    const s = await store();
    await writeFile(join(s.path, 'index.journal'), 'not json\n');
    await expect((await Store.open(s.path)).versions()).rejects.toThrow(
      /damaged index.journal.*stowage verify/,
    );
  });

  it('an index.json written by an older stowage (no stored ids) reads with the same ids', async () => {
    const s = await store();
    const v = await s.addVersion(entry('team/app', '1', 1));
    await s.flush();
    const doc = JSON.parse(await readFile(join(s.path, 'index.json'), 'utf8'));
    delete doc.manifests[0].annotations['io.stowage.id'];
    await writeFile(join(s.path, 'index.json'), JSON.stringify(doc));
    expect((await (await Store.open(s.path)).find(v.id)).tag).toBe('1');
  });

  it('a page read from index.json without loading it is the page the loaded index gives', async () => {
    const s = await store();
    for (let n = 0; n < 60; n++) await s.addVersion(entry(`team/app${n % 4}`, `t${n % 7}`, n));
    await s.flush();
    // After the flush: more versions and a checksum in the journal only.
    for (let n = 60; n < 70; n++) await s.addVersion(entry(`team/app${n % 4}`, `t${n % 7}`, n));
    const first = (await s.versions())[3]!;
    await s.recordArchive(first.id, { sha256: 'b'.repeat(64), size: 7 });
    const queries = [
      { limit: 5 },
      { limit: 100 },
      { limit: 3, repository: 'team/app1' },
      { limit: 4, repository: 'team/app2', tag: 't3' },
      { limit: 6, latest: true },
      { limit: 6, latest: false },
      { limit: 5, search: 'APP3:T2' },
    ];
    const ids = (p: Awaited<ReturnType<Store['page']>>) =>
      p.versions.map((x) => `${x.version.id}${x.latest ? '*' : ''}${x.version.archive ? '#' : ''}`);
    for (const q of queries) {
      let after: string | undefined;
      do {
        const fresh = await Store.open(s.path);
        const scanned = await fresh.page({ ...q, after });
        const loaded = await s.page({ ...q, after });
        expect(ids(scanned), JSON.stringify({ q, after })).toEqual(ids(loaded));
        expect(scanned.next).toBe(loaded.next);
        after = loaded.next;
      } while (after);
    }
    // A cursor that names no version says so, read either way.
    await expect((await Store.open(s.path)).page({ limit: 2, after: 'feedfacecafe' })).rejects.toThrow(
      /start again/,
    );
    // A journal that removed a version: the index is loaded instead, with the same answer.
    await s.update((all) => all.filter((v) => v.id !== first.id));
    const after = await (await Store.open(s.path)).page({ limit: 100 });
    expect(after.versions.map((x) => x.version.id)).not.toContain(first.id);
    expect(ids(after)).toEqual(ids(await s.page({ limit: 100 })));
  });

  it('reads entries that run across the scan’s chunks of index.json', async () => {
    const s = await store();
    await s.update((all) => [
      ...all,
      ...Array.from({ length: 1500 }, (_, n) => ({
        ...entry(`team/app${n % 9}`, `t${n}`, n),
        id: `v${String(n).padStart(11, '0')}`,
      })),
    ]);
    await s.flush();
    expect((await stat(join(s.path, 'index.json'))).size).toBeGreaterThan(2 * 256 * 1024);
    let after: string | undefined;
    const seen: string[] = [];
    do {
      const page = await (await Store.open(s.path)).page({ limit: 97, after });
      seen.push(...page.versions.map((x) => x.version.id));
      after = page.next;
    } while (after);
    expect(seen).toEqual((await s.versions()).map((v) => v.id));
  });

  it('removes versions by id with one journal line each, passing over ids no longer there', async () => {
    const s = await store();
    const a = await s.addVersion(entry('team/app', '1', 1));
    const b = await s.addVersion(entry('team/app', '1', 2));
    await s.removeVersions([b.id, 'feedfacecafe']);
    expect((await s.latest('team/app', '1'))?.id).toBe(a.id);
    const lines = (await readFile(join(s.path, 'index.journal'), 'utf8')).trim().split('\n');
    expect(lines.map((l) => Object.keys(JSON.parse(l))[0])).toEqual(['add', 'add', 'remove']);
    await s.flush();
    expect((await (await Store.open(s.path)).versions()).map((v) => v.id)).toEqual([a.id]);
  });
});
