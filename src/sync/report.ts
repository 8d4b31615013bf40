import type { ArchiveStore } from '../store/archive-store.js';
import type { BlobCache } from './blob-cache.js';
import type { MirrorDeletion } from './prune.js';

export type TagAction = 'fetched' | 'skipped' | 'failed' | 'would-fetch' | 'would-skip' | 'would-fail';

export interface TagOutcome {
  tag: string;
  action: TagAction;
  digest?: string | undefined;
  /** What happened at each destination. */
  archive?: 'stored' | 'current' | 'would-store' | undefined;
  /** The tarball written for the new version (with `materialize`). */
  file?: string | undefined;
  mirror?: 'pushed' | 'current' | 'would-push' | undefined;
  /** The version stored now: its id, manifest digest and platforms (with archive "stored"). */
  version?: { id: string; digest: string; platforms: string[] } | undefined;
  /** The source digest the tag's newest stored version had before, if the store had the tag. */
  previous?: string | undefined;
  /** Bytes of blobs fetched from the source for this tag. */
  fetchedBytes: number;
  error?: string | undefined;
  /** The error's stable code (StowageError), with `error`. */
  code?: string | undefined;
}

export interface JobReport {
  name: string;
  /** The repository synced (one of those a pattern found, for a pattern job). */
  source: string;
  /** The job's source pattern, when the repository is one it found (HOST/team/**). */
  pattern?: string | undefined;
  /** Where the repository went, when the job mirrors. */
  mirror?: string | undefined;
  tags: TagOutcome[];
  pruned: { id: string; tag: string; digest: string; taken: string }[];
  /** Mirror tags gone from the source, deleted (prune = true), or to be deleted in a dry run. */
  mirrorDeleted: MirrorDeletion[];
  error?: string | undefined;
  /** The error's stable code (StowageError), with `error`. */
  code?: string | undefined;
}

export interface SyncReport {
  dryRun: boolean;
  store: string;
  jobs: JobReport[];
  fetchedBytes: number;
  failed: number;
  garbage?: { blobs: number; bytes: number } | undefined;
}

export interface BlobEvent {
  type: 'planned' | 'fetched' | 'cached';
  digest: string;
  size: number;
}

export interface SyncOptions {
  /** The store to use (default: the file-system store at config.storePath). */
  store?: ArchiveStore | undefined;
  /** Only these jobs (by name). */
  jobs?: string[] | undefined;
  dryRun?: boolean | undefined;
  concurrency?: number | undefined;
  signal?: AbortSignal | undefined;
  onEvent?:
    | ((e: {
        job: string;
        repository: string;
        tag: string;
        outcome: TagOutcome;
        /** The job's mirror repository (REGISTRY/PATH), when it mirrors. */
        mirror?: string | undefined;
      }) => void)
    | undefined;
  /** Blobs as they are stored: planned (per tag), fetched, or found in the store already. */
  onBlob?: ((e: BlobEvent) => void) | undefined;
  /** The mirror blob cache to share (default: opened from config.cache when a job mirrors). */
  blobCache?: BlobCache | undefined;
}
