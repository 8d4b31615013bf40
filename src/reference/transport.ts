import { statSync } from 'node:fs';
import { StowageError } from '../errors.js';
import { type ImageReference, parseReference } from './reference.js';

/**
 * Transport references, spelled as skopeo spells them. A bare reference means docker://.
 */
export type TransportReference =
  | { transport: 'docker'; ref: ImageReference }
  | { transport: 'oci-archive'; path: string; name?: string | undefined }
  | { transport: 'docker-archive'; path: string; name?: string | undefined }
  | { transport: 'oci'; path: string; name?: string | undefined }
  | { transport: 'dir'; path: string }
  /** A bare path: an archive or layout whose format is read from the file itself. */
  | { transport: 'archive'; path: string };

/** The archive transports, with the format each reads or writes. */
export type ArchiveReference = Exclude<TransportReference, { transport: 'docker' }>;

/**
 * Whether a bare argument names a local archive rather than an image: it starts like a path (/, ./,
 * ../, ~), ends like a tarball, or is a file that exists (never a directory: "alpine" may be both a
 * folder and an image). References never start with / or . and never end in .tar.
 */
export function looksLikePath(input: string): boolean {
  if (/^[./~]/.test(input) || /\.(tar|tar\.gz|tgz)$/.test(input)) return true;
  try {
    return statSync(input).isFile();
  } catch {
    return false;
  }
}

/** A source reference as every command reads it: docker://, TRANSPORT:PATH, a bare path, or a bare image. */

const FILE_TRANSPORTS = ['oci-archive', 'docker-archive', 'oci'] as const;
const UNSUPPORTED_TRANSPORTS = ['containers-storage', 'docker-daemon', 'sif', 'tarball', 'ostree'];

/** A registry reference as given, without skopeo's `docker://` transport prefix if it has one. */
export function registrySpelling(input: string): string {
  return input.startsWith('docker://') ? input.slice('docker://'.length) : input;
}

export function parseTransportReference(input: string): TransportReference {
  if (input.startsWith('docker://'))
    return { transport: 'docker', ref: parseReference(registrySpelling(input)) };
  if (input.startsWith('dir:')) {
    const path = input.slice(4);
    if (!path)
      throw new StowageError('INVALID_REFERENCE', `"${input}": dir: needs a path, as in dir:/srv/img`);
    return { transport: 'dir', path };
  }
  for (const t of FILE_TRANSPORTS) {
    if (input.startsWith(`${t}:`)) {
      const body = input.slice(t.length + 1);
      // PATH[:NAME]: the name part starts at the first colon (paths with colons are not supported, as in skopeo).
      const i = body.indexOf(':');
      const path = i >= 0 ? body.slice(0, i) : body;
      const name = i >= 0 ? body.slice(i + 1) : undefined;
      if (!path)
        throw new StowageError(
          'INVALID_REFERENCE',
          `"${input}": ${t}: needs a path, as in ${t}:/srv/img.tar`,
        );
      return { transport: t, path, name: name || undefined };
    }
  }
  for (const t of UNSUPPORTED_TRANSPORTS) {
    if (input.startsWith(`${t}:`)) {
      throw new StowageError(
        'UNSUPPORTED',
        `the ${t}: transport is not supported; use docker://, oci-archive:, docker-archive:, oci: or dir:`,
      );
    }
  }
  if (looksLikePath(input)) return { transport: 'archive', path: input };
  return { transport: 'docker', ref: parseReference(input) };
}

/** The format to open a parsed archive reference as (undefined: read it from the file). */
export function archiveFormat(
  t: ArchiveReference,
): 'oci-archive' | 'docker-archive' | 'oci' | 'dir' | undefined {
  return t.transport === 'archive' ? undefined : t.transport;
}

/**
 * A destination: unlike a source, a bare path cannot say which format to write, so it is refused with
 * the spellings that do.
 */
export function parseDestinationReference(
  input: string,
): Exclude<TransportReference, { transport: 'archive' }> {
  const t = parseTransportReference(input);
  if (t.transport === 'archive') {
    throw new StowageError(
      'INVALID_REFERENCE',
      `"${input}" is a path, but not which format to write there; say oci-archive:${input}, docker-archive:${input}, oci:${input} or dir:${input}`,
    );
  }
  return t;
}
