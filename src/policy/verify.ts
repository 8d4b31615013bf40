/**
 * Deciding whether an image gets in: every requirement its scope names must accept it. sigstoreSigned
 * with public keys (cosign's ECDSA P-256, or any key node:crypto reads) checks cosign's signatures: each
 * is a simple-signing payload and a base64 DER signature of it; one that verifies with a trusted key,
 * names this image's manifest digest, and whose identity the policy's signedIdentity accepts, admits
 * the image. Keyless (Fulcio certificates, Rekor) and GPG (signedBy) are refused with a clear error.
 */
import { createPublicKey, type KeyObject, verify } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { StowageError } from '../errors.js';
import { cosignSignatureLayers, cosignTag } from '../image/cosign.js';
import type { Descriptor, ImageManifest } from '../image/schemas.js';
import {
  formatReference,
  type ImageReference,
  parseReference,
  repositoryName,
} from '../reference/reference.js';
import {
  dockerScopes,
  type Policy,
  type Requirement,
  requirementsFor,
  type SignedIdentity,
} from './policy.js';

/** One cosign signature: the payload as stored, and the base64 signature from its annotation. */
export interface SigstoreSignature {
  payload: Buffer;
  signature: string;
}

/** An image to admit: where it comes from, the digest it resolved to, and how to get its signatures. */
export interface Candidate {
  /** The transport it is read from, as policy.json names it (docker, oci-archive, ...). */
  transport: string;
  /** A registry image: the reference asked for, fully qualified. */
  ref?: ImageReference | undefined;
  /** Scopes for other transports (an archive's path), most specific first. */
  scopes?: string[] | undefined;
  /** The manifest (or index) digest the reference resolved to: what a signature must name. */
  digest: string;
  /** Its cosign signatures (none where the source cannot hold any). */
  signatures: () => Promise<SigstoreSignature[]>;
}

export const SIMPLE_SIGNING = 'cosign container image signature';

type SigstoreRequirement = Extract<Requirement, { type: 'sigstoreSigned' }>;

/** Admits `c` under `policy`, or throws POLICY_REJECTED saying which rule refused it and why. */
export async function admit(policy: Policy | undefined, c: Candidate): Promise<void> {
  if (!policy) return;
  const scopes = c.ref ? dockerScopes(c.ref) : (c.scopes ?? []);
  const { requirements, scope } = requirementsFor(policy, c.transport, scopes);
  const name = c.ref ? formatReference(c.ref) : (scopes[0] ?? c.transport);
  for (const r of requirements) {
    const refused = await check(r, c);
    if (refused) {
      throw new StowageError(
        'POLICY_REJECTED',
        `${name} is refused by ${policy.path} (${scope}): ${refused}`,
      );
    }
  }
}

/**
 * Refuses at once, without asking any registry, an image the policy can only refuse (a `reject` for its
 * scope): the service answers 403 to such a request rather than start a job that must fail.
 */
export function refuseOutright(policy: Policy | undefined, ref: ImageReference): void {
  if (!policy) return;
  const { requirements, scope } = requirementsFor(policy, 'docker', dockerScopes(ref));
  if (requirements.some((r) => r.type === 'reject')) {
    throw new StowageError(
      'POLICY_REJECTED',
      `${formatReference(ref)} is refused by the trust policy (${scope}): the policy rejects every image here`,
    );
  }
}

/** Whether admitting a registry image under the policy takes its signatures. */
export function needsSignatures(policy: Policy | undefined, ref: ImageReference): boolean {
  if (!policy) return false;
  return requirementsFor(policy, 'docker', dockerScopes(ref)).requirements.some(
    (r) => r.type === 'sigstoreSigned',
  );
}

/** Undefined if the requirement accepts the image, else why not. */
async function check(r: Requirement, c: Candidate): Promise<string | undefined> {
  switch (r.type) {
    case 'insecureAcceptAnything':
      return undefined;
    case 'reject':
      return 'the policy rejects every image here';
    case 'signedBy':
      return 'signedBy (GPG simple signing) is not supported by stowage; use sigstoreSigned';
    case 'sigstoreSigned':
      return checkSigstore(r, c);
  }
}

