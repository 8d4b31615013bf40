/**
 * The local store's index on disk: `index.json` (the OCI image index skopeo, umoci and oras read) and
 * beside it `index.journal`, where each change is appended as one JSON line and fsynced before the
 * caller goes on. Recording a version costs one appended line, whatever the store holds; the journal
 * is folded into index.json (compacted) when a run ends, when the store is closed, and when a writer
 * opens a store a crashed one left with a journal.
 *
 * Readers keep the parsed index in memory and look at both files' identity (inode, size, mtime) before
 * answering: what another process appended is read from where this one stopped, and a rewritten
 * index.json is read again whole. A line cut short by a crash (no newline yet) is never read, and the
 * next writer cuts it off before appending.
 *
 * Writers (append, compact) must hold the store's lock; readers need none.
 */
import type { FileHandle } from 'node:fs/promises';
import { open, readFile, stat, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { syncDir, writeFileAtomic } from '../core/atomic.js';
import { StowageError } from '../errors.js';
import type { Descriptor } from '../image/schemas.js';
import { scanIndexPage } from './index-scan.js';
import { ANNOTATION, type StoredAttachment, type StoredVersion, versionId } from './version.js';
import { VersionIndex, type VersionPage, type VersionQuery } from './version-index.js';

/** One change to the index: a version added (at the end), one replaced where it stands, or one removed. */
export type JournalOp = { add: StoredVersion } | { put: StoredVersion } | { remove: string };

interface FileId {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

const same = (a: FileId | undefined, b: FileId | undefined): boolean =>
  a === b ||
  (!!a && !!b && a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs);

export class IndexFiles {
  private index = new VersionIndex();
  /** index.json as last read; undefined before the first read. */
  private indexId: FileId | undefined;
  /** The journal's inode as last read (undefined: there was none), and how far it was read. */
  private journalIno: number | undefined;
  private journalRead = 0;
  /** Bytes past journalRead that were there but not a whole line yet. */
  private journalTorn = false;
  private refreshing: Promise<VersionIndex> | undefined;

  constructor(
    private readonly dir: string,
    /** How messages name the store. */
    private readonly label: string,
  ) {}

  get indexPath(): string {
    return join(this.dir, 'index.json');
  }

  get journalPath(): string {
    return join(this.dir, 'index.journal');
  }

  /** The index as the files hold it now (read again only where they changed). */
  current(): Promise<VersionIndex> {
    this.refreshing ??= this.refresh().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** Whether the index is in memory (read once; after that, only what changed is read). */
  get loaded(): boolean {
    return this.indexId !== undefined;
  }

  /**
   * One page read from the start of index.json without loading the index (see index-scan.ts), or
   * undefined where that would read more than `budget` bytes or the journal removed versions.
   */
  async scanPage(q: VersionQuery, budget: number): Promise<VersionPage | undefined> {
    const journal = await readFile(this.journalPath).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return Buffer.alloc(0);
      throw e;
    });
    if (journal.length > budget) return undefined;
    const ops = wholeLines(journal, journal.length, this.label).ops;
    let fh: FileHandle;
    try {
      fh = await open(this.indexPath, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      return await scanIndexPage(fh, this.label, ops, q, budget);
    } finally {
      await fh.close();
    }
  }

  /** Appends the changes to the journal, durably, and applies them. The caller holds the store's lock. */
  async append(ops: JournalOp[]): Promise<void> {
    if (!ops.length) return;
    await this.current();
    // A line a crashed writer left half-written goes before ours follow it.
    if (this.journalTorn) {
      await truncate(this.journalPath, this.journalRead);
      this.journalTorn = false;
    }
    const text = ops.map((op) => `${JSON.stringify(op)}\n`).join('');
    const fh = await open(this.journalPath, 'a', 0o644);
    try {
      await fh.write(text);
      await fh.datasync();
      const st = await fh.stat();
      if (this.journalIno !== st.ino) {
        // The journal was just made: its name must survive a crash too.
        this.journalIno = st.ino;
        await syncDir(this.dir);
      }
      this.journalRead = st.size;
    } finally {
      await fh.close();
    }
    for (const op of ops) applyOp(this.index, op);
    if (ops.some((op) => !('put' in op))) this.namesChanged = true;
  }

  /**
   * Whether this process added or removed versions (what other tools see in index.json), as against
   * only recording checksums, which stowage alone reads and which can wait for the next compaction.
   */
  namesChanged = false;

  /** Whether the journal holds changes index.json does not have yet. */
  async pending(): Promise<boolean> {
    const st = await stat(this.journalPath).catch(() => undefined);
    return !!st && st.size > 0;
  }

  /** Folds the journal into index.json, then drops it. The caller holds the store's lock. */
  async compact(): Promise<void> {
    const index = await this.current();
    if (!(await this.pending())) return;
    await writeFileAtomic(this.indexPath, indexJson(index.all()));
    // index.json now holds all of it; a crash before the unlink replays changes it already has, which
    // changes nothing.
    await unlink(this.journalPath).catch(() => {});
    await syncDir(this.dir);
    this.indexId = undefined;
    this.namesChanged = false;
    await this.current();
  }

  private async refresh(): Promise<VersionIndex> {
    const [ist, jst] = await Promise.all([fileId(this.indexPath), fileId(this.journalPath)]);
    const reload =
      !this.indexId ||
      !same(ist, this.indexId) ||
      (jst?.ino ?? undefined) !== this.journalIno ||
      (jst !== undefined && jst.size < this.journalRead);
    if (reload) await this.reload();
    else if (jst && jst.size > this.journalRead) await this.readJournal();
    return this.index;
  }

  private async reload(): Promise<void> {
    const fh = await open(this.indexPath, 'r').catch((e: NodeJS.ErrnoException) => {
      // Only a store opened without being made (a dry run) lacks it: no versions yet.
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    let index: VersionIndex;
    if (fh) {
      try {
        const st = await fh.stat();
        index = new VersionIndex(parseIndexJson(await fh.readFile('utf8'), this.label));
        this.indexId = pick(st);
      } finally {
        await fh.close();
      }
    } else {
      index = new VersionIndex();
      this.indexId = { ino: -1, size: 0, mtimeMs: 0, ctimeMs: 0 };
    }
    this.index = index;
    this.journalIno = undefined;
    this.journalRead = 0;
    this.journalTorn = false;
    await this.readJournal();
  }

  /** Reads the journal's whole lines from where the last read stopped, and applies them. */
  private async readJournal(): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await open(this.journalPath, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        this.journalIno = undefined;
        this.journalRead = 0;
        return;
      }
      throw e;
    }
    try {
      const st = await fh.stat();
      this.journalIno = st.ino;
      const length = st.size - this.journalRead;
      if (length <= 0) return;
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, this.journalRead + got);
        if (!bytesRead) break;
        got += bytesRead;
      }
      const { ops, used } = wholeLines(buf, got, this.label);
      this.journalTorn = used < got;
      for (const op of ops) applyOp(this.index, op);
      this.journalRead += used;
    } finally {
      await fh.close();
    }
  }
}

