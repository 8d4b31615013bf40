/**
 * Flags spelled and behaving as skopeo's (issue 24), each run against the real registries and, where
 * skopeo has the same flag, against skopeo with the same arguments: a bare --tls-verify means true and
 * does not take the image for its value; --debug shows the registry requests; inspect --format renders
 * the same text as skopeo's Go templates; --digestfile writes the same digest; copy takes an auth.json
 * and a CA directory per side.
 */
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, learntLocations, locationsDir, stowage, workdir } from './harness/cli.js';
import { startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';

const h = harness();
const plain = h.registries.plain;
const tls = h.registries.tls;
const basic = h.registries.basic;

async function skopeo(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string }> {
  return run('skopeo', args, { env }).then(
    (r) => ({ code: 0, stdout: r.stdout }),
    (e: { code?: number; stdout?: string }) => ({
      code: typeof e.code === 'number' ? e.code : 1,
      stdout: e.stdout ?? '',
    }),
  );
}

/** The small fixture put on the basic-auth registry with skopeo, and an auth.json that opens it. */
async function onBasicRegistry(w: { dir: string; env: NodeJS.ProcessEnv }, repository: string) {
  const authfile = join(w.dir, 'basic-auth.json');
  const auth = Buffer.from(`${h.user}:${h.password}`).toString('base64');
  await writeFile(authfile, JSON.stringify({ auths: { [basic.host]: { auth } } }));
  const ref = `docker://${basic.host}/${repository}:v1`;
  await run(
    'skopeo',
    [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      '--dest-authfile',
      authfile,
      `docker://${plain.host}/fixtures/small:v1`,
      ref,
    ],
    { env: w.env },
  );
  return { authfile, ref, basicAuth: auth };
}

describe('skopeo flags', () => {
  it('reads a bare --tls-verify as true, without taking the image for its value', async () => {
    const w = await workdir('bare-tls-verify', '');
    const ref = `docker://${tls.host}/fixtures/small:v1`;
    const args = ['inspect', '--tls-verify', '--cert-dir', h.caDir, ref];
    const r = await stowage(args, { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).Digest).toBe(h.fixtures.images.small!.digest);
    expect((await skopeo(args, w.env)).code).toBe(0);
    // True means a verified certificate: without the CA it is refused, by both.
    const refused = await stowage(['inspect', '--tls-verify', ref], { env: w.env });
    expect(refused.code).not.toBe(0);
    expect((await skopeo(['inspect', '--tls-verify', ref], w.env)).code).not.toBe(0);
    // The spelled-out forms still work.
    for (const form of [['--tls-verify=false'], ['--tls-verify', 'false']]) {
      const ok = await stowage(['inspect', ...form, `docker://${plain.host}/fixtures/small:v1`], {
        env: w.env,
      });
      expect(ok.code, ok.stderr).toBe(0);
    }
  });

  it('copy takes --tls-verify=false for both sides, as skopeo does, and a side’s own flag wins', async () => {
    // registries.conf marks nothing insecure: the plain-HTTP registry is reachable only with the flag.
    const w = await workdir('copy-tls-verify', '');
    const src = `docker://${plain.host}/fixtures/small:v1`;
    const dst = `docker://${plain.host}/copy-tls-verify/small:v1`;
    const refused = await stowage(['copy', '-q', src, dst], { env: w.env });
    expect(refused.code).not.toBe(0);
    const ok = await stowage(['copy', '-q', '--tls-verify=false', src, dst], { env: w.env });
    expect(ok.code, ok.stderr).toBe(0);
    expect((await skopeo(['copy', '--tls-verify=false', src, `${dst}-sk`], w.env)).code).toBe(0);
    const inspected = await stowage(['inspect', '--tls-verify=false', dst], { env: w.env });
    expect(JSON.parse(inspected.stdout).Digest).toBe(h.fixtures.images.small!.digest);
    // The destination's own flag wins over the global one: it must verify, and plain HTTP cannot.
    const sided = await stowage(['copy', '-q', '--tls-verify=false', '--dest-tls-verify=true', src, dst], {
      env: w.env,
    });
    expect(sided.code).not.toBe(0);
  });

  it('--debug shows each registry request on stderr, wherever it is given', async () => {
    const w = await workdir('debug', insecureConf(plain.host));
    const ref = `docker://${plain.host}/fixtures/small:v1`;
    for (const args of [
      ['--debug', 'inspect', ref],
      ['inspect', '--debug', ref],
    ]) {
      const r = await stowage(args, { env: w.env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        new RegExp(`debug: GET ${plain.host.replace(/\./g, '\\.')} -> 200 in \\d+ ms`),
      );
    }
    expect((await stowage(['inspect', ref], { env: w.env })).stderr).not.toContain('debug:');
  });

  it('inspect --format renders as skopeo renders the same template', async () => {
    const w = await workdir('inspect-format', insecureConf(plain.host));
    const ref = `docker://${plain.host}/fixtures/multi:v1`;
    for (const template of [
      '{{.Digest}}',
      'Name: {{.Name}} Digest: {{.Digest}}',
      '{{.Architecture}}/{{.Os}} {{len .Layers}} layers',
      '{{range .Layers}}{{.}} {{end}}',
      '{{index .Labels "fixture"}}',
      '{{.RepoTags}}',
    ]) {
      const ours = await stowage(['inspect', '--format', template, ref], { env: w.env });
      expect(ours.code, ours.stderr).toBe(0);
      const theirs = await skopeo(['inspect', '--tls-verify=false', '--format', template, ref], w.env);
      expect(theirs.code).toBe(0);
      expect(ours.stdout, template).toBe(theirs.stdout);
    }
    const bad = await stowage(['inspect', '--format', '{{printf "%s" .Digest}}', ref], { env: w.env });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('is not supported');
  });

  it('--retry-delay waits that long between retries, and takes Go durations', async () => {
    // Two 503s, then the registry's answer: counted, and timed, at a proxy.
    const proxy = await startFaultProxy({
      upstream: `http://${plain.host}`,
      fault: (req, n) =>
        req.url?.includes('/manifests/') && n <= 2 ? { kind: 'status', status: 503 } : undefined,
    });
    try {
      const w = await workdir('retry-delay', insecureConf(proxy.host));
      const r = await stowage(
        [
          'inspect',
          '--retry-delay',
          '1.5s',
          '--format',
          '{{.Digest}}',
          `docker://${proxy.host}/fixtures/small:v1`,
        ],
        {
          env: w.env,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      const first = proxy.seen.find((x) => x.path.includes('/manifests/'))!;
      const manifestTries = proxy.seen.filter((x) => x.path === first.path && x.method === first.method);
      expect(manifestTries.length).toBeGreaterThanOrEqual(3);
      // At least the delay between the failed attempts and the next (a lower bound: never a speed check).
      for (let i = 1; i < 3; i++)
        expect(manifestTries[i]!.at - manifestTries[i - 1]!.at).toBeGreaterThanOrEqual(1400);
      const bad = await stowage(
        ['inspect', '--retry-delay', 'soon', `docker://${proxy.host}/fixtures/small:v1`],
        { env: w.env },
      );
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('1m30s');
    } finally {
      await proxy.close();
    }
  });

  it('--digestfile holds the digest written, as skopeo writes it', async () => {
    const w = await workdir('digestfile', insecureConf(plain.host));
    const src = `docker://${plain.host}/fixtures/small:v1`;
    const ours = join(w.dir, 'ours.digest');
    const theirs = join(w.dir, 'theirs.digest');
    const r = await stowage(
      ['copy', '-q', '--digestfile', ours, src, `docker://${plain.host}/digestfile/ours:v1`],
      {
        env: w.env,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    const s = await skopeo(
      [
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        '--dest-tls-verify=false',
        '--digestfile',
        theirs,
        src,
        `docker://${plain.host}/digestfile/theirs:v1`,
      ],
      w.env,
    );
    expect(s.code).toBe(0);
    expect(await readFile(ours, 'utf8')).toBe(await readFile(theirs, 'utf8'));
    expect(await readFile(ours, 'utf8')).toBe(h.fixtures.images.small!.digest);
    // push and copy to an archive write it too.
    const archive = join(w.dir, 'small.tar');
    const pulledDigest = join(w.dir, 'pulled.digest');
    expect(
      (
        await stowage(['copy', '-q', '--digestfile', pulledDigest, src, `oci-archive:${archive}`], {
          env: w.env,
        })
      ).code,
    ).toBe(0);
    expect(await readFile(pulledDigest, 'utf8')).toBe(h.fixtures.images.small!.digest);
    const pushedDigest = join(w.dir, 'pushed.digest');
    const pushed = await stowage(
      ['push', '-q', '--digestfile', pushedDigest, archive, `${plain.host}/digestfile/pushed:v1`],
      {
        env: w.env,
      },
    );
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(await readFile(pushedDigest, 'utf8')).toBe(h.fixtures.images.small!.digest);
  });

  it('copy takes an auth.json and a CA directory for each side', async () => {
    const w = await workdir('per-side', insecureConf(plain.host, basic.host));
    const { authfile: srcAuth, ref: onBasic } = await onBasicRegistry(w, 'per-side/src');
    const dest = `docker://${tls.host}/per-side/dest:v1`;
    const denied = await stowage(['copy', '-q', '--dest-cert-dir', h.caDir, onBasic, dest], { env: w.env });
    expect(denied.code).toBe(4);
    const ok = await stowage(
      ['copy', '-q', '--src-authfile', srcAuth, '--dest-cert-dir', h.caDir, onBasic, dest],
      {
        env: w.env,
      },
    );
    expect(ok.code, ok.stderr).toBe(0);
    const inspected = await stowage(['inspect', '--cert-dir', h.caDir, '--format', '{{.Digest}}', dest], {
      env: w.env,
    });
    expect(inspected.stdout.trim()).toBe(h.fixtures.images.small!.digest);
  });

  it('--no-creds reads anonymously and --registry-token sends a bearer token as it is, like skopeo', async () => {
    const w = await workdir('creds-flags', insecureConf(plain.host, basic.host, h.registries.token.host));
    const { authfile, ref, basicAuth } = await onBasicRegistry(w, 'creds-flags/app');
    expect((await stowage(['inspect', '--authfile', authfile, ref], { env: w.env })).code).toBe(0);
    const anonymous = await stowage(['inspect', '--authfile', authfile, '--no-creds', ref], { env: w.env });
    expect(anonymous.code).toBe(4);
    expect(
      (await skopeo(['inspect', '--tls-verify=false', '--authfile', authfile, '--no-creds', ref], w.env))
        .code,
    ).not.toBe(0);

    // A push token from the token service, got by hand, as a CI system hands one over.
    const tokenHost = h.registries.token.host;
    const url = new URL(h.tokenServerUrl);
    url.searchParams.set('service', 'test-registry');
    url.searchParams.set('scope', 'repository:creds-flags/pushed:pull,push');
    const res = await fetch(url, { headers: { authorization: `Basic ${basicAuth}` } });
    const { token } = (await res.json()) as { token: string };
    const dest = `docker://${tokenHost}/creds-flags/pushed:v1`;
    const src = `docker://${plain.host}/fixtures/small:v1`;
    const denied = await stowage(['copy', '-q', src, dest], { env: w.env });
    expect(denied.code).toBe(4);
    const pushed = await stowage(['copy', '-q', '--dest-registry-token', token, src, dest], { env: w.env });
    expect(pushed.code, pushed.stderr).toBe(0);
    const both = await stowage(['inspect', '--creds', 'a:b', '--registry-token', token, src], { env: w.env });
    expect(both.code).toBe(2);
  });

  it('--creds USER without a terminal to ask on says what to do instead', async () => {
    const w = await workdir('creds-prompt', insecureConf(basic.host));
    const piped = await stowage(['inspect', '--creds', h.user, `docker://${basic.host}/fixtures/small:v1`], {
      env: w.env,
      input: `${h.password}\n`,
    });
    expect(piped.code).toBe(2);
    expect(piped.stderr).toContain('no terminal to ask on');
  });

  it('--additional-tag names a docker-archive image more than once, as skopeo does', async () => {
    const w = await workdir('additional-tag', insecureConf(plain.host));
    const src = `docker://${plain.host}/fixtures/small:v1`;
    const repoTags = async (file: string) =>
      JSON.parse((await run('tar', ['-xOf', file, 'manifest.json'])).stdout)[0].RepoTags as string[];
    const ours = join(w.dir, 'ours.tar');
    const theirs = join(w.dir, 'theirs.tar');
    const dest = (f: string) => `docker-archive:${f}:team/app:1.0`;
    const extra = ['--additional-tag', 'team/app:latest', '--additional-tag', 'registry.invalid/app:1'];
    const r = await stowage(['copy', '-q', ...extra, src, dest(ours)], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    expect(
      (await skopeo(['copy', '--quiet', '--src-tls-verify=false', ...extra, src, dest(theirs)], w.env)).code,
    ).toBe(0);
    expect(await repoTags(ours)).toEqual(await repoTags(theirs));
    expect(await repoTags(ours)).toEqual([
      'docker.io/team/app:1.0',
      'docker.io/team/app:latest',
      'registry.invalid/app:1',
    ]);
    const refused = await stowage(['copy', '-q', ...extra, src, `oci-archive:${join(w.dir, 'x.tar')}`], {
      env: w.env,
    });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('docker-archive');
  });

  it('--preserve-digests keeps digests where it can and fails before writing where it cannot, like skopeo', async () => {
    const w = await workdir('preserve-digests', insecureConf(plain.host));
    const src = `docker://${plain.host}/fixtures/small:v1`;
    const small = h.fixtures.images.small!.digest;
    const tls = ['--src-tls-verify=false', '--dest-tls-verify=false'];
    const digestOf = async (ref: string) =>
      JSON.parse((await run('skopeo', ['inspect', '--tls-verify=false', ref], { env: w.env })).stdout)
        .Digest as string;
    // Registry to registry: the digest is the source's.
    const kept = `docker://${plain.host}/preserve/small:v1`;
    const copied = await stowage(['copy', '-q', '--preserve-digests', src, kept], { env: w.env });
    expect(copied.code, copied.stderr).toBe(0);
    expect(await digestOf(kept)).toBe(small);

    // A docker-archive keeps no manifest: both refuse, and stowage leaves no file behind.
    const archive = join(w.dir, 'small.tar');
    const toArchive = await stowage(['copy', '-q', '--preserve-digests', src, `docker-archive:${archive}`], {
      env: w.env,
    });
    expect(toArchive.code).toBe(6);
    expect(toArchive.stderr).toContain('a docker-archive keeps no manifest');
    await expect(stat(archive)).rejects.toThrow();
    const theirs = join(w.dir, 'theirs.tar');
    expect(
      (await skopeo(['copy', ...tls, '--preserve-digests', src, `docker-archive:${theirs}`], w.env)).code,
    ).not.toBe(0);

    // skopeo's docker-archive pushed where stowage knows of no repository holding its layers (the
    // locations the copy above learnt, forgotten): they would be compressed under a new manifest, so
    // stowage refuses (in a dry run too) and sends nothing; --compress none keeps the digest stowage
    // reads for it.
    await rm(locationsDir(w.env), { recursive: true });
    const saved = join(w.dir, 'saved.tar');
    await run('skopeo', ['copy', '--quiet', ...tls, src, `docker-archive:${saved}:preserve/saved:v1`], {
      env: w.env,
    });
    const target = `${plain.host}/preserve/from-archive:v1`;
    for (const extra of [[], ['--dry-run']]) {
      const refused = await stowage(['push', '-q', '--preserve-digests', ...extra, saved, target], {
        env: w.env,
      });
      expect(refused.code, refused.stderr).toBe(6);
      expect(refused.stderr).toContain('--compress none sends them as they are');
    }
    await expect(digestOf(`docker://${target}`)).rejects.toThrow();
    const gzip = await stowage(['push', '-q', '--preserve-digests', '--compress', 'gzip', saved, target], {
      env: w.env,
    });
    expect(gzip.code).toBe(2);
    const plainLayers = await stowage(
      ['push', '-q', '--preserve-digests', '--compress', 'none', saved, target],
      { env: w.env },
    );
    expect(plainLayers.code, plainLayers.stderr).toBe(0);
    const read = await stowage(['inspect', `docker-archive:${saved}`], { env: w.env });
    expect(await digestOf(`docker://${target}`)).toBe(JSON.parse(read.stdout).images[0].digest);

    // stowage's own docker-archive of an image it pulled goes back with the original digest, where the
    // registry has its layers.
    const ours = join(w.dir, 'ours.tar');
    expect((await stowage(['copy', '-q', src, `docker-archive:${ours}`], { env: w.env })).code).toBe(0);
    const back = `${plain.host}/preserve/small:round-trip`;
    const restored = await stowage(['push', '-q', '--preserve-digests', ours, back], { env: w.env });
    expect(restored.code, restored.stderr).toBe(0);
    expect(await digestOf(`docker://${back}`)).toBe(small);
    // And skopeo's docker-archive too, now that a run wrote the layers into the registry and remembered
    // where (locations/): they are the original compressed ones, so the original image goes back.
    expect(await learntLocations(w.env)).toContain('preserve/small');
    const elsewhere = `${plain.host}/preserve/from-skopeo:v1`;
    const fromSkopeo = await stowage(['push', '-q', '--preserve-digests', saved, elsewhere], { env: w.env });
    expect(fromSkopeo.code, fromSkopeo.stderr).toBe(0);
    expect(await digestOf(`docker://${elsewhere}`)).toBe(small);
  });
});
