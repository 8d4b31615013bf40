import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobLocations } from './locations.js';

const digest = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;
const HOST = '127.0.0.1:5000';

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-locations-'));
  file = join(dir, 'cache', 'locations.json');
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('BlobLocations', () => {
  it('names the other repositories holding a blob, most recently seen first, at most three', async () => {
    const l = new BlobLocations();
    for (const repo of ['a/x', 'b/x', 'c/x', 'd/x']) l.add(HOST, repo, digest(1));
    l.add(HOST, 'b/x', digest(1));
    expect(await l.candidates(HOST, digest(1), 'none')).toEqual(['b/x', 'd/x', 'c/x']);
    expect(await l.candidates(HOST, digest(1), 'b/x')).toEqual(['d/x', 'c/x']);
    expect(await l.candidates('127.0.0.1:5001', digest(1), 'none')).toEqual([]);
    expect(await l.candidates(HOST, digest(2), 'none')).toEqual([]);
  });

  it('keeps them for the next run in a file only its user may read, and writes nothing it did not learn', async () => {
    const quiet = new BlobLocations(file);
    expect(await quiet.candidates(HOST, digest(1), 'none')).toEqual([]);
    await quiet.save();
    await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' });

    const first = new BlobLocations(file);
    first.add(HOST, 'team/app', digest(1));
    await first.save();
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const next = new BlobLocations(file);
    expect(await next.candidates(HOST, digest(1), 'other/app')).toEqual(['team/app']);
  });

  it('merges what another run wrote meanwhile, and what this run learnt before reading stays newest', async () => {
    const a = new BlobLocations(file);
    const b = new BlobLocations(file);
    a.add(HOST, 'a/x', digest(1));
    b.add(HOST, 'b/x', digest(1));
    b.add(HOST, 'b/x', digest(2));
    await a.save();
    await b.save();
    const c = new BlobLocations(file);
    c.add(HOST, 'c/x', digest(2));
    expect(await c.candidates(HOST, digest(1), 'none')).toEqual(['b/x', 'a/x']);
    expect(await c.candidates(HOST, digest(2), 'none')).toEqual(['c/x', 'b/x']);
  });

  it('holds at most 20,000 blobs in memory, forgetting the longest unseen first', async () => {
    const l = new BlobLocations();
    for (let i = 0; i < 20_000; i++) l.add(HOST, 'r/x', digest(i));
    l.add(HOST, 'other/x', digest(0));
    l.add(HOST, 'r/x', digest(20_000));
    expect(await l.candidates(HOST, digest(0), 'none')).toEqual(['other/x', 'r/x']);
    expect(await l.candidates(HOST, digest(1), 'none')).toEqual([]);
    expect(await l.candidates(HOST, digest(2), 'none')).toEqual(['r/x']);
    expect(await l.candidates(HOST, digest(20_000), 'none')).toEqual(['r/x']);
  });

  it('keeps the newest 10,000 blobs', async () => {
    const l = new BlobLocations(file);
    for (let i = 0; i <= 10_000; i++) l.add(HOST, 'r/x', digest(i));
    await l.save();
    const saved = JSON.parse(await readFile(file, 'utf8'));
    expect(saved.blobs).toHaveLength(10_000);
    const next = new BlobLocations(file);
    expect(await next.candidates(HOST, digest(0), 'none')).toEqual([]);
    expect(await next.candidates(HOST, digest(1), 'none')).toEqual(['r/x']);
    expect(await next.candidates(HOST, digest(10_000), 'none')).toEqual(['r/x']);
  });

  it('reads a broken or foreign file as empty, and takes from a file only names a request path may hold', async () => {
    const l = new BlobLocations(file);
    l.add(HOST, 'seed/x', digest(9));
    await l.save();
    await writeFile(file, '{"version":1,"blobs":[');
    expect(await new BlobLocations(file).candidates(HOST, digest(9), 'none')).toEqual([]);
    await writeFile(file, JSON.stringify({ version: 99, blobs: [[HOST, digest(9), ['seed/x']]] }));
    expect(await new BlobLocations(file).candidates(HOST, digest(9), 'none')).toEqual([]);
    await writeFile(
      file,
      JSON.stringify({
        version: 1,
        blobs: [
          [HOST, digest(1), ['../../v2/_catalog', 'ok/repo', 'UPPER/case', 7]],
          ['evil.example/x', digest(2), ['ok/repo']],
          [HOST, 'md5:abc', ['ok/repo']],
          'not an entry',
        ],
      }),
    );
    const read = new BlobLocations(file);
    expect(await read.candidates(HOST, digest(1), 'none')).toEqual(['ok/repo']);
    expect(await read.candidates('evil.example/x', digest(2), 'none')).toEqual([]);
  });
});
