/**
 * What travels with an image: the manifests attached to it (OCI 1.1 referrers: SBOMs, attestations,
 * signatures, each naming the image as its `subject`; and cosign's attachments under its tags), found on
 * the source, then what is attached to those in turn (a signature of an SBOM), with their blobs.
 */
import { StowageError } from '../errors.js';
import { parseManifest } from '../image/documents.js';
import { isManifestMediaType, MediaType } from '../image/mediatypes.js';
import type { Descriptor, ImageManifest } from '../image/schemas.js';
import type { PlannedDocument } from './plan.js';
import type { ImageSource } from './source.js';

export interface ReferrerOptions {
  /** Carry them (the default, where the destination can hold them); false: skopeo's --remove-signatures. */
  carry?: boolean | undefined;
  /** Only attachments of these artifact types (what is attached to those comes with them). */
  artifactTypes?: string[] | undefined;
}

/** One attachment to carry. */
export interface PlannedReferrer {
  /** The digest of the manifest it is attached to. */
  subject: string;
  document: PlannedDocument;
  /** Its config and layers. */
  blobs: Descriptor[];
  artifactType: string;
  /** cosign's tag it goes under (sha256-HEX.sig, ...); absent for an OCI referrer. */
  tag?: string | undefined;
}

/** What an attached manifest is: its artifactType, else its config's type, else its first layer's. */
export function artifactTypeOf(m: ImageManifest): string {
  if (m.artifactType) return m.artifactType;
  if (m.config.mediaType !== MediaType.OciConfig && m.config.mediaType !== EMPTY_CONFIG)
    return m.config.mediaType;
  return m.layers[0]?.mediaType ?? m.config.mediaType;
}

const EMPTY_CONFIG = 'application/vnd.oci.empty.v1+json';

/** Levels of attachments followed (an image, its SBOM, the SBOM's signature, ...). */
const MAX_DEPTH = 4;
/** More attachments than any image has: a listing that runs on is refused rather than followed. */
const MAX_REFERRERS = 1000;

/**
 * The attachments of `subjects` on `source`, and theirs in turn, each once, in the order found (subjects
 * before what is attached to them).
 */
export async function planReferrers(
  source: ImageSource,
  subjects: string[],
  opts: ReferrerOptions,
  signal?: AbortSignal,
): Promise<PlannedReferrer[]> {
  if (!source.referrers || opts.carry === false) return [];
  const out: PlannedReferrer[] = [];
  const seen = new Set(subjects);
  let level = subjects.map((subject) => ({ subject, top: true }));
  for (let depth = 0; level.length > 0 && depth < MAX_DEPTH; depth++) {
    const next: typeof level = [];
    for (const { subject, top } of level) {
      for (const entry of await source.referrers(subject, signal)) {
        const d = entry.descriptor;
        if (seen.has(d.digest)) continue;
        if (
          top &&
          opts.artifactTypes?.length &&
          d.artifactType &&
          !opts.artifactTypes.includes(d.artifactType)
        )
          continue;
        seen.add(d.digest);
        const planned = await planReferrer(source, subject, entry.descriptor, entry.tag, signal);
        if (!planned) continue;
        if (top && opts.artifactTypes?.length && !opts.artifactTypes.includes(planned.artifactType)) continue;
        out.push(planned);
        if (out.length > MAX_REFERRERS) {
          throw new StowageError(
            'TOO_LARGE',
            `${source.description} lists more than ${MAX_REFERRERS} attachments for one image; carry fewer with --referrer-type, or none with --remove-signatures`,
          );
        }
        next.push({ subject: d.digest, top: false });
      }
    }
    level = next;
  }
  return out;
}

/** One attachment's manifest and blobs; undefined for one that is not an image manifest (left behind). */
async function planReferrer(
  source: ImageSource,
  subject: string,
  d: Descriptor,
  tag: string | undefined,
  signal: AbortSignal | undefined,
): Promise<PlannedReferrer | undefined> {
  const m = await source.getManifest(d.digest, signal);
  if (!isManifestMediaType(m.mediaType)) return undefined;
  const manifest = parseManifest(m.bytes, `attachment ${d.digest} of ${source.description}`);
  const blobs = [manifest.config, ...manifest.layers]
    .map((b) => ({ mediaType: b.mediaType, digest: b.digest, size: b.size }))
    .filter((b, i, all) => all.findIndex((x) => x.digest === b.digest) === i);
  const artifactType = artifactTypeOf(manifest);
  // The descriptor a referrers listing gives for it: its artifactType and annotations.
  const descriptor: Descriptor = {
    mediaType: m.mediaType,
    digest: m.digest,
    size: m.bytes.length,
    artifactType,
  };
  if (manifest.annotations && Object.keys(manifest.annotations).length)
    descriptor.annotations = manifest.annotations;
  return {
    subject,
    document: { descriptor, bytes: m.bytes },
    blobs,
    artifactType,
    tag,
  };
}
