import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { formatReference, parseReference } from '../reference/reference.js';
import {
  loadRegistriesConf,
  mergeAliasCache,
  parseRegistriesConf,
  type RegistriesConf,
} from './registries.js';
import { findRegistry, pullEndpoints, resolveCandidates, resolveEndpoint } from './resolve.js';

const temp = tempDirs();

async function conf(text: string, dropIns: Record<string, string> = {}): Promise<RegistriesConf> {
  const dir = await temp('stowage-conf-');
  const path = join(dir, 'registries.conf');
  await writeFile(path, text);
  if (Object.keys(dropIns).length > 0) {
    await mkdir(`${path}.d`);
    for (const [n, t] of Object.entries(dropIns)) await writeFile(join(`${path}.d`, n), t);
  }
  return loadRegistriesConf(path);
}

describe('registries.conf', () => {
  it('chooses the longest matching prefix and rewrites the location', async () => {
    const c = await conf(`
[[registry]]
location = "reg.local"
insecure = true

[[registry]]
prefix = "reg.local/team"
location = "mirror.local:5000/copies/team"

[[registry]]
prefix = "*.corp.local"
blocked = true
`);
    expect(resolveEndpoint(c, parseReference('reg.local/other/app'))).toEqual({
      host: 'reg.local',
      path: 'other/app',
      insecure: true,
    });
    expect(resolveEndpoint(c, parseReference('reg.local/team/app'))).toEqual({
      host: 'mirror.local:5000',
      path: 'copies/team/app',
      insecure: false,
    });
    // a prefix matches whole path components only
    expect(findRegistry(c, parseReference('reg.local/teamx/app'))?.prefix).toBeUndefined();
    expect(() => resolveEndpoint(c, parseReference('a.corp.local/app'))).toThrowError('blocked');
    expect(resolveEndpoint(c, parseReference('corp.local/app')).host).toBe('corp.local');
    expect(resolveEndpoint(c, parseReference('other.local/app'), true).insecure).toBe(true);
  });

  it('merges drop-ins in order, later entries replacing earlier ones with the same prefix', async () => {
    const c = await conf(
      'unqualified-search-registries = ["a.local"]\n[[registry]]\nlocation = "x.local"\nblocked = true\n',
      {
        '10-a.conf':
          '[[registry]]\nlocation = "x.local"\nblocked = false\n[aliases]\n"tool" = "b.local/tools/tool"\n',
        '20-b.conf': 'short-name-mode = "permissive"\n',
        'ignored.txt': 'not toml',
      },
    );
    expect(c.sources.map((s) => s.split('/').pop())).toEqual(['registries.conf', '10-a.conf', '20-b.conf']);
    expect(() => resolveEndpoint(c, parseReference('x.local/app'))).not.toThrow();
    expect(c.shortNameMode).toBe('permissive');
    expect(resolveCandidates(c, parseReference('tool:1')).map(formatReference)).toEqual([
      'b.local/tools/tool:1',
    ]);
  });

  it('resolves short names through search registries, refusing ambiguity in enforcing mode', async () => {
    const one = await conf('unqualified-search-registries = ["reg.local:5000"]\n');
    expect(resolveCandidates(one, parseReference('app:1')).map(formatReference)).toEqual([
      'reg.local:5000/app:1',
    ]);
    const two = await conf(
      'unqualified-search-registries = ["a.local", "b.local"]\nshort-name-mode = "enforcing"\n',
    );
    expect(() => resolveCandidates(two, parseReference('app'))).toThrowError(
      /ambiguous.*a\.local\/app.*b\.local\/app/,
    );
    const permissive = await conf(
      'unqualified-search-registries = ["a.local", "docker.io"]\nshort-name-mode = "permissive"\n',
    );
    expect(resolveCandidates(permissive, parseReference('app')).map(formatReference)).toEqual([
      'a.local/app',
      'docker.io/library/app',
    ]);
    // As podman: no alias and no search registries is an error, not a silent docker.io.
    const none = await conf('');
    expect(() => resolveCandidates(none, parseReference('app'))).toThrowError(
      /short name "app" has no alias and no unqualified-search-registries are defined in .*registries\.conf/,
    );
    // The default mode is permissive: several search registries are tried in order.
    const unset = await conf('unqualified-search-registries = ["a.local", "b.local"]\n');
    expect(unset.shortNameMode).toBe('permissive');
    expect(resolveCandidates(unset, parseReference('app')).map(formatReference)).toEqual([
      'a.local/app',
      'b.local/app',
    ]);
  });

  it('uses aliases in every mode, tag and digest carried over; a later "" erases one', async () => {
    for (const mode of ['enforcing', 'permissive', 'disabled']) {
      const c = await conf(
        `short-name-mode = "${mode}"\nunqualified-search-registries = ["a.local", "b.local"]\n[aliases]\n"app" = "c.local/team/app"\n`,
      );
      expect(resolveCandidates(c, parseReference('app:2')).map(formatReference)).toEqual([
        'c.local/team/app:2',
      ]);
    }
    const erased = await conf(
      'unqualified-search-registries = ["a.local"]\n[aliases]\n"app" = "c.local/app"\n',
      {
        '50-erase.conf': '[aliases]\n"app" = ""\n',
      },
    );
    expect(resolveCandidates(erased, parseReference('app')).map(formatReference)).toEqual(['a.local/app']);
  });

  it('lists mirrors before the primary, honouring pull-from-mirror and mirror-by-digest-only', async () => {
    const c = await conf(`
[[registry]]
prefix = "src.local/team"
location = "primary.local/team"

[[registry.mirror]]
location = "m1.local/cache/team"
insecure = true

[[registry.mirror]]
location = "m2.local/team"
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "m3.local/team"
pull-from-mirror = "tag-only"

[[registry]]
location = "old.local"
mirror-by-digest-only = true

[[registry.mirror]]
location = "oldmirror.local"
`);
    const where = (r: string) =>
      pullEndpoints(c, parseReference(r)).map(
        (e) => `${e.host}/${e.path}${e.mirror ? ' m' : ''}${e.insecure ? ' i' : ''}`,
      );
    const digest = `@sha256:${'a'.repeat(64)}`;
    expect(where('src.local/team/app:1')).toEqual([
      'm1.local/cache/team/app m i',
      'm3.local/team/app m',
      'primary.local/team/app',
    ]);
    expect(where(`src.local/team/app${digest}`)).toEqual([
      'm1.local/cache/team/app m i',
      'm2.local/team/app m',
      'primary.local/team/app',
    ]);
    expect(where('old.local/x:1')).toEqual(['old.local/x']);
    expect(where(`old.local/x${digest}`)).toEqual(['oldmirror.local/x m', 'old.local/x']);
  });

  it('names the file, key and line of mistakes', () => {
    expect(() =>
      parseRegistriesConf('[[registry]]\nlocation = "a"\ninsecure = "yes"\n', 'f.conf'),
    ).toThrowError(/f\.conf: key "registry\.0\.insecure"/);
    expect(() => parseRegistriesConf('x = [\n', 'f.conf')).toThrowError(/f\.conf: not valid TOML at line/);
    expect(() => parseRegistriesConf('[[registry]]\ninsecure = true\n', 'f.conf')).toThrowError(
      'prefix or a location',
    );
  });

  it('complains about an explicit file that does not exist', async () => {
    await expect(loadRegistriesConf('/nonexistent/registries.conf')).rejects.toThrowError('does not exist');
  });
});

