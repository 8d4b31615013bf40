/**
 * Signing as skopeo --sign-by-sigstore-private-key does: a simple-signing payload naming the pushed
 * manifest's digest under the destination reference, signed with ECDSA-SHA256 (DER, base64), stored as
 * cosign stores it. The key is cosign's: PEM "ENCRYPTED COSIGN PRIVATE KEY" holding go-tuf's encrypted
 * JSON (scrypt, then nacl/secretbox over a PKCS#8 key), its passphrase the first line of a file. A plain
 * PEM private key (as openssl writes) is taken too.
 */
import { createPrivateKey, createPublicKey, type KeyObject, scrypt, sign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { secretbox } from '@noble/ciphers/salsa.js';
import { StowageError } from '../errors.js';
import { SIMPLE_SIGNING } from './verify.js';

export interface Signer {
  /** The base64 DER signature of `payload`. */
  sign(payload: Buffer): string;
  /** The public half, as PEM (what a policy's keyPath names). */
  publicKeyPem: string;
}

/** cosign's simple-signing payload: `digest` signed as `reference`. */
export function simpleSigningPayload(reference: string, digest: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      critical: {
        identity: { 'docker-reference': reference },
        image: { 'docker-manifest-digest': digest },
        type: SIMPLE_SIGNING,
      },
      optional: null,
    }),
  );
}

const ENCRYPTED =
  /-----BEGIN ENCRYPTED (COSIGN|SIGSTORE) PRIVATE KEY-----([\s\S]*?)-----END ENCRYPTED \1 PRIVATE KEY-----/;

/** Reads a signing key (cosign's encrypted format with its passphrase file, or a plain PEM key). */
export async function loadSigner(keyPath: string, passphraseFile?: string | undefined): Promise<Signer> {
  const text = await readFile(keyPath, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `cannot read the signing key ${keyPath}: ${e.code ?? e.message}`,
    );
  });
  const m = ENCRYPTED.exec(text);
  let key: KeyObject;
  if (m) {
    if (!passphraseFile) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${keyPath} is an encrypted cosign key: give its passphrase with --sign-passphrase-file FILE`,
      );
    }
    key = await decryptCosignKey(
      Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64'),
      await passphrase(passphraseFile),
      keyPath,
    );
  } else {
    try {
      key = createPrivateKey(text);
    } catch {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${keyPath} is neither a cosign private key (ENCRYPTED COSIGN PRIVATE KEY) nor a PEM private key`,
      );
    }
  }
  if (key.asymmetricKeyType !== 'ec') {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${keyPath} is a ${key.asymmetricKeyType} key; sigstore signing takes an ECDSA (P-256) key`,
    );
  }
  return {
    sign: (payload) => sign('sha256', payload, key).toString('base64'),
    publicKeyPem: createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** The first line of the passphrase file, without its newline (as skopeo reads it). */
async function passphrase(path: string): Promise<Buffer> {
  const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `cannot read the passphrase file ${path}: ${e.code ?? e.message}`,
    );
  });
  return Buffer.from(text.split(/\r?\n/)[0] ?? '', 'utf8');
}

interface EncryptedKey {
  kdf: { name: string; params: { N: number; r: number; p: number }; salt: string };
  cipher: { name: string; nonce: string };
  ciphertext: string;
}

/** go-tuf's encrypted JSON: scrypt(passphrase, salt) as the secretbox key over the PKCS#8 DER. */
async function decryptCosignKey(json: Buffer, pass: Buffer, keyPath: string): Promise<KeyObject> {
  let e: EncryptedKey;
  try {
    e = JSON.parse(json.toString('utf8')) as EncryptedKey;
  } catch {
    throw new StowageError('INVALID_ARGUMENT', `${keyPath}: the encrypted key is not go-tuf's JSON`);
  }
  if (e.kdf?.name !== 'scrypt' || e.cipher?.name !== 'nacl/secretbox') {
    throw new StowageError(
      'UNSUPPORTED',
      `${keyPath}: key encryption ${e.kdf?.name}/${e.cipher?.name} is not scrypt/nacl/secretbox`,
    );
  }
  const { N, r, p } = e.kdf.params;
  const secret = await new Promise<Buffer>((resolve, reject) =>
    scrypt(
      pass,
      Buffer.from(e.kdf.salt, 'base64'),
      32,
      { N, r, p, maxmem: 256 * N * r + (1 << 20) },
      (err, k) => (err ? reject(err) : resolve(k)),
    ),
  );
  let der: Uint8Array;
  try {
    der = secretbox(secret, Buffer.from(e.cipher.nonce, 'base64')).open(Buffer.from(e.ciphertext, 'base64'));
  } catch {
    throw new StowageError('INVALID_ARGUMENT', `${keyPath}: the passphrase does not open the key`);
  }
  return createPrivateKey({ key: Buffer.from(der), format: 'der', type: 'pkcs8' });
}
