import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatReference, parseReference } from '../reference/reference.js';
import { loadRegistriesConf, parseRegistriesConf, type RegistriesConf } from './registries.js';
import { findRegistry, resolveCandidates, resolveEndpoint } from './resolve.js';

async function conf(text: string, dropIns: Record<string, string> = {}): Promise<RegistriesConf> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-conf-'));
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
    const two = await conf('unqualified-search-registries = ["a.local", "b.local"]\n');
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
    const none = await conf('');
    expect(resolveCandidates(none, parseReference('app')).map(formatReference)).toEqual([
      'docker.io/library/app',
    ]);
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
