import { formatReference, type ImageReference } from '../reference/reference.js';
import { CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION } from './oci-archive.js';

/** The names an OCI archive records for a reference: tag as ref.name, the full name for containerd/podman. */
export function archiveAnnotations(ref: ImageReference): Record<string, string> {
  const annotations: Record<string, string> = {};
  if (ref.tag) {
    annotations[REF_NAME_ANNOTATION] = ref.tag;
    annotations[CONTAINERD_NAME_ANNOTATION] = formatReference({ ...ref, digest: undefined });
  } else {
    annotations[CONTAINERD_NAME_ANNOTATION] = formatReference(ref);
  }
  return annotations;
}
