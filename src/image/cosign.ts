/**
 * cosign's conventions, named once: the tags it attaches signatures, attestations and SBOMs under
 * (sha256-HEX.sig, .att, .sbom; sha256-HEX alone is the OCI referrers tag schema's index), and how a
 * signature manifest carries its signatures (a simple-signing payload layer, the signature in an
 * annotation).
 */
import type { Descriptor, ImageManifest } from './schemas.js';

export const COSIGN_SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const COSIGN_SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const COSIGN_KINDS = ['sig', 'att', 'sbom'] as const;

const COSIGN_TAG = /^sha256-[0-9a-f]{64}\.(sig|att|sbom)$/;

/** A digest as a tag: sha256-HEX (the referrers tag schema's index; the stem of cosign's tags). */
export function digestTag(digest: string): string {
  return digest.replace(':', '-');
}

/** cosign's tag for what it attaches to `digest`. */
export function cosignTag(digest: string, kind: (typeof COSIGN_KINDS)[number] = 'sig'): string {
  return `${digestTag(digest)}.${kind}`;
}

/** Whether a tag (or ref.name) is one of cosign's: sha256-HEX.sig, .att or .sbom. */
export function isCosignTag(tag: string): boolean {
  return COSIGN_TAG.test(tag);
}

/** Whether cosign's tag `tag` is for `digest`. */
export function isCosignTagOf(tag: string, digest: string): boolean {
  return isCosignTag(tag) && tag.startsWith(`${digestTag(digest)}.`);
}

/** The signatures a cosign signature manifest holds: each layer with one, and the signature (base64). */
export function cosignSignatureLayers(m: ImageManifest): { layer: Descriptor; signature: string }[] {
  const out: { layer: Descriptor; signature: string }[] = [];
  for (const layer of m.layers) {
    const signature = layer.annotations?.[COSIGN_SIGNATURE_ANNOTATION];
    if (signature) out.push({ layer, signature });
  }
  return out;
}
