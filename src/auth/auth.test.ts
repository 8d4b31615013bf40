import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { authFileCandidates, lookupCredentials, normalizeAuthKey, parseCredsOption } from './authfile.js';
import { parseChallenges } from './challenge.js';

const temp = tempDirs();

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('auth.json lookup', () => {
  it('matches the most specific key first and normalises legacy Docker Hub keys', async () => {
    const dir = await temp('stowage-auth-');
    const file = join(dir, 'auth.json');
    await writeFile(
      file,
      JSON.stringify({
        auths: {
          'reg.local': { auth: b64('host:pw1') },
          'reg.local/team': { auth: b64('team:pw2') },
          'reg.local/team/app': { auth: b64('app:pw:with:colons') },
          'https://index.docker.io/v1/': { auth: b64('hub:pw4') },
          'tok.local': { auth: b64('u:'), identitytoken: 'refresh-me' },
        },
      }),
    );
    const env = { HOME: dir };
    expect(await lookupCredentials('reg.local', 'team/app', file, env)).toEqual({
      kind: 'basic',
      username: 'app',
      password: 'pw:with:colons',
    });
    expect(await lookupCredentials('reg.local', 'team/other', file, env)).toMatchObject({ username: 'team' });
    expect(await lookupCredentials('reg.local', 'x/y', file, env)).toMatchObject({ username: 'host' });
    expect(await lookupCredentials('docker.io', 'library/alpine', file, env)).toMatchObject({
      username: 'hub',
    });
    expect(await lookupCredentials('tok.local', 'a', file, env)).toEqual({
      kind: 'identityToken',
      token: 'refresh-me',
      username: 'u',
    });
    expect(await lookupCredentials('none.local', 'a', file, env)).toBeUndefined();
  });

  it('searches the standard locations in order', () => {
    expect(
      authFileCandidates(undefined, { HOME: '/h', REGISTRY_AUTH_FILE: '/r.json', XDG_RUNTIME_DIR: '/run/u' }),
    ).toEqual([
      '/r.json',
      '/run/u/containers/auth.json',
      '/h/.config/containers/auth.json',
      '/h/.docker/config.json',
      '/h/.dockercfg',
    ]);
    expect(authFileCandidates('/explicit.json', { HOME: '/h' })).toEqual(['/explicit.json']);
    expect(normalizeAuthKey('https://reg.local:5000/v2/')).toBe('reg.local:5000');
  });

  it('reports a broken auth file without its contents', async () => {
    const dir = await temp('stowage-auth-');
    const file = join(dir, 'auth.json');
    await writeFile(file, '{"auths": {"reg.local": {"auth": "bm9jb2xvbg=="}}}');
    await expect(lookupCredentials('reg.local', 'a', file, { HOME: dir })).rejects.toThrowError(
      /not base64 of user:password/,
    );
    await writeFile(file, 'secret-garbage');
    const err = await lookupCredentials('reg.local', 'a', file, { HOME: dir }).catch((e: Error) => e);
    expect(String(err)).toContain('not valid JSON');
    expect(String(err)).not.toContain('secret-garbage');
  });

  it('parses --creds', () => {
    expect(parseCredsOption('u:p:q')).toEqual({ kind: 'basic', username: 'u', password: 'p:q' });
    expect(() => parseCredsOption('nouser')).toThrowError('USERNAME:PASSWORD');
  });
});

describe('WWW-Authenticate', () => {
  it('parses Bearer and Basic challenges with quoted values', () => {
    expect(
      parseChallenges(
        'Bearer realm="https://auth.local/token",service="registry.local",scope="repository:a/b:pull,push"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.local/token',
          service: 'registry.local',
          scope: 'repository:a/b:pull,push',
        },
      },
    ]);
    expect(parseChallenges('Basic realm="basic-realm"')).toEqual([
      { scheme: 'basic', params: { realm: 'basic-realm' } },
    ]);
    expect(parseChallenges(['Basic realm=x, Bearer realm="y", error="invalid_token"'])).toEqual([
      { scheme: 'basic', params: { realm: 'x' } },
      { scheme: 'bearer', params: { realm: 'y', error: 'invalid_token' } },
    ]);
    expect(parseChallenges(undefined)).toEqual([]);
  });
});
