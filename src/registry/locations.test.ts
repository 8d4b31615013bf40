import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobLocations } from './locations.js';

/** A sha256 digest whose first byte (its shard) is `shard`. */
const digest = (n: number, shard = '00') => `sha256:${shard}${n.toString(16).padStart(62, '0')}`;
const HOST = '127.0.0.1:5000';

let tmp: string;
let dir: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'stowage-locations-'));
  dir = join(tmp, 'cache', 'locations');
});
afterEach(() => rm(tmp, { recursive: true, force: true }));

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

  it('holds at most 32,768 blobs in memory, forgetting the longest unseen first', async () => {
    const l = new BlobLocations();
    for (let i = 0; i < 32_768; i++) l.add(HOST, 'r/x', digest(i));
    l.add(HOST, 'other/x', digest(0));
    l.add(HOST, 'r/x', digest(32_768));
    expect(await l.candidates(HOST, digest(0), 'none')).toEqual(['other/x', 'r/x']);
    expect(await l.candidates(HOST, digest(1), 'none')).toEqual([]);
    expect(await l.candidates(HOST, digest(2), 'none')).toEqual(['r/x']);
    expect(await l.candidates(HOST, digest(32_768), 'none')).toEqual(['r/x']);
  });

  it('keeps them for the next run, a shard per first byte of the digest, only its user may read them', async () => {
    const quiet = new BlobLocations(dir);
    expect(await quiet.candidates(HOST, digest(1), 'none')).toEqual([]);
    await quiet.save();
    await expect(stat(dir)).rejects.toMatchObject({ code: 'ENOENT' });

    const first = new BlobLocations(dir);
    first.add(HOST, 'team/app', digest(1, 'ab'));
    first.add(HOST, 'team/app', digest(2, 'cd'));
    await first.save();
    expect((await readdir(dir)).sort()).toEqual(['ab.json', 'cd.json']);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, 'ab.json'))).mode & 0o777).toBe(0o600);
    const next = new BlobLocations(dir);
    expect(await next.candidates(HOST, digest(1, 'ab'), 'other/app')).toEqual(['team/app']);
    expect(await next.candidates(HOST, digest(2, 'cd'), 'other/app')).toEqual(['team/app']);
  });

  it('reads only the shards it is asked about, and rewrites only those of what it learnt', async () => {
    const seed = new BlobLocations(dir);
    seed.add(HOST, 'a/x', digest(1, 'ab'));
    seed.add(HOST, 'a/x', digest(2, 'cd'));
    await seed.save();
    // A shard this run never touches: damaged on purpose, so reading or rewriting it would show.
    await writeFile(join(dir, 'cd.json'), 'not json, and left alone');
    const run = new BlobLocations(dir);
    expect(await run.candidates(HOST, digest(1, 'ab'), 'b/x')).toEqual(['a/x']);
    run.add(HOST, 'b/x', digest(3, 'ef'));
    await run.save();
    expect(await readFile(join(dir, 'cd.json'), 'utf8')).toBe('not json, and left alone');
    expect((await readdir(dir)).sort()).toEqual(['ab.json', 'cd.json', 'ef.json']);
  });

  it('merges what another run wrote meanwhile, and what this run learnt before reading stays newest', async () => {
    const a = new BlobLocations(dir);
    const b = new BlobLocations(dir);
    a.add(HOST, 'a/x', digest(1));
    b.add(HOST, 'b/x', digest(1));
    b.add(HOST, 'b/x', digest(2));
    await a.save();
    await b.save();
    const c = new BlobLocations(dir);
    c.add(HOST, 'c/x', digest(2));
    expect(await c.candidates(HOST, digest(1), 'none')).toEqual(['b/x', 'a/x']);
    expect(await c.candidates(HOST, digest(2), 'none')).toEqual(['c/x', 'b/x']);
  });

  it('keeps the newest 64 blobs of a shard', async () => {
    const l = new BlobLocations(dir);
    for (let i = 0; i <= 64; i++) l.add(HOST, 'r/x', digest(i));
    await l.save();
    const saved = JSON.parse(await readFile(join(dir, '00.json'), 'utf8'));
    expect(saved.blobs).toHaveLength(64);
    const next = new BlobLocations(dir);
    expect(await next.candidates(HOST, digest(0), 'none')).toEqual([]);
    expect(await next.candidates(HOST, digest(1), 'none')).toEqual(['r/x']);
    expect(await next.candidates(HOST, digest(64), 'none')).toEqual(['r/x']);
  });

  it('reads a broken or foreign shard as empty, and takes from it only names a request path may hold', async () => {
    await mkdir(dir, { recursive: true });
    const shard = join(dir, '00.json');
    await writeFile(shard, '{"version":1,"blobs":[');
    expect(await new BlobLocations(dir).candidates(HOST, digest(9), 'none')).toEqual([]);
    await writeFile(shard, JSON.stringify({ version: 99, blobs: [[HOST, digest(9), ['seed/x']]] }));
    expect(await new BlobLocations(dir).candidates(HOST, digest(9), 'none')).toEqual([]);
    await writeFile(
      shard,
      JSON.stringify({
        version: 1,
        blobs: [
          [HOST, digest(1), ['../../v2/_catalog', 'ok/repo', 'UPPER/case', 7]],
          ['evil.example/x', digest(2), ['ok/repo']],
          [HOST, 'md5:abc', ['ok/repo']],
          // In the wrong shard: not where a lookup of it would read.
          [HOST, digest(3, 'ff'), ['ok/repo']],
          'not an entry',
        ],
      }),
    );
    const read = new BlobLocations(dir);
    expect(await read.candidates(HOST, digest(1), 'none')).toEqual(['ok/repo']);
    expect(await read.candidates('evil.example/x', digest(2), 'none')).toEqual([]);
    expect(await read.candidates(HOST, digest(3, 'ff'), 'none')).toEqual([]);
  });
});
