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
  | { transport: 'dir'; path: string };

const FILE_TRANSPORTS = ['oci-archive', 'docker-archive', 'oci'] as const;
const UNSUPPORTED_TRANSPORTS = ['containers-storage', 'docker-daemon', 'sif', 'tarball', 'ostree'];

export function parseTransportReference(input: string): TransportReference {
  if (input.startsWith('docker://')) return { transport: 'docker', ref: parseReference(input.slice(9)) };
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
  return { transport: 'docker', ref: parseReference(input) };
}
