/**
 * `prune = true`: a mirror kept an exact copy of its source by deleting the tags the source no longer
 * has (skopeo #2503). Planned first (a dry run shows the plan and deletes nothing), then each tag is
 * removed alone (registry/tag-delete.ts), never the manifest it names: another tag may name it too.
 *
 * Two guards, because a mirror emptied by mistake is an outage:
 *   - a source that lists no tags at all prunes nothing (a repository emptied or replaced by mistake
 *     would otherwise empty the mirror); the job reports it as an error.
 *   - attachment tags (cosign's sha256-HEX.sig/.att/.sbom, the referrers tag schema's sha256-HEX) are
 *     kept while their subject is the digest of a tag the mirror keeps: stowage's own signatures of
 *     the mirror's images are not in the source, and are not pruned while their image stays.
 */
import { Limiter } from '../core/limiter.js';
import { StowageError } from '../errors.js';
import type { RegistryClient } from '../registry/client.js';
import { deleteTag } from '../registry/tag-delete.js';

/** A mirror tag gone from the source: deleted, or (a dry run) to be. */
export interface MirrorDeletion {
  tag: string;
  /** The manifest the tag named (it stays in the registry, untagged, for its garbage collector). */
  digest?: string | undefined;
}

const ATTACHMENT_TAG = /^sha256-([0-9a-f]{64})(?:\.[a-z]+)?$/;

interface Mirror {
  client: RegistryClient;
  repo: string;
}

/** The mirror's tags the source does not have, guarded as above; nothing is deleted here. */
export async function planPrune(
  mirror: Mirror,
  sourceTags: string[],
  signal?: AbortSignal,
): Promise<MirrorDeletion[]> {
  const mirrorTags = await mirror.client.listTags(mirror.repo, signal).catch((e: unknown) => {
    // A mirror repository not created yet has nothing to prune.
    if (e instanceof StowageError && e.code === 'NOT_FOUND') return [] as string[];
    throw e;
  });
  const source = new Set(sourceTags);
  const gone = mirrorTags.filter((t) => !source.has(t));
  if (gone.length === 0) return [];
  if (sourceTags.length === 0) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `the source lists no tags, so prune deleted none of the mirror's ${mirrorTags.length} (it would have emptied ${mirror.client.host}/${mirror.repo}); delete them by hand if that is meant`,
    );
  }
  const head = async (tag: string) => (await mirror.client.headManifest(mirror.repo, tag, signal))?.digest;
  const limiter = new Limiter(8);
  const attachments = gone.filter((t) => ATTACHMENT_TAG.test(t));
  const keptDigests = new Set<string>();
  if (attachments.length > 0) {
    const kept = mirrorTags.filter((t) => source.has(t) && !ATTACHMENT_TAG.test(t));
    const digests = await Promise.all(kept.map((t) => limiter.run(() => head(t))));
    for (const d of digests) if (d) keptDigests.add(d);
  }
  const doomed = gone.filter((t) => {
    const m = ATTACHMENT_TAG.exec(t);
    return !m || !keptDigests.has(`sha256:${m[1]}`);
  });
  return Promise.all(doomed.map((tag) => limiter.run(async () => ({ tag, digest: await head(tag) }))));
}

/**
 * Deletes the planned tags, each alone, one after another: docker-registry 2.8 answers 500 to deletes
 * running at once in one repository (each walks the repository's tags while another removes one).
 * Returns those deleted (all, or it throws on the first failure).
 */
export async function applyPrune(
  mirror: Mirror,
  plan: MirrorDeletion[],
  signal?: AbortSignal,
): Promise<MirrorDeletion[]> {
  for (const d of plan) await deleteTag(mirror.client, mirror.repo, d.tag, signal);
  return plan;
}
