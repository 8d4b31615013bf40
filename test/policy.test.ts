/**
 * The trust policy (containers-policy.json) decides what gets in. Signatures are made by a third party:
 * openssl makes the keys and signs the payloads, stored as cosign stores them (a sha256-HEX.sig manifest
 * in the real registry). Debian's skopeo has sigstore switched off, so it is no verifier here.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  ArtifactWriter,
  makeKeyPair,
  opensslSign,
  simpleSigningPayload,
  tagFor,
} from './harness/artifacts.js';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';
import { api, serviceDir, startService } from './harness/service.js';

const h = harness();
const plain = h.registries.plain;
const artifacts = new ArtifactWriter(plain.host);

let dir: string;
let env: NodeJS.ProcessEnv;
let trusted: { key: string; pub: string };
let other: { key: string; pub: string };

beforeAll(async () => {
  ({ dir, env } = await workdir('policy', insecureConf(plain.host)));
  const keys = await mkdtemp(join(dir, 'keys-'));
  trusted = await makeKeyPair(keys, 'trusted');
  other = await makeKeyPair(keys, 'other');
});

/** The small fixture copied to NAME/app:1 (another fixture with `multi`); its digest. */
async function image(
  name: string,
  fixture = 'small:v1',
): Promise<{ repo: string; ref: string; digest: string }> {
  const repo = `policy-${name}/app`;
  await run('skopeo', [
    'copy',
    '--quiet',
    '--src-tls-verify=false',
    '--dest-tls-verify=false',
    `docker://${plain.host}/fixtures/${fixture}`,
    `docker://${plain.host}/${repo}:1`,
  ]);
  const head = (await artifacts.client.headManifest(repo, '1'))!;
  return { repo, ref: `${plain.host}/${repo}:1`, digest: head.digest };
}

/** Signs `digest` as `identity` with `key` (openssl), stored as cosign's signature of `under`. */
async function sign(repo: string, opts: { digest: string; identity: string; key: string; under?: string }) {
  const payload = simpleSigningPayload(opts.identity, opts.digest);
  const signature = await opensslSign(dir, opts.key, payload);
  await artifacts.putCosignSignature(repo, {
    signed: opts.digest,
    identity: opts.identity,
    tag: tagFor(opts.under ?? opts.digest, '.sig'),
    signature,
    payload,
  });
  return { payload, signature };
}

/** A policy: accept anything, except images under `scope`, which need `requirement`. */
async function policy(name: string, scope: string, requirement: Record<string, unknown>): Promise<string> {
  const path = join(dir, `${name}.json`);
  await writeFile(
    path,
    JSON.stringify({
      default: [{ type: 'insecureAcceptAnything' }],
      transports: { docker: { [scope]: [requirement] } },
    }),
  );
  return path;
}

const sigstore = (pub: string, signedIdentity?: Record<string, unknown>) => ({
  type: 'sigstoreSigned',
  keyPath: pub,
  ...(signedIdentity ? { signedIdentity } : {}),
});

async function pull(ref: string, policyPath: string) {
  return stowage(['pull', '-q', '--policy', policyPath, ref, '-o', join(dir, `out-${Date.now()}.tar`)], {
    env,
  });
}

