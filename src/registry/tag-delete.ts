/**
 * Removing one tag from a repository, and only that tag. A DELETE by tag is what the OCI distribution
 * spec offers, but registries may refuse it (docker-registry 2.8 does), and a DELETE by the tag's digest
 * would take every other tag naming the same manifest with it. So where DELETE by tag is refused, the
 * tag is first moved onto a manifest of its own (an empty artifact that names the tag and the time,
 * hence unique), and that manifest is deleted by its digest: the tag goes, nothing else does.
 */
import { StowageError } from '../errors.js';
import { sha256Digest } from '../image/digest.js';
import { MediaType } from '../image/mediatypes.js';
import type { RegistryClient } from './client.js';

/** OCI's empty descriptor content: the config of an artifact with nothing to configure. */
const EMPTY = Buffer.from('{}');
const EMPTY_TYPE = 'application/vnd.oci.empty.v1+json';
/** What the placeholder manifest is, for anyone who finds it before it is deleted. */
export const TAG_DELETION_ARTIFACT = 'application/vnd.stowage.tag-deletion.v1';

export async function deleteTag(
  client: RegistryClient,
  repo: string,
  tag: string,
  signal?: AbortSignal,
): Promise<void> {
  if (await client.deleteManifest(repo, tag, signal)) return;
  const empty = { mediaType: EMPTY_TYPE, digest: sha256Digest(EMPTY), size: EMPTY.length };
  if (!(await client.hasBlob(repo, empty.digest, signal))) {
    const session = await client.startUpload(repo, undefined, signal);
    if (!session.mounted) await client.finishUpload(session, repo, empty.digest, EMPTY.length, EMPTY, signal);
  }
  const placeholder = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      artifactType: TAG_DELETION_ARTIFACT,
      config: empty,
      layers: [empty],
      annotations: {
        'org.opencontainers.image.ref.name': tag,
        'org.opencontainers.image.created': new Date().toISOString(),
      },
    }),
  );
  const { digest } = await client.putManifest(repo, tag, placeholder, MediaType.OciManifest, signal);
  await client.deleteManifest(repo, digest, signal).catch((e: unknown) => {
    // Gone already: a retried DELETE whose first attempt did it.
    if (!(e instanceof StowageError && e.code === 'NOT_FOUND')) throw e;
  });
}
