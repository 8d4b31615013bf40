/**
 * Writing what cosign and oras write, straight into a real registry, for tests: blobs, manifests with a
 * subject, referrers tag-schema indexes, and cosign signature manifests (a simple-signing payload with
 * its signature in an annotation) signed by openssl with keys the test makes.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MediaType } from '../../src/image/mediatypes.js';
import { RegistryClient } from '../../src/registry/client.js';
import { run } from './processes.js';

export const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
export const tagFor = (digest: string, suffix = '') => `${digest.replace(':', '-')}${suffix}`;

/** cosign's simple-signing payload for `digest` under the identity `reference`. */
export function simpleSigningPayload(reference: string, digest: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      critical: {
        identity: { 'docker-reference': reference },
        image: { 'docker-manifest-digest': digest },
        type: 'cosign container image signature',
      },
      optional: null,
    }),
  );
}

/** An ECDSA P-256 key pair made by openssl: the private key's and the public key's PEM paths. */
export async function makeKeyPair(dir: string, name: string): Promise<{ key: string; pub: string }> {
  const key = join(dir, `${name}.key`);
  const pub = join(dir, `${name}.pub`);
  await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
  await run('openssl', ['ec', '-in', key, '-pubout', '-out', pub]);
  return { key, pub };
}

/** The base64 DER ECDSA-SHA256 signature of `payload` by `key`, made by openssl dgst -sign. */
export async function opensslSign(dir: string, key: string, payload: Buffer): Promise<string> {
  const file = join(dir, `payload-${digestOf(payload).slice(7, 19)}`);
  await writeFile(file, payload);
  await run('openssl', ['dgst', '-sha256', '-sign', key, '-out', `${file}.sig`, file]);
  return (await readFile(`${file}.sig`)).toString('base64');
}

export class ArtifactWriter {
  readonly client: RegistryClient;
  constructor(host: string) {
    this.client = new RegistryClient({ host, insecure: true });
  }

  async putBlob(repo: string, bytes: Buffer, mediaType: string) {
    const digest = digestOf(bytes);
    const session = await this.client.startUpload(repo, undefined);
    if (session.mounted) throw new Error('unexpected mount');
    await this.client.finishUpload(session, repo, digest, bytes.length, bytes);
    return { mediaType, digest, size: bytes.length };
  }

  async putManifest(repo: string, doc: unknown, reference?: string) {
    const bytes = Buffer.from(JSON.stringify(doc));
    const digest = digestOf(bytes);
    await this.client.putManifest(repo, reference ?? digest, bytes, MediaType.OciManifest);
    return { mediaType: MediaType.OciManifest, digest, size: bytes.length, bytes };
  }

  /**
   * A cosign signature manifest under `tag` (sha256-HEX.sig of the image signed): its one layer is the
   * payload (naming `signed` under `identity`, or `payload` as given), with `signature` in its annotation.
   */
  async putCosignSignature(
    repo: string,
    opts: { signed: string; identity: string; tag: string; signature: string; payload?: Buffer },
  ) {
    const payload = opts.payload ?? simpleSigningPayload(opts.identity, opts.signed);
    const layer = await this.putBlob(repo, payload, 'application/vnd.dev.cosign.simplesigning.v1+json');
    // cosign's config: the payload is its one (uncompressed) layer, so its own diff_id.
    const config = await this.putBlob(
      repo,
      Buffer.from(
        JSON.stringify({
          architecture: '',
          created: '0001-01-01T00:00:00Z',
          history: [{ created: '0001-01-01T00:00:00Z' }],
          os: '',
          rootfs: { type: 'layers', diff_ids: [layer.digest] },
          config: {},
        }),
      ),
      MediaType.OciConfig,
    );
    return this.putManifest(
      repo,
      {
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config,
        layers: [{ ...layer, annotations: { 'dev.cosignproject.cosign/signature': opts.signature } }],
      },
      opts.tag,
    );
  }
}