function pick(st: FileId): FileId {
  return { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
}

async function fileId(path: string): Promise<FileId | undefined> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  return st ? pick(st) : undefined;
}

function applyOp(index: VersionIndex, op: JournalOp): void {
  if ('add' in op) index.put(op.add);
  else if ('put' in op) index.put(op.put);
  else index.remove(op.remove);
}

/**
 * The changes in the first `length` bytes of journal text, and how many bytes they took: a last line
 * without its newline (a crash mid-append, or an append under way) is left for later.
 */
function wholeLines(buf: Buffer, length: number, label: string): { ops: JournalOp[]; used: number } {
  const end = length ? buf.lastIndexOf(10, length - 1) : -1;
  if (end < 0) return { ops: [], used: 0 };
  const ops = buf
    .toString('utf8', 0, end)
    .split('\n')
    .filter(Boolean)
    .map((line) => parseOp(line, label));
  return { ops, used: end + 1 };
}

function parseOp(line: string, label: string): JournalOp {
  let op: unknown;
  try {
    op = JSON.parse(line);
  } catch {
    op = undefined;
  }
  const o = op as { add?: StoredVersion; put?: StoredVersion; remove?: string } | undefined;
  if (o && typeof o.remove === 'string') return { remove: o.remove };
  const v = o?.add ?? o?.put;
  if (v && typeof v.id === 'string' && typeof v.descriptor?.digest === 'string')
    return o?.add ? { add: v } : { put: v };
  throw new StowageError(
    'INVALID_ARCHIVE',
    `the store ${label} has a damaged index.journal (a line that is not a change); move it aside and run stowage verify`,
  );
}

/** A version's attachments from its annotation (none where it has none, or it does not parse). */
function attachmentsOf(text: string | undefined): StoredAttachment[] | undefined {
  if (!text) return undefined;
  try {
    const list = JSON.parse(text) as StoredAttachment[];
    return Array.isArray(list) ? list.filter((r) => typeof r?.descriptor?.digest === 'string') : undefined;
  } catch {
    return undefined;
  }
}

const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/**
 * The versions index.json names. Each entry is checked as it is read (a descriptor with a digest,
 * media type and size): one pass, no schema library over tens of thousands of entries.
 */
export function parseIndexJson(text: string, label: string): StoredVersion[] {
  const invalid = () => new StowageError('INVALID_ARCHIVE', `${label}/index.json is not a valid OCI index`);
  let doc: { schemaVersion?: unknown; manifests?: unknown };
  try {
    doc = JSON.parse(text);
  } catch {
    throw invalid();
  }
  if (doc?.schemaVersion !== 2 || !Array.isArray(doc.manifests)) throw invalid();
  const out: StoredVersion[] = [];
  const shared = new Interner();
  for (const d of doc.manifests as Descriptor[]) {
    const v = versionOfEntry(d, invalid, shared);
    if (v) out.push(v);
  }
  return out;
}