describe('sigstoreSigned', () => {
  it('admits an image signed with the trusted key, and refuses another key, a tampered payload and no signature', async () => {
    const ok = await image('signed');
    await sign(ok.repo, { digest: ok.digest, identity: ok.ref, key: trusted.key });
    const p = await policy('trusted', `${plain.host}/policy-signed`, sigstore(trusted.pub));
    const good = await pull(ok.ref, p);
    expect(good.code, good.stderr).toBe(0);

    const wrongKey = await policy('other', `${plain.host}/policy-signed`, sigstore(other.pub));
    const r1 = await pull(ok.ref, wrongKey);
    expect(r1.code).toBe(14);
    expect(r1.stderr).toContain('does not verify with the trusted keys');

    const tampered = await image('tampered');
    const { signature } = await sign(tampered.repo, {
      digest: tampered.digest,
      identity: tampered.ref,
      key: trusted.key,
    });
    // The same signature over a payload changed by one claim.
    await artifacts.putCosignSignature(tampered.repo, {
      signed: tampered.digest,
      identity: `${tampered.ref}-changed`,
      tag: tagFor(tampered.digest, '.sig'),
      signature,
    });
    const r2 = await pull(
      tampered.ref,
      await policy('tampered', `${plain.host}/policy-tampered`, sigstore(trusted.pub)),
    );
    expect(r2.code).toBe(14);
    expect(r2.stderr).toContain('does not verify');

    const unsigned = await image('unsigned');
    const r3 = await pull(
      unsigned.ref,
      await policy('unsigned', `${plain.host}/policy-unsigned`, sigstore(trusted.pub)),
    );
    expect(r3.code).toBe(14);
    expect(r3.stderr).toContain('has no signature');
    expect(r3.stderr).toContain('policy-unsigned');
  });

  it('refuses a signature moved onto another image', async () => {
    const a = await image('moved-a');
    const b = await image('moved-b', 'multi:v1');
    // A valid signature of image a, stored as b's signature.
    await sign(b.repo, { digest: a.digest, identity: b.ref, key: trusted.key, under: b.digest });
    const r = await pull(b.ref, await policy('moved', `${plain.host}/policy-moved-b`, sigstore(trusted.pub)));
    expect(r.code).toBe(14);
    expect(r.stderr).toContain('of another image');
  });

  it('applies each signedIdentity as containers-policy.json(5) says', async () => {
    const img = await image('identity');
    const repoOnly = `${plain.host}/${img.repo}`;
    // Signed as cosign signs: the repository alone.
    await sign(img.repo, { digest: img.digest, identity: repoOnly, key: trusted.key });
    const scope = `${plain.host}/policy-identity`;
    const cases: [Record<string, unknown> | undefined, number][] = [
      [undefined, 14], // matchRepoDigestOrExact: a tagged pull needs the tag signed
      [{ type: 'matchExact' }, 14],
      [{ type: 'matchRepository' }, 0],
      [{ type: 'exactRepository', dockerRepository: repoOnly }, 0],
      [{ type: 'exactRepository', dockerRepository: `${plain.host}/elsewhere/app` }, 14],
      [{ type: 'exactReference', dockerReference: `${repoOnly}:1` }, 14],
    ];
    for (const [identity, code] of cases) {
      const r = await pull(
        img.ref,
        await policy(`id-${identity?.type ?? 'default'}-${code}`, scope, sigstore(trusted.pub, identity)),
      );
      expect(r.code, `${JSON.stringify(identity)}: ${r.stderr}`).toBe(code);
    }
    // Signed with its tag: exactReference and the default accept it.
    const tagged = await image('identity-tagged');
    await sign(tagged.repo, { digest: tagged.digest, identity: tagged.ref, key: trusted.key });
    const tscope = `${plain.host}/policy-identity-tagged`;
    for (const identity of [undefined, { type: 'exactReference', dockerReference: tagged.ref }]) {
      const r = await pull(
        tagged.ref,
        await policy(`tagged-${identity?.type ?? 'default'}`, tscope, sigstore(trusted.pub, identity)),
      );
      expect(r.code, r.stderr).toBe(0);
    }
    // remapIdentity: an image copied to a mirror, signed under its original name.
    const mirrored = await image('remap-mirror');
    await sign(mirrored.repo, {
      digest: mirrored.digest,
      identity: `upstream.test/team/app:1`,
      key: trusted.key,
    });
    const remap = {
      type: 'remapIdentity',
      prefix: `${plain.host}/policy-remap-mirror`,
      signedPrefix: 'upstream.test/team',
    };
    const r = await pull(
      mirrored.ref,
      await policy('remap', `${plain.host}/policy-remap-mirror`, sigstore(trusted.pub, remap)),
    );
    expect(r.code, r.stderr).toBe(0);
  });
});

