/**
 * Signing on the way out, as skopeo --sign-by-sigstore-private-key does: the key in cosign's encrypted
 * format (made here from an openssl key: scrypt, then nacl secretbox over its PKCS#8 form), the
 * signature checked by openssl, carried along by Debian's skopeo as a sigstore attachment, and admitted
 * by stowage's own policy check.
 */
import { createPrivateKey, randomBytes, scryptSync } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { secretbox } from '@noble/ciphers/salsa.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { ArtifactWriter, makeKeyPair, tagFor } from './harness/artifacts.js';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';

const h = harness();
const plain = h.registries.plain;
const artifacts = new ArtifactWriter(plain.host);

let dir: string;
let env: NodeJS.ProcessEnv;
let pub: string;
let cosignKey: string;
let passFile: string;

/** go-tuf's encrypted JSON around a PKCS#8 key, in cosign's PEM: what `cosign generate-key-pair` writes. */
function cosignEncrypted(pkcs8: Buffer, passphrase: string): string {
  const salt = randomBytes(32);
  const nonce = randomBytes(24);
  const key = scryptSync(passphrase, salt, 32, { N: 32768, r: 8, p: 1, maxmem: 64 << 20 });
  const ciphertext = Buffer.from(secretbox(key, nonce).seal(pkcs8));
  const json = JSON.stringify({
    kdf: { name: 'scrypt', params: { N: 32768, r: 8, p: 1 }, salt: salt.toString('base64') },
    cipher: { name: 'nacl/secretbox', nonce: nonce.toString('base64') },
    ciphertext: ciphertext.toString('base64'),
  });
  const b64 = Buffer.from(json).toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n${b64}\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n`;
}

beforeAll(async () => {
  ({ dir, env } = await workdir('signing', insecureConf(plain.host)));
  const pair = await makeKeyPair(dir, 'signer');
  pub = pair.pub;
  const pkcs8 = createPrivateKey(await readFile(pair.key, 'utf8')).export({ type: 'pkcs8', format: 'der' });
  cosignKey = join(dir, 'cosign.key');
  await writeFile(cosignKey, cosignEncrypted(pkcs8, 'correct horse'));
  passFile = join(dir, 'pass');
  await writeFile(passFile, 'correct horse\nsecond line ignored\n');
});

/** The signature layers of `repo`'s sha256-HEX.sig for `digest`: payload and signature, each. */
async function signaturesOf(repo: string, digest: string) {
  const m = await artifacts.client.getManifest(repo, tagFor(digest, '.sig'));
  const manifest = JSON.parse(m.bytes.toString()) as {
    layers: { digest: string; mediaType: string; annotations: Record<string, string> }[];
  };
  return Promise.all(
    manifest.layers.map(async (l) => ({
      mediaType: l.mediaType,
      payload: await artifacts.client.getBlobBytes(repo, l.digest),
      signature: l.annotations['dev.cosignproject.cosign/signature']!,
    })),
  );
}

describe('--sign-by-sigstore-private-key', () => {
  it('signs what copy writes: openssl verifies it, skopeo carries it, stowage admits it', async () => {
    const dest = 'signing-out/app';
    const r = await stowage(
      [
        'copy',
        '--sign-by-sigstore-private-key',
        cosignKey,
        '--sign-passphrase-file',
        passFile,
        `${plain.host}/fixtures/small:v1`,
        `${plain.host}/${dest}:1`,
      ],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    const digest = (await artifacts.client.headManifest(dest, '1'))!.digest;
    const [sig] = await signaturesOf(dest, digest);
    expect(sig!.mediaType).toBe('application/vnd.dev.cosign.simplesigning.v1+json');
    const claims = JSON.parse(sig!.payload.toString());
    expect(claims.critical).toEqual({
      identity: { 'docker-reference': `${plain.host}/${dest}:1` },
      image: { 'docker-manifest-digest': digest },
      type: 'cosign container image signature',
    });
    // openssl, a third party, checks the signature over the payload with the public key.
    await writeFile(join(dir, 'payload'), sig!.payload);
    await writeFile(join(dir, 'sig.der'), Buffer.from(sig!.signature, 'base64'));
    const verified = await run('openssl', [
      'dgst',
      '-sha256',
      '-verify',
      pub,
      '-signature',
      join(dir, 'sig.der'),
      join(dir, 'payload'),
    ]);
    expect(verified.stdout).toContain('Verified OK');

    // Debian's skopeo (sigstore verification switched off) still copies sigstore attachments.
    const registriesD = join(dir, 'registries.d');
    await run('mkdir', ['-p', registriesD]);
    await writeFile(
      join(registriesD, 'default.yaml'),
      `docker:\n  ${plain.host}:\n    use-sigstore-attachments: true\n`,
    );
    await run('skopeo', [
      '--registries.d',
      registriesD,
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${plain.host}/${dest}:1`,
      `docker://${plain.host}/signing-carried/app:1`,
    ]);
    const carried = await signaturesOf('signing-carried/app', digest);
    expect(carried.map((c) => c.signature)).toEqual([sig!.signature]);

    // stowage's own policy admits it with the public key.
    const policy = join(dir, 'policy.json');
    await writeFile(
      policy,
      JSON.stringify({
        default: [{ type: 'reject' }],
        transports: { docker: { [`${plain.host}/signing-out`]: [{ type: 'sigstoreSigned', keyPath: pub }] } },
      }),
    );
    const pulled = await stowage(
      ['pull', '-q', '--policy', policy, `${plain.host}/${dest}:1`, '-o', join(dir, 'p.tar')],
      { env },
    );
    expect(pulled.code, pulled.stderr).toBe(0);
  });

  it('refuses a wrong passphrase before sending anything, and signing into an archive', async () => {
    const wrong = join(dir, 'wrong-pass');
    await writeFile(wrong, 'battery staple\n');
    const r = await stowage(
      [
        'copy',
        '--sign-by-sigstore-private-key',
        cosignKey,
        '--sign-passphrase-file',
        wrong,
        `${plain.host}/fixtures/small:v1`,
        `${plain.host}/signing-never/app:1`,
      ],
      { env },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('passphrase does not open the key');
    expect(await artifacts.client.headManifest('signing-never/app', '1')).toBeUndefined();
    const noPass = await stowage(
      [
        'copy',
        '--sign-by-sigstore-private-key',
        cosignKey,
        `${plain.host}/fixtures/small:v1`,
        `${plain.host}/signing-never/app:1`,
      ],
      { env },
    );
    expect(noPass.code).toBe(2);
    expect(noPass.stderr).toContain('--sign-passphrase-file');
    const archive = await stowage(
      [
        'copy',
        '--sign-by-sigstore-private-key',
        cosignKey,
        '--sign-passphrase-file',
        passFile,
        `${plain.host}/fixtures/small:v1`,
        `oci-archive:${join(dir, 'x.tar')}`,
      ],
      { env },
    );
    expect(archive.code).toBe(2);
    expect(archive.stderr).toContain('registry destination');
  });

  it('signs what push restores from an archive', async () => {
    const tar = join(dir, 'small.tar');
    expect((await stowage(['pull', '-q', `${plain.host}/fixtures/small:v1`, '-o', tar], { env })).code).toBe(
      0,
    );
    const r = await stowage(
      [
        'push',
        '-q',
        '--sign-by-sigstore-private-key',
        cosignKey,
        '--sign-passphrase-file',
        passFile,
        tar,
        `${plain.host}/signing-push/app:1`,
      ],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    const digest = (await artifacts.client.headManifest('signing-push/app', '1'))!.digest;
    const [sig] = await signaturesOf('signing-push/app', digest);
    expect(JSON.parse(sig!.payload.toString()).critical.identity['docker-reference']).toBe(
      `${plain.host}/signing-push/app:1`,
    );
  });

  it('signs what a sync job sends to its mirror', async () => {
    const w = await workdir('signing-sync', insecureConf(plain.host));
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${join(w.dir, 'store')}"\n\n[[job]]\nname = "app"\nsource = "${plain.host}/fixtures/small"\ntags = ["v1"]\narchive = false\nmirror = "${plain.host}/signing-mirror/app"\nsign-by-sigstore-private-key = "${cosignKey}"\nsign-passphrase-file = "${passFile}"\n`,
    );
    const r = await stowage(['sync', '-q', '--config', config], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const digest = (await artifacts.client.headManifest('signing-mirror/app', 'v1'))!.digest;
    const [sig] = await signaturesOf('signing-mirror/app', digest);
    expect(JSON.parse(sig!.payload.toString()).critical.identity['docker-reference']).toBe(
      `${plain.host}/signing-mirror/app:v1`,
    );
    await writeFile(join(dir, 'sync-payload'), sig!.payload);
    await writeFile(join(dir, 'sync-sig.der'), Buffer.from(sig!.signature, 'base64'));
    const verified = await run('openssl', [
      'dgst',
      '-sha256',
      '-verify',
      pub,
      '-signature',
      join(dir, 'sync-sig.der'),
      join(dir, 'sync-payload'),
    ]);
    expect(verified.stdout).toContain('Verified OK');
  });
});