/**
 * One copy of what many versions repeat (the repository, the media type, the platform list), so an
 * index of 100,000 versions of a few repositories holds each once.
 */
export class Interner {
  private readonly strings = new Map<string, string>();
  private readonly lists = new Map<string, string[]>();

  string(s: string): string {
    const kept = this.strings.get(s);
    if (kept !== undefined) return kept;
    this.strings.set(s, s);
    return s;
  }

  /** A comma-separated list, shared (callers never change a version's platforms in place). */
  list(joined: string): string[] {
    let kept = this.lists.get(joined);
    if (!kept) {
      kept = joined.split(',').filter(Boolean);
      this.lists.set(joined, kept);
    }
    return kept;
  }
}

/**
 * The version one index.json entry records (undefined for an entry that is not one of stowage's); an
 * entry that is not a descriptor is `invalid()`.
 */
export function versionOfEntry(
  d: Descriptor,
  invalid: () => Error,
  shared: Interner = new Interner(),
): StoredVersion | undefined {
  if (
    typeof d?.mediaType !== 'string' ||
    typeof d.digest !== 'string' ||
    !DIGEST.test(d.digest) ||
    typeof d.size !== 'number'
  )
    throw invalid();
  const a = (d.annotations ?? {}) as Record<string, string>;
  const repository = a[ANNOTATION.repository];
  const tag = a[ANNOTATION.tag];
  if (!repository || !tag) return undefined;
  return {
    id: a[ANNOTATION.id] ?? versionId(repository, tag, d.digest),
    repository: shared.string(repository),
    tag,
    descriptor: { mediaType: shared.string(d.mediaType), digest: d.digest, size: d.size },
    source: a[ANNOTATION.source] ?? '',
    sourceDigest: a[ANNOTATION.sourceDigest],
    taken: a[ANNOTATION.taken] ?? '',
    platforms: shared.list(a[ANNOTATION.platforms] ?? ''),
    archive: a[ANNOTATION.archiveSha256]
      ? { sha256: a[ANNOTATION.archiveSha256]!, size: Number(a[ANNOTATION.archiveSize] ?? 0) }
      : undefined,
    referrers: attachmentsOf(a[ANNOTATION.referrers]),
    ...(a[ANNOTATION.pulledThrough] === 'true' ? { pulledThrough: true } : {}),
  };
}

/** A compact timestamp usable in a ref.name component: 20261123T020100Z. */
function compactTime(iso: string): string {
  return iso.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

/**
 * The annotations of a version's index.json entry (in key order): its name for OCI tools (`refName`),
 * and everything a store needs to take the version back (repository, tag, time, source, attachments).
 */
export function versionAnnotations(
  v: StoredVersion,
  refName: string,
  opts: { storeState?: boolean } = {},
): Record<string, string> {
  const name = `${v.repository}:${v.tag}`;
  const annotations: Record<string, string> = {
    [ANNOTATION.imageName]: name,
    [ANNOTATION.id]: v.id,
    [ANNOTATION.repository]: v.repository,
    [ANNOTATION.source]: v.source,
    [ANNOTATION.tag]: v.tag,
    [ANNOTATION.taken]: v.taken,
    [ANNOTATION.refName]: refName,
  };
  if (v.platforms.length) annotations[ANNOTATION.platforms] = v.platforms.join(',');
  if (v.sourceDigest && v.sourceDigest !== v.descriptor.digest)
    annotations[ANNOTATION.sourceDigest] = v.sourceDigest;
  if (v.referrers?.length) annotations[ANNOTATION.referrers] = JSON.stringify(v.referrers);
  // What this store learned of the version (how it came in, its archive's checksum), not the version.
  if (opts.storeState !== false) {
    if (v.pulledThrough) annotations[ANNOTATION.pulledThrough] = 'true';
    if (v.archive) {
      annotations[ANNOTATION.archiveSha256] = v.archive.sha256;
      annotations[ANNOTATION.archiveSize] = String(v.archive.size);
    }
  }
  return Object.fromEntries(
    Object.keys(annotations)
      .sort()
      .map((k) => [k, annotations[k]!]),
  );
}

/**
 * The ref.name of each version: the newest of each tag is REPOSITORY:TAG (so `oci:STORE:REPOSITORY:TAG`
 * finds it), older ones REPOSITORY:TAG@TAKEN.
 */
export function refNames(versions: StoredVersion[]): string[] {
  const newest = new Map<string, string>();
  for (const v of versions) newest.set(`${v.repository}:${v.tag}`, v.id);
  return versions.map((v) => {
    const name = `${v.repository}:${v.tag}`;
    return newest.get(name) === v.id ? name : `${name}@${compactTime(v.taken)}`;
  });
}

/** index.json for the versions (see refNames for what each is called). */
export function indexJson(versions: StoredVersion[]): string {
  const names = refNames(versions);
  const manifests = versions.map((v, i) => ({
    mediaType: v.descriptor.mediaType,
    digest: v.descriptor.digest,
    size: v.descriptor.size,
    annotations: versionAnnotations(v, names[i]!),
  }));
  return `${JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests })}\n`;
}
