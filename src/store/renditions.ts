/**
 * Renditions: archives made from a stored version in another format (a docker-archive of one platform)
 * and kept so the next download is served at once. They are reproducible, so one never goes stale; it
 * is dropped with its version. A single service keeps them on its disk; replicas sharing a store keep
 * them in the bucket (issue 22), so a replica never builds what another has built, and a replica's
 * disk holds nothing another needs.
 */
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { StowageError } from '../errors.js';
import type { ArchiveView } from './view.js';

export interface Rendition {
  view: ArchiveView;
  size: number;
  sha256: string;
}

export interface Renditions {
  /** A kept rendition, if one was made. */
  get(versionId: string, name: string): Promise<Rendition | undefined>;
  /** Where to make one: a new file path for it (its `.sha256` beside it). */
  workPath(versionId: string, name: string): Promise<string>;
  /** Keeps the file made at the work path; returns it as served from where it is kept. */
  keep(
    versionId: string,
    name: string,
    made: { path: string; size: number; sha256: string },
  ): Promise<Rendition>;
  /** Drops a version's renditions. */
  drop(versionId: string): Promise<void>;
}

/** A file as an ArchiveView (1 MiB reads; a file that changed size is an error, not a short answer). */
export function fileView(path: string, size: number): ArchiveView {
  return {
    size,
    async *read(start, end, signal) {
      const s = await stat(path);
      if (s.size !== size) throw new StowageError('IO', 'a kept rendition changed size; ask again');
      for await (const c of createReadStream(path, { start, end, highWaterMark: 1 << 20, signal }))
        yield c as Buffer;
    },
  };
}

/** Renditions in a local directory, VERSION/NAME.tar with NAME.tar.sha256 beside it; made in place. */
export class LocalRenditions implements Renditions {
  constructor(private readonly dir: string) {}

  async get(versionId: string, name: string): Promise<Rendition | undefined> {
    const path = this.path(versionId, name);
    const have = await stat(path).catch(() => undefined);
    const sum = await readFile(`${path}.sha256`, 'utf8').catch(() => undefined);
    if (!have || !sum) return undefined;
    return { view: fileView(path, have.size), size: have.size, sha256: sum.slice(0, 64) };
  }

  async workPath(versionId: string, name: string): Promise<string> {
    await mkdir(join(this.dir, versionId), { recursive: true });
    return this.path(versionId, name);
  }

  async keep(versionId: string, name: string, made: { path: string; size: number; sha256: string }) {
    return { view: fileView(this.path(versionId, name), made.size), size: made.size, sha256: made.sha256 };
  }

  async drop(versionId: string): Promise<void> {
    await rm(join(this.dir, versionId), { recursive: true, force: true });
  }

  private path(versionId: string, name: string): string {
    return join(this.dir, versionId, `${name}.tar`);
  }
}

/** What S3Renditions needs of the bucket (S3Blobs has it). */
export interface RenditionBucket {
  putFile(name: string, path: string, size: number, sha256: string): Promise<void>;
  headFile(name: string): Promise<{ size: number; sha256: string } | undefined>;
  openFile(
    name: string,
    range: { start: number; end: number },
    signal?: AbortSignal,
  ): Promise<AsyncIterable<Uint8Array>>;
  deleteFiles(namePrefix: string): Promise<void>;
}

/**
 * Renditions in the shared bucket, PREFIX/renditions/VERSION/NAME.tar with their sha256 in the object's
 * metadata: made in the replica's work directory, uploaded (S3 checks the sha256), the local file
 * removed, and served with ranged GETs like the blobs.
 */
export class S3Renditions implements Renditions {
  constructor(
    private readonly bucket: RenditionBucket,
    private readonly workDir: string,
  ) {}

  async get(versionId: string, name: string): Promise<Rendition | undefined> {
    const key = this.key(versionId, name);
    const head = await this.bucket.headFile(key);
    return head && { ...head, view: this.view(key, head.size) };
  }

  async workPath(versionId: string, name: string): Promise<string> {
    await mkdir(this.workDir, { recursive: true });
    // The process id in the name: the sweep at start removes what a killed replica left.
    return join(this.workDir, `rendition-${process.pid}-${versionId}-${name}.tar`);
  }

  async keep(versionId: string, name: string, made: { path: string; size: number; sha256: string }) {
    const key = this.key(versionId, name);
    try {
      await this.bucket.putFile(key, made.path, made.size, made.sha256);
    } finally {
      await rm(made.path, { force: true });
      await rm(`${made.path}.sha256`, { force: true });
    }
    return { view: this.view(key, made.size), size: made.size, sha256: made.sha256 };
  }

  async drop(versionId: string): Promise<void> {
    await this.bucket.deleteFiles(`renditions/${versionId}/`);
  }

  private key(versionId: string, name: string): string {
    return `renditions/${versionId}/${name}.tar`;
  }

  private view(key: string, size: number): ArchiveView {
    const bucket = this.bucket;
    return {
      size,
      async *read(start, end, signal) {
        for await (const c of await bucket.openFile(key, { start, end }, signal)) yield c as Buffer;
      },
    };
  }
}
