/**
 * Pruning a mirror in process, against a fake registry client that deletes by tag only where told to:
 * which tags go, which attachment tags stay, the empty-source guard, and that a tag is removed alone
 * (never by the digest other tags share).
 */
import { describe, expect, it } from 'vitest';
import { StowageError } from '../errors.js';
import type { RegistryClient } from '../registry/client.js';
import { TAG_DELETION_ARTIFACT } from '../registry/tag-delete.js';
import { applyPrune, planPrune } from './prune.js';

const d = (n: number) => `sha256:${String(n).repeat(64).slice(0, 64)}`;
const sig = (digest: string) => `sha256-${digest.slice(7)}.sig`;

/** A repository's tags -> digests, and the calls made to it. */
class FakeRegistry {
  readonly host = 'mirror.test';
  readonly calls: string[] = [];
  readonly manifests = new Map<string, Buffer>();
  constructor(
    readonly tags: Map<string, string> | undefined,
    /** Whether DELETE by tag works (docker-registry 2.8: no). */
    readonly deletesTags = false,
  ) {}
  async listTags(): Promise<string[]> {
    if (!this.tags) throw new StowageError('NOT_FOUND', 'repository not found');
    return [...this.tags.keys()];
  }
  async headManifest(_repo: string, tag: string) {
    const digest = this.tags?.get(tag);
    return digest ? { digest, mediaType: 'x', size: 1 } : undefined;
  }
  async deleteManifest(_repo: string, ref: string): Promise<boolean> {
    this.calls.push(`DELETE ${ref}`);
    if (!ref.includes(':')) {
      if (!this.deletesTags) return false;
      this.tags!.delete(ref);
      return true;
    }
    for (const [t, digest] of this.tags!) if (digest === ref) this.tags!.delete(t);
    return true;
  }
  async hasBlob(): Promise<boolean> {
    return false;
  }
  async startUpload() {
    this.calls.push('POST upload');
    return { mounted: false as const, location: new URL('http://mirror.test/u'), minChunk: undefined };
  }
  async finishUpload() {
    this.calls.push('PUT blob');
  }
  async putManifest(_repo: string, tag: string, bytes: Buffer) {
    const digest = `sha256:${'f'.repeat(63)}${this.manifests.size}`;
    this.manifests.set(digest, bytes);
    this.tags!.set(tag, digest);
    this.calls.push(`PUT ${tag}`);
    return { digest, subjectIndexed: false };
  }
  get client(): RegistryClient {
    return this as unknown as RegistryClient;
  }
}

describe('prune', () => {
  it('plans the tags gone from the source, keeping signatures of images the mirror keeps', async () => {
    const reg = new FakeRegistry(
      new Map([
        ['1.0', d(1)],
        ['1.1', d(2)],
        ['latest', d(1)],
        ['hotfix', d(1)],
        [sig(d(1)), d(7)],
        [sig(d(2)), d(8)],
      ]),
    );
    const plan = await planPrune({ client: reg.client, repo: 'm' }, ['1.0', 'latest']);
    expect(plan.map((p) => p.tag).sort()).toEqual(['1.1', 'hotfix', sig(d(2))].sort());
    expect(plan.find((p) => p.tag === 'hotfix')?.digest).toBe(d(1));
    expect(reg.calls).toEqual([]);
  });

  it('deletes each tag alone: by tag where the registry can, else through a placeholder of its own', async () => {
    for (const deletesTags of [true, false]) {
      const reg = new FakeRegistry(
        new Map([
          ['keep', d(1)],
          ['gone', d(1)],
        ]),
        deletesTags,
      );
      const mirror = { client: reg.client, repo: 'm' };
      await applyPrune(mirror, await planPrune(mirror, ['keep']));
      expect([...reg.tags!.entries()]).toEqual([['keep', d(1)]]);
      // The shared digest is never deleted.
      expect(reg.calls).not.toContain(`DELETE ${d(1)}`);
      if (!deletesTags) {
        const [placeholder] = [...reg.manifests.values()].map((b) => JSON.parse(b.toString()));
        expect(placeholder.artifactType).toBe(TAG_DELETION_ARTIFACT);
        expect(reg.calls).toEqual([
          'DELETE gone',
          'POST upload',
          'PUT blob',
          'PUT gone',
          expect.stringMatching(/^DELETE sha256:f+/),
        ]);
      }
    }
  });

  it('prunes nothing from a source that lists no tags, and nothing of a mirror not made yet', async () => {
    const reg = new FakeRegistry(new Map([['1.0', d(1)]]));
    const err = await planPrune({ client: reg.client, repo: 'm' }, []).catch((e) => e);
    expect(err.message).toContain('the source lists no tags');
    expect(reg.tags!.size).toBe(1);
    expect(await planPrune({ client: new FakeRegistry(undefined).client, repo: 'm' }, ['1.0'])).toEqual([]);
  });
});
