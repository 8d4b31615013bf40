import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { Authenticator } from './authenticator.js';
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

describe('Authenticator challenges', () => {
  /** A token service in memory: every realm but the refused one hands out a token naming itself. */
  function authenticator(asked: string[]) {
    const dispatcher = {
      request: async (o: { origin: string; path: string }) => {
        asked.push(`${o.origin}${o.path}`);
        return {
          statusCode: 200,
          headers: {},
          body: { text: async () => JSON.stringify({ token: `from-${new URL(o.origin).hostname}` }) },
        };
      },
    } as unknown as ConstructorParameters<typeof Authenticator>[0]['dispatcher'];
    return new Authenticator({
      host: 'r.test',
      dispatcher,
      insecure: false,
      userAgent: 'test',
      guard: (url) =>
        url.hostname === 'refused.test' ? 'is not in allow-registries or auth-hosts' : undefined,
    });
  }

  it('keeps a repository’s own realm to that repository: its refusal fails no other', async () => {
    const asked: string[] = [];
    const auth = authenticator(asked);
    auth.setChallenge('Bearer realm="https://tokens.test/token",service="r"');
    auth.setChallenge('Bearer realm="https://refused.test/token",service="r"', 'repository:team/odd:pull');
    await expect(auth.authorization('repository:team/odd:pull')).rejects.toThrow(
      /sends clients for tokens to refused\.test, which is not in allow-registries/,
    );
    expect(await auth.authorization('repository:team/app:pull')).toBe('Bearer from-tokens.test');
    expect(asked).toEqual(['https://tokens.test/token?service=r&scope=repository%3Ateam%2Fapp%3Apull']);
  });

  it('lets a repository without a challenge of its own go without one when /v2/ asked for none', async () => {
    const auth = authenticator([]);
    auth.setChallenge('Bearer realm="https://refused.test/token"', 'repository:team/odd:pull');
    expect(auth.challenged).toBe(true);
    // Anonymous repositories of the registry are asked anonymously, not sent to the refused realm.
    expect(await auth.authorization('repository:public/app:pull')).toBeUndefined();
  });
});