async function checkSigstore(r: SigstoreRequirement, c: Candidate): Promise<string | undefined> {
  if (r.fulcio) return 'keyless sigstoreSigned (fulcio) is not supported yet; give keyPath or keyData';
  const keys = await trustedKeys(r);
  if (!c.ref) return `signatures of ${c.transport} images cannot be checked yet`;
  const sigs = await c.signatures();
  if (sigs.length === 0) return `it has no signature (no ${cosignTag(c.digest)})`;
  const reasons: string[] = [];
  for (const s of sigs) {
    const why = judge(s, keys, c.ref, c.digest, r.signedIdentity ?? { type: 'matchRepoDigestOrExact' });
    if (!why) return undefined;
    reasons.push(why);
  }
  return `no signature is acceptable: ${[...new Set(reasons)].join('; ')}`;
}

/** Undefined if the signature admits the image, else why not. */
export function judge(
  s: SigstoreSignature,
  keys: KeyObject[],
  ref: ImageReference,
  digest: string,
  identity: SignedIdentity,
): string | undefined {
  let raw: Buffer;
  try {
    raw = Buffer.from(s.signature, 'base64');
  } catch {
    return 'a signature is not base64';
  }
  const good = keys.some((key) => {
    try {
      return verify('sha256', s.payload, key, raw);
    } catch {
      return false;
    }
  });
  if (!good) return 'a signature does not verify with the trusted keys';
  const payload = parsePayload(s.payload);
  if (typeof payload === 'string') return payload;
  if (payload.digest !== digest) return `a signature is of another image (${payload.digest})`;
  if (!identityMatches(identity, ref, payload.reference))
    return `a signature names ${payload.reference}, which signedIdentity ${identity.type} does not accept for ${formatReference(ref)}`;
  return undefined;
}

/** The simple-signing payload's claims, or why it is not one. */
function parsePayload(bytes: Buffer): { reference: string; digest: string } | string {
  try {
    const p = JSON.parse(bytes.toString('utf8')) as {
      critical?: {
        type?: string;
        image?: { 'docker-manifest-digest'?: string };
        identity?: { 'docker-reference'?: string };
      };
    };
    const c = p.critical;
    if (c?.type !== SIMPLE_SIGNING) return 'a signature payload is not a cosign container image signature';
    const digest = c.image?.['docker-manifest-digest'];
    const reference = c.identity?.['docker-reference'];
    if (!digest || !reference) return 'a signature payload names no image';
    return { digest, reference };
  } catch {
    return 'a signature payload is not JSON';
  }
}

/** Whether the identity a signature claims is acceptable for `ref` (containers-policy.json(5) signedIdentity). */
export function identityMatches(rule: SignedIdentity, ref: ImageReference, signed: string): boolean {
  let claimed: ImageReference;
  try {
    claimed = parseReference(signed);
  } catch {
    return false;
  }
  const sameRepo = (a: ImageReference, b: ImageReference) => repositoryName(a) === repositoryName(b);
  const exact = (a: ImageReference, b: ImageReference) =>
    sameRepo(a, b) &&
    a.tag === b.tag &&
    a.digest === b.digest &&
    (a.tag !== undefined || a.digest !== undefined);
  switch (rule.type) {
    case 'matchExact':
      return exact(ref, claimed);
    case 'matchRepoDigestOrExact':
      return ref.digest && !ref.tag ? sameRepo(ref, claimed) : exact(ref, claimed);
    case 'matchRepository':
      return sameRepo(ref, claimed);
    case 'exactReference':
      return exact(parseReference(rule.dockerReference), claimed);
    case 'exactRepository':
      return sameRepo(parseReference(rule.dockerRepository), claimed);
    case 'remapIdentity': {
      const full = formatReference(ref);
      if (!full.startsWith(rule.prefix))
        return identityMatches({ type: 'matchRepoDigestOrExact' }, ref, signed);
      const remapped = parseReference(rule.signedPrefix + full.slice(rule.prefix.length));
      return identityMatches({ type: 'matchRepoDigestOrExact' }, remapped, signed);
    }
  }
}

/**
 * The keys the policy trusts for a registry image (its scope's sigstoreSigned requirements), each with
 * a label for listings: the key file's path, or "keyData N".
 */
export async function trustedKeysFor(
  policy: Policy | undefined,
  ref: ImageReference,
): Promise<{ label: string; key: KeyObject }[]> {
  if (!policy) return [];
  const out: { label: string; key: KeyObject }[] = [];
  for (const r of requirementsFor(policy, 'docker', dockerScopes(ref)).requirements) {
    if (r.type !== 'sigstoreSigned' || r.fulcio) continue;
    const labels = [
      ...(r.keyData ? ['keyData 1'] : []),
      ...(r.keyDatas ?? []).map((_, i) => `keyDatas ${i + 1}`),
      ...(r.keyPath ? [r.keyPath] : []),
      ...(r.keyPaths ?? []),
    ];
    const keys = await trustedKeys(r);
    for (const [i, key] of keys.entries()) out.push({ label: labels[i] ?? `key ${i + 1}`, key });
  }
  return out;
}

