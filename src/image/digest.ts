import { createHash, type Hash } from 'node:crypto';
import { StowageError } from '../errors.js';

export function sha256Digest(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The error for bytes whose digest is not the one expected. */
export function digestMismatch(
  what: string,
  actual: string,
  expected: string,
  why = 'the data was damaged at its source or on the way',
): StowageError {
  return new StowageError(
    'DIGEST_MISMATCH',
    `${what}: content digest ${actual} does not match the expected ${expected}; ${why}`,
  );
}

export function digestHex(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1);
}

export function digestAlgorithm(digest: string): string {
  return digest.slice(0, digest.indexOf(':'));
}

const NODE_HASH: Record<string, string> = { sha256: 'sha256', sha512: 'sha512' };

/** Hashes bytes as they stream past and checks them against an expected digest and size. */
export class DigestVerifier {
  private readonly hash: Hash;
  private readonly algorithm: string;
  bytes = 0;
  constructor(
    readonly expected: string,
    readonly expectedSize: number | undefined,
    readonly what: string,
    /** What a mismatch means, for the message. */
    readonly why?: string,
  ) {
    this.algorithm = digestAlgorithm(expected);
    const alg = NODE_HASH[this.algorithm];
    if (!alg) {
      throw new StowageError('UNSUPPORTED', `${what}: digest algorithm "${this.algorithm}" is not supported`);
    }
    this.hash = createHash(alg);
  }
  update(chunk: Uint8Array): void {
    this.bytes += chunk.byteLength;
    if (this.expectedSize !== undefined && this.bytes > this.expectedSize) {
      throw new StowageError(
        'DIGEST_MISMATCH',
        `${this.what}: received more than the ${this.expectedSize} bytes its descriptor declares`,
      );
    }
    this.hash.update(chunk);
  }
  /** Throws DIGEST_MISMATCH unless the bytes seen match the expected digest and size. */
  finish(): void {
    if (this.expectedSize !== undefined && this.bytes !== this.expectedSize) {
      throw new StowageError(
        'DIGEST_MISMATCH',
        `${this.what}: received ${this.bytes} bytes, the descriptor declares ${this.expectedSize}`,
      );
    }
    const actual = `${this.algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.expected) throw digestMismatch(this.what, actual, this.expected, this.why);
  }
}

export function verifyBytes(data: Uint8Array, expected: string, what: string): void {
  const v = new DigestVerifier(expected, undefined, what);
  v.update(data);
  v.finish();
}