describe('registries.conf.example', () => {
  it('loads, and resolves as its comments say', async () => {
    const c = await loadRegistriesConf(join(import.meta.dirname, '../../registries.conf.example'));
    expect(resolveCandidates(c, parseReference('tools/builder:1')).map(formatReference)).toEqual([
      'registry.internal.test/platform/builder:1',
    ]);
    expect(
      pullEndpoints(c, parseReference('registry.internal.test/team/app:1')).map((e) => `${e.host}/${e.path}`),
    ).toEqual(['cache.internal.test/team/app', 'mirror.internal.test:5443/copies/team/app']);
    expect(() => resolveEndpoint(c, parseReference('registry.internal.test/quarantine/x'))).toThrowError(
      'blocked',
    );
    expect(() => resolveEndpoint(c, parseReference('a.untrusted.test/x'))).toThrowError('blocked');
  });
});

describe('short-name-aliases.conf', () => {
  it('overrides registries.conf aliases, as podman records them', async () => {
    const c = await conf('[aliases]\n"app" = "a.local/team/app"\n"tool" = "a.local/tool"\n');
    const dir = await temp('stowage-alias-');
    const cache = join(dir, 'short-name-aliases.conf');
    await writeFile(cache, '[aliases]\n"app" = "b.local/picked/app"\n');
    await mergeAliasCache(c, cache);
    expect(resolveCandidates(c, parseReference('app:1')).map(formatReference)).toEqual([
      'b.local/picked/app:1',
    ]);
    expect(resolveCandidates(c, parseReference('tool')).map(formatReference)).toEqual(['a.local/tool']);
    expect(c.sources.at(-1)).toBe(cache);
  });
});