describe('the policy everywhere', () => {
  it('reject refuses, the most specific scope wins, and a bad policy file is named', async () => {
    const img = await image('reject');
    const path = join(dir, 'scopes.json');
    await writeFile(
      path,
      JSON.stringify({
        default: [{ type: 'reject' }],
        transports: {
          docker: {
            [`${plain.host}/policy-reject`]: [{ type: 'reject' }],
            [img.ref]: [{ type: 'insecureAcceptAnything' }],
          },
        },
      }),
    );
    const allowed = await pull(img.ref, path);
    expect(allowed.code, allowed.stderr).toBe(0);
    const other = await image('reject-other');
    const refused = await pull(other.ref, path);
    expect(refused.code).toBe(14);
    expect(refused.stderr).toContain('default');
    await writeFile(path, JSON.stringify({ default: [{ type: 'insecureAcceptAnything', extra: 1 }] }));
    const bad = await pull(img.ref, path);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(path);
  });

  it('refuses an unsigned tag in sync (neither stored nor mirrored) and in copy', async () => {
    const signed = await image('sync');
    await sign(signed.repo, { digest: signed.digest, identity: signed.ref, key: trusted.key });
    // A second tag of the same repository, unsigned.
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${plain.host}/fixtures/multi:v1`,
      `docker://${plain.host}/${signed.repo}:2`,
    ]);
    const p = await policy('sync', `${plain.host}/policy-sync`, sigstore(trusted.pub));
    const w = await workdir('policy-sync', insecureConf(plain.host));
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${join(w.dir, 'store')}"\n\n[[job]]\nname = "app"\nsource = "${plain.host}/${signed.repo}"\ntags = ["1", "2"]\nmirror = "${plain.host}/policy-sync-mirror/app"\n`,
    );
    const r = await stowage(['sync', '--json', '--policy', p, '--config', config], { env: w.env });
    expect(r.code).toBe(13);
    const tags = JSON.parse(r.stdout).jobs[0].tags as { tag: string; action: string; code?: string }[];
    expect(tags.find((t) => t.tag === '1')?.action).toBe('fetched');
    expect(tags.find((t) => t.tag === '2')).toMatchObject({ action: 'failed', code: 'POLICY_REJECTED' });
    const mirrored = await artifacts.client.headManifest('policy-sync-mirror/app', '2');
    expect(mirrored).toBeUndefined();
    const copied = await stowage(
      ['copy', '--policy', p, `${plain.host}/${signed.repo}:2`, `${plain.host}/policy-copy/app:2`],
      {
        env,
      },
    );
    expect(copied.code).toBe(14);
    expect(await artifacts.client.headManifest('policy-copy/app', '2')).toBeUndefined();
  });

  it('names the trusted key that verifies a signature in inspect --referrers', async () => {
    const img = await image('inspect');
    await sign(img.repo, { digest: img.digest, identity: img.ref, key: trusted.key });
    const scope = `${plain.host}/policy-inspect`;
    const listing = async (pub: string) => {
      const r = await stowage(
        [
          'inspect',
          '--referrers',
          '--policy',
          await policy(`inspect-${pub.length}`, scope, sigstore(pub)),
          img.ref,
        ],
        {
          env,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).Referrers as { tag?: string; signer?: string }[];
    };
    const withTrusted = await listing(trusted.pub);
    expect(withTrusted).toEqual([
      expect.objectContaining({ tag: tagFor(img.digest, '.sig'), signer: trusted.pub }),
    ]);
    const withOther = await listing(other.pub);
    expect(withOther[0]!.signer).toBeUndefined();
  });

  it('the service answers 403 to a pull whose signature the policy refuses, 202 to a signed one', async () => {
    const signedImg = await image('service-signed');
    await sign(signedImg.repo, { digest: signedImg.digest, identity: signedImg.ref, key: trusted.key });
    const unsigned = await image('service-unsigned');
    const d = await serviceDir('policy-service', insecureConf(plain.host));
    // The service reads the policy from its usual place: the user's.
    await mkdir(join(d.env.HOME!, '.config/containers'), { recursive: true });
    await writeFile(
      join(d.env.HOME!, '.config/containers/policy.json'),
      JSON.stringify({
        default: [{ type: 'insecureAcceptAnything' }],
        transports: {
          docker: {
            [`${plain.host}/policy-service-signed`]: [sigstore(trusted.pub)],
            [`${plain.host}/policy-service-unsigned`]: [sigstore(trusted.pub)],
          },
        },
      }),
    );
    const s = await startService(d);
    try {
      const refused = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: { ref: unsigned.ref } });
      expect(refused.status).toBe(403);
      const body = (await refused.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('POLICY_REJECTED');
      expect(body.error.message).toContain('has no signature');
      expect(body.error.message).not.toContain(d.env.HOME!);
      const accepted = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: { ref: signedImg.ref } });
      expect(accepted.status).toBe(202);
    } finally {
      await s.stop();
    }
  });
});
