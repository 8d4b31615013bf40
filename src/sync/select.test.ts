import { describe, expect, it } from 'vitest';
import { parseStowageConfig } from '../config/stowage.js';
import { selectTags, tagVersion } from './select.js';

const tags = ['latest', '1.0.0', '1.2.0', 'v1.10.0', '2.0.0-rc.1', '2.0.0', '3.20', 'edge', '1.2.0-alpine'];

describe('tag selection', () => {
  it('reads tags as versions, zeros filled in', () => {
    expect(tagVersion('3.20')?.version).toBe('3.20.0');
    expect(tagVersion('v1.10.0')?.version).toBe('1.10.0');
    expect(tagVersion('latest')).toBeUndefined();
  });

  it('combines the explicit list, regexes, a semver range and newest N', () => {
    expect(selectTags(tags, { tags: ['edge', 'latest', 'edge'] })).toEqual(['edge', 'latest']);
    expect(selectTags(tags, { include: ['^v?1\\.'], exclude: ['alpine'] })).toEqual([
      'v1.10.0',
      '1.2.0',
      '1.0.0',
    ]);
    expect(selectTags(tags, { semver: '>=1.2 <3' })).toEqual(['2.0.0', 'v1.10.0', '1.2.0']);
    expect(selectTags(tags, { newest: 2 })).toEqual(['3.20', '2.0.0']);
    expect(selectTags(tags, { semver: '^1', newest: 1 })).toEqual(['v1.10.0']);
  });
});

describe('stowage.toml', () => {
  it('names the key and the line of a mistake', () => {
    const text =
      '[[job]]\nname = "a"\nsource = "reg.test/a"\n\n[[job]]\nname = "b"\nsource = "reg.test/b"\nnewest = -1\n';
    expect(() => parseStowageConfig(text, 's.toml')).toThrowError(/s\.toml line 8: key "job\[1\]\.newest"/);
    expect(() =>
      parseStowageConfig('[[job]]\nname = "a"\nsource = "reg.test/a"\nsemver = "nope"\n', 's.toml'),
    ).toThrowError(/s\.toml line 2: job "a": key "semver": "nope" is not a semver range/);
    expect(() =>
      parseStowageConfig('[[job]]\nname = "a"\nsource = "reg.test/a"\nschedule = "every day"\n', 's.toml'),
    ).toThrowError(/key "schedule"/);
    expect(() =>
      parseStowageConfig('[[job]]\nname = "a"\nsource = "reg.test/a"\nsurce = 1\n', 's.toml'),
    ).toThrowError(/line 4: key "job\[0\]\.surce": unknown key/);
    expect(() => parseStowageConfig('[[job]\n', 's.toml')).toThrowError(/s\.toml: not valid TOML at line 1/);
    expect(() =>
      parseStowageConfig('[[job]]\nname = "a"\nsource = "reg.test/a"\nprune = true\n', 's.toml'),
    ).toThrowError(/job "a": prune = true deletes a mirror's tags .* the job has no mirror/);
    const c = parseStowageConfig(
      '[[job]]\nname = "a"\nsource = "reg.test/a"\nmirror = "m.test/a"\nprune = true\npreserve-digests = true\n',
      's.toml',
    );
    expect(c.jobs[0]).toMatchObject({ prune: true, 'preserve-digests': true });
  });

  it('takes the store path, retention and jobs', () => {
    const c = parseStowageConfig(
      '[store]\npath = "/srv/store"\n[retention]\nkeep-versions = 3\n[[job]]\nname = "a"\nsource = "reg.test/a"\nplatforms = ["linux/amd64"]\nmirror = "mirror.test/a"\n',
      's.toml',
    );
    expect(c.storePath).toBe('/srv/store');
    expect(c.retention).toEqual({ 'keep-versions': 3 });
    expect(c.jobs[0]).toMatchObject({ name: 'a', mirror: 'mirror.test/a' });
  });
});

describe('config/stowage.toml.example', () => {
  it('is valid', async () => {
    const { readFile } = await import('node:fs/promises');
    const path = new URL('../../config/stowage.toml.example', import.meta.url);
    const c = parseStowageConfig(await readFile(path, 'utf8'), 'stowage.toml.example');
    expect(c.jobs.map((j) => j.name)).toEqual(['base', 'app', 'team', 'tools']);
    expect(c.limits['registry.internal.test']?.['catalog-page-size']).toBe(100);
    expect(c.server.listen).toBe('127.0.0.1:8080');
    expect(c.cache).toEqual({ path: '/var/cache/stowage/blobs', maxBytes: 2 * 1024 ** 3 });
    expect(c.server.token?.map((t) => [t.name, t.scopes])).toEqual([
      ['ci', ['read', 'pull']],
      ['ops', ['admin']],
    ]);
  });

  it('takes a source that names many repositories, and checks its mirror says where each goes', () => {
    const job = (lines: string) => `[[job]]\nname = "ns"\n${lines}\n`;
    const c = parseStowageConfig(
      job('source = "r.test/team/**"\nrepositories = { include = ["^team/a"] }\nmirror = "m.test/x/{path}"'),
      's.toml',
    );
    expect(c.jobs[0]).toMatchObject({ source: 'r.test/team/**', repositories: { include: ['^team/a'] } });
    expect(() => parseStowageConfig(job('source = "r.test/team/**"\nmirror = "m.test/x"'), 's.toml')).toThrow(
      /line 2: job "ns": key "mirror": .*add \{repository\}/,
    );
    expect(() =>
      parseStowageConfig(job('source = "r.test/team/app"\nmirror = "m.test/{path}"'), 's.toml'),
    ).toThrow(/key "mirror": \{repository\} and \{path\} stand for the repositories a pattern source finds/);
    expect(() =>
      parseStowageConfig(job('source = "r.test/team/app"\nrepositories = { exclude = ["x"] }'), 's.toml'),
    ).toThrow(/key "repositories" chooses among the repositories a pattern finds/);
    expect(() => parseStowageConfig(job('source = "team/**"'), 's.toml')).toThrow(
      /key "source": .*must start with the registry/,
    );
    expect(() =>
      parseStowageConfig(job('source = "r.test/**"\nrepositories = { include = ["("] }'), 's.toml'),
    ).toThrow(/key "repositories.include"/);
  });

  it('reads [cache] max-size, "0B" turning the cache off, and names a bad size', () => {
    expect(parseStowageConfig('[cache]\nmax-size = "0B"\n', 's.toml').cache.maxBytes).toBe(0);
    expect(parseStowageConfig('', 's.toml', { HOME: '/home/u' }).cache).toEqual({
      path: '/home/u/.cache/stowage/blobs',
      maxBytes: 2 * 1024 ** 3,
    });
    expect(() => parseStowageConfig('[cache]\nmax-size = "lots"\n', 's.toml')).toThrow(/cache\.max-size/);
  });

  it('refuses a token entry that holds a token instead of its sha256, naming the key', () => {
    expect(() =>
      parseStowageConfig('[[server.token]]\nname = "ci"\nsha256 = "stw_abc"\nscopes = ["read"]\n', 's.toml'),
    ).toThrow(/server\.token\[0\]\.sha256.*64 hex/);
    expect(() =>
      parseStowageConfig(
        `[[server.token]]\nname = "ci"\nsha256 = "${'a'.repeat(64)}"\nscopes = ["root"]\n`,
        's.toml',
      ),
    ).toThrow(/server\.token\[0\]\.scopes/);
  });
});
