import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RegistryClient } from '../src/registry/client.js';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';

const h = harness();

describe('basic auth registry', () => {
  const reg = h.registries.basic;
  const ref = `${reg.host}/fixtures/small:v1`;

  it('says so when a plain HTTP registry is not marked insecure', async () => {
    const w = await workdir('plain-not-insecure');
    const r = await stowage(
      ['pull', `${h.registries.plain.host}/fixtures/small:v1`, '-o', join(w.dir, 'a.tar')],
      { env: w.env },
    );
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/does not answer with TLS .*insecure/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('pulls with --creds', async () => {
    const w = await workdir('basic-creds', insecureConf(reg.host));
    const r = await stowage(
      ['pull', '-q', '--creds', `${h.user}:${h.password}`, ref, '-o', join(w.dir, 'a.tar')],
      { env: w.env },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('reads credentials from auth.json (--authfile, $REGISTRY_AUTH_FILE, ~/.docker/config.json)', async () => {
    const w = await workdir('basic-authfile', insecureConf(reg.host));
    const auth = Buffer.from(`${h.user}:${h.password}`).toString('base64');
    const authfile = join(w.dir, 'auth.json');
    await writeFile(authfile, JSON.stringify({ auths: { [`${reg.host}/fixtures`]: { auth } } }));
    let r = await stowage(['pull', '-q', '--authfile', authfile, ref, '-o', join(w.dir, 'a.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(0);
    r = await stowage(['pull', '-q', ref, '-o', join(w.dir, 'b.tar')], {
      env: { ...w.env, REGISTRY_AUTH_FILE: authfile },
    });
    expect(r.code).toBe(0);
    await mkdir(join(w.env.HOME!, '.docker'));
    await writeFile(
      join(w.env.HOME!, '.docker/config.json'),
      JSON.stringify({ auths: { [`http://${reg.host}`]: { auth } } }),
    );
    r = await stowage(['pull', '-q', ref, '-o', join(w.dir, 'c.tar')], { env: w.env });
    expect(r.code).toBe(0);
  });

  it('fails clearly without credentials and with a wrong password, printing no secret', async () => {
    const w = await workdir('basic-bad', insecureConf(reg.host));
    const none = await stowage(['pull', ref, '-o', join(w.dir, 'a.tar')], { env: w.env });
    expect(none.code).toBe(4);
    expect(none.stderr).toMatch(/requires authentication.*--creds/);
    const wrong = 'Wr0ng-Secret-Value';
    const bad = await stowage(['pull', '--creds', `${h.user}:${wrong}`, ref, '-o', join(w.dir, 'b.tar')], {
      env: w.env,
    });
    expect(bad.code).toBe(4);
    expect(bad.stderr).toMatch(/rejected the credentials/);
    expect(bad.stderr + bad.stdout).not.toContain(wrong);
    expect(bad.stderr + bad.stdout).not.toContain(Buffer.from(`${h.user}:${wrong}`).toString('base64'));
    expect((await readdir(w.dir)).filter((f) => f.endsWith('.tar') || f.includes('partial'))).toEqual([]);
  });
});

describe('TLS registry', () => {
  const reg = h.registries.tls;
  const ref = `${reg.host}/fixtures/multi:v1`;

  it('verifies the certificate with --cert-dir and with certs.d', async () => {
    const w = await workdir('tls-ca');
    let r = await stowage(['pull', '-q', '--cert-dir', h.caDir, ref, '-o', join(w.dir, 'a.tar')], {
      env: w.env,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const certsd = join(w.env.HOME!, '.config/containers/certs.d', reg.host);
    await mkdir(certsd, { recursive: true });
    await run('cp', [join(h.caDir, 'ca.crt'), join(certsd, 'ca.crt')]);
    r = await stowage(['pull', '-q', ref, '-o', join(w.dir, 'b.tar')], { env: w.env });
    expect(r.code).toBe(0);
  });

  it('refuses an unknown certificate unless told not to verify', async () => {
    const w = await workdir('tls-unknown');
    const r = await stowage(['pull', ref, '-o', join(w.dir, 'a.tar')], { env: w.env });
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/TLS connection to 127\.0\.0\.1:\d+ failed.*--cert-dir/);
    expect(await readdir(w.dir)).not.toContain('a.tar');
    const ok = await stowage(['pull', '-q', '--tls-verify=false', ref, '-o', join(w.dir, 'b.tar')], {
      env: w.env,
    });
    expect(ok.code).toBe(0);
  });
});

describe('token auth registry', () => {
  const reg = h.registries.token;

  it('pulls anonymously with a pull-only token', async () => {
    const w = await workdir('token-anon', insecureConf(reg.host));
    const r = await stowage(
      ['pull', '-q', '--all', `${reg.host}/fixtures/multiarch:v1`, '-o', join(w.dir, 'a.tar')],
      { env: w.env },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const tags = await stowage(['tags', `${reg.host}/fixtures/small`], { env: w.env });
    expect(tags.code).toBe(0);
    expect(JSON.parse(tags.stdout)).toEqual({ Repository: `${reg.host}/fixtures/small`, Tags: ['v1'] });
  });

  it('pulls with credentials and rejects wrong ones without printing them', async () => {
    const w = await workdir('token-creds', insecureConf(reg.host));
    const ref = `${reg.host}/fixtures/small:v1`;
    const ok = await stowage(
      ['pull', '-q', '--creds', `${h.user}:${h.password}`, ref, '-o', join(w.dir, 'a.tar')],
      { env: w.env },
    );
    expect(ok.code).toBe(0);
    const wrong = 'not-the-token-password';
    const bad = await stowage(['pull', '--creds', `${h.user}:${wrong}`, ref, '-o', join(w.dir, 'b.tar')], {
      env: w.env,
    });
    expect(bad.code).toBe(4);
    expect(bad.stderr).toMatch(/token service .* rejected the credentials/);
    expect(bad.stderr + bad.stdout).not.toContain(wrong);
  });
});

describe('credentials looked for late (the OS keyring)', () => {
  // A client without credentials of its own asks `lateCredentials` for a repository's only once the
  // registry asks for authentication: Context hands it the keyring lookup.
  const late = () => {
    const asked: string[] = [];
    const lookup = async (repository: string) => {
      asked.push(repository);
      return { kind: 'basic' as const, username: h.user, password: h.password };
    };
    return { asked, lookup };
  };

  it('never asks for a registry that wants none', async () => {
    const { asked, lookup } = late();
    const client = new RegistryClient({
      host: h.registries.plain.host,
      insecure: true,
      lateCredentials: lookup,
    });
    try {
      expect((await client.getManifest('fixtures/small', 'v1')).digest).toMatch(/^sha256:/);
      expect(asked).toEqual([]);
    } finally {
      await client.close();
    }
  });

  it('asks once per repository when the registry challenges (basic auth, token auth)', async () => {
    for (const reg of [h.registries.basic, h.registries.token]) {
      const { asked, lookup } = late();
      const client = new RegistryClient({ host: reg.host, insecure: true, lateCredentials: lookup });
      try {
        await client.getManifest('fixtures/small', 'v1');
        await client.getManifest('fixtures/multi', 'v1');
        await client.getManifest('fixtures/small', 'v1');
        expect(asked).toEqual(['fixtures/small', 'fixtures/multi']);
      } finally {
        await client.close();
      }
    }
  });

  it('asks when a registry that let its ping through refuses a request', async () => {
    // A proxy answers GET /v2/ itself (as a registry allowing anonymous access to it would), so the
    // first 401 comes with the manifest request.
    const proxy = await startFaultProxy({
      upstream: h.registries.basic.url,
      fault: (req) => (req.url === '/v2/' ? { kind: 'status', status: 200 } : undefined),
    });
    const { asked, lookup } = late();
    const client = new RegistryClient({ host: proxy.host, insecure: true, lateCredentials: lookup });
    try {
      expect((await client.getManifest('fixtures/small', 'v1')).digest).toMatch(/^sha256:/);
      expect(asked).toEqual(['fixtures/small']);
    } finally {
      await client.close();
      await proxy.close();
    }
  });
});