/** The label of the first key `signature` verifies `payload` with, if any. */
export function signerOf(
  keys: { label: string; key: KeyObject }[],
  payload: Buffer,
  signature: string,
): string | undefined {
  const raw = Buffer.from(signature, 'base64');
  return keys.find(({ key }) => {
    try {
      return verify('sha256', payload, key, raw);
    } catch {
      return false;
    }
  })?.label;
}

/**
 * The label of the trusted key one of a cosign signature manifest's signatures verifies with, if any;
 * `payload` reads a signature layer's payload.
 */
export async function manifestSigner(
  keys: { label: string; key: KeyObject }[],
  manifest: ImageManifest,
  payload: (layer: Descriptor) => Promise<Buffer>,
): Promise<string | undefined> {
  for (const { layer, signature } of cosignSignatureLayers(manifest)) {
    const signer = signerOf(keys, await payload(layer), signature);
    if (signer) return signer;
  }
  return undefined;
}

/** Keys read once per requirement (a policy is loaded once per run): a sync's tags share them. */
const keysRead = new WeakMap<SigstoreRequirement, Promise<KeyObject[]>>();

/** The public keys a sigstoreSigned requirement trusts. */
function trustedKeys(r: SigstoreRequirement): Promise<KeyObject[]> {
  let keys = keysRead.get(r);
  if (!keys) {
    keys = readKeys(r);
    keysRead.set(r, keys);
    keys.catch(() => keysRead.delete(r));
  }
  return keys;
}

async function readKeys(r: SigstoreRequirement): Promise<KeyObject[]> {
  const pems: string[] = [...(r.keyData ? [r.keyData] : []), ...(r.keyDatas ?? [])].map((d) =>
    Buffer.from(d, 'base64').toString('utf8'),
  );
  for (const path of [...(r.keyPath ? [r.keyPath] : []), ...(r.keyPaths ?? [])]) {
    pems.push(
      await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
        throw new StowageError(
          'INVALID_CONFIG',
          `cannot read the policy's key ${path}: ${e.code ?? e.message}`,
        );
      }),
    );
  }
  if (pems.length === 0)
    throw new StowageError(
      'INVALID_CONFIG',
      'a sigstoreSigned requirement names no key (keyPath, keyPaths, keyData or keyDatas)',
    );
  return pems.map((pem, i) => {
    try {
      return createPublicKey(pem);
    } catch {
      throw new StowageError(
        'INVALID_CONFIG',
        `key ${i + 1} of a sigstoreSigned requirement is not a public key in PEM`,
      );
    }
  });
}

/**
 * Admits a signed file that is not an image (a bundle's manifest) under `policy`: the requirements of
 * `transport` for its most specific scope. A sigstoreSigned requirement is met by a signature (base64
 * DER, as `cosign sign-blob` writes) of exactly `payload` by one of its keys; there is no image
 * reference, so signedIdentity does not apply.
 */
export async function admitSignedFile(
  policy: Policy,
  c: { transport: string; scopes: string[]; name: string; payload: Buffer; signature: string | undefined },
): Promise<void> {
  const { requirements, scope } = requirementsFor(policy, c.transport, c.scopes);
  for (const r of requirements) {
    const refused = await checkFile(r, c);
    if (refused)
      throw new StowageError(
        'POLICY_REJECTED',
        `${c.name} is refused by ${policy.path} (${scope}): ${refused}`,
      );
  }
}

async function checkFile(
  r: Requirement,
  c: { payload: Buffer; signature: string | undefined; name: string },
): Promise<string | undefined> {
  if (r.type !== 'sigstoreSigned') return check(r, { transport: '', digest: '', signatures: async () => [] });
  if (r.fulcio) return 'keyless sigstoreSigned (fulcio) is not supported yet; give keyPath or keyData';
  if (!c.signature) return 'it has no signature (no .sig file beside it)';
  const keys = (await trustedKeys(r)).map((key, i) => ({ label: `key ${i + 1}`, key }));
  return signerOf(keys, c.payload, c.signature)
    ? undefined
    : 'its signature does not verify with the trusted keys';
}
