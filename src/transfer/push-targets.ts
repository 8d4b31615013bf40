import { StowageError } from '../errors.js';
import {
  formatReference,
  type ImageReference,
  parseReference,
  withDefaultTag,
} from '../reference/reference.js';
import { registrySpelling } from '../reference/transport.js';
import type { ListedImage } from '../transports/archive/source.js';

/** What a push or copy sent: blobs uploaded, found, mounted, and bytes. */

/** How DEST is to be read: one repository (and tag), or a registry/namespace each image maps under. */
export interface Destination {
  ref: ImageReference;
  /** DEST named a registry or namespace: images keep their own repository paths beneath it. */
  mapping: boolean;
}

export function parseDestination(dest: string, images: number): Destination {
  const input = registrySpelling(dest);
  const slash = input.indexOf('/');
  if (slash < 0) {
    // A registry alone: "127.0.0.1:5000" or "registry.internal".
    const ref = parseReference(`${input}/x`);
    if (ref.shortName) {
      throw new StowageError(
        'INVALID_REFERENCE',
        `"${dest}" names no registry; give registry[/namespace] or registry/repository[:tag], e.g. registry.internal:5000/team/app:1.4`,
      );
    }
    return { ref: { ...ref, path: '' }, mapping: true };
  }
  const ref = parseReference(input);
  if (ref.shortName) {
    throw new StowageError(
      'INVALID_REFERENCE',
      `"${dest}" names no registry; push needs a fully qualified destination, e.g. registry.internal:5000/${ref.path}`,
    );
  }
  if (ref.digest) {
    throw new StowageError(
      'INVALID_REFERENCE',
      `"${dest}": a destination takes a tag, not a digest (the digest is the image's own)`,
    );
  }
  if (images > 1 && ref.tag) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${images} images cannot all go to one tag (${dest}); give a registry or namespace, or choose one image with --image`,
    );
  }
  return { ref, mapping: images > 1 };
}

const BARE_TAG = /^[\w][\w.-]{0,127}$/;

/** The references an archive records for an image: full names (with tags) and bare tags. */
export function recordedNames(img: ListedImage): { full: ImageReference[]; tags: string[] } {
  const full: ImageReference[] = [];
  const tags: string[] = [];
  for (const n of img.names) {
    if (!n.includes('/') && BARE_TAG.test(n)) {
      tags.push(n);
      continue;
    }
    try {
      const ref = withDefaultTag(parseReference(n));
      full.push(ref);
      if (ref.tag) tags.push(ref.tag);
    } catch {
      // A name that is not a reference (a free-form ref.name): not usable as a destination.
    }
  }
  return { full, tags: [...new Set(tags)] };
}

/** Destination references for one image, grouped by repository. */
export function targetsFor(
  img: ListedImage,
  index: number,
  dest: Destination,
  opts: { prefix?: string | undefined; allTags?: boolean | undefined },
  what: string,
): ImageReference[] {
  const { full, tags } = recordedNames(img);
  const prefix = opts.prefix ?? '';
  if (!dest.mapping) {
    const chosen = dest.ref.tag ? [dest.ref.tag] : opts.allTags ? tags : tags.slice(0, 1);
    if (chosen.length === 0) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `${what} @${index} records no tag; give one in the destination (${formatReference({ ...dest.ref, tag: 'TAG' })})`,
      );
    }
    return chosen.map((tag) => ({ ...dest.ref, tag }));
  }
  if (full.length === 0) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${what} @${index} records no repository name to map under ${formatReference(dest.ref)}; push it alone with --image @${index} and a destination repository:tag`,
    );
  }
  const names = opts.allTags ? full : full.slice(0, 1);
  const out: ImageReference[] = [];
  for (const n of names) {
    const path = [dest.ref.path, `${prefix}${n.path}`].filter(Boolean).join('/');
    out.push({ domain: dest.ref.domain, path, tag: n.tag, shortName: false });
  }
  // Bare tags (an OCI ref.name) go with the first repository.
  if (opts.allTags) {
    for (const t of tags) if (!out.some((o) => o.tag === t)) out.push({ ...out[0]!, tag: t });
  }
  return out;
}
