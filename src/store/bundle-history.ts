/**
 * Which bundles (air-gap deltas, see bundle/) went out of a store or came into it, and what each
 * carried: what `stowage bundle create --since` subtracts and `stowage bundle list` shows. The local
 * store keeps it in files beside its index (LocalBundleHistory); replicas in PostgreSQL
 * (pg-bundles.ts). Records are never rewritten: a bundle made twice is recorded once.
 */
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../core/atomic.js';
import { StowageError } from '../errors.js';

export interface BundleRecord {
  /** The bundle manifest's digest (sha256:...). */
  id: string;
  /** Made from this store, or imported into it from elsewhere. */
  kind: 'created' | 'imported';
  /** When it was recorded (ISO). */
  at: string;
  /** The bundle file's name (never a path: records reach API clients). */
  file: string;
  /** The file's sha256 and size (the whole file, parts joined). */
  sha256: string;
  size: number;
  versions: number;
  /** Blobs and bytes inside it. */
  blobs: number;
  bytes: number;
  bases: string[];
  through: string;
  /** Parts it was split into (absent: one file). */
  parts?: number | undefined;
  signed?: boolean | undefined;
}

export interface BundleHistory {
  /** Records a bundle and keeps its manifest; a record of the same id and kind already there is kept. */
  add(record: BundleRecord, manifest: Buffer): Promise<void>;
  /** Every record, oldest first. */
  list(): Promise<BundleRecord[]>;
  /** A recorded bundle's manifest, by id. */
  manifest(id: string): Promise<Buffer | undefined>;
}

const HEX = /^sha256:([0-9a-f]{64})$/;

function hexOf(id: string): string {
  const m = HEX.exec(id);
  if (!m) throw new StowageError('INVALID_ARGUMENT', `${id} is not a bundle id (sha256:HEX)`);
  return m[1]!;
}

/**
 * `bundles/history.jsonl` (one record a line, appended) and `bundles/HEX.json` (each manifest) in the
 * store's directory. A line cut short by a crash is passed over.
 */
export class LocalBundleHistory implements BundleHistory {
  constructor(private readonly dir: string) {}

  private get file(): string {
    return join(this.dir, 'history.jsonl');
  }

  async add(record: BundleRecord, manifest: Buffer): Promise<void> {
    if ((await this.list()).some((r) => r.id === record.id && r.kind === record.kind)) return;
    await mkdir(this.dir, { recursive: true });
    // The manifest first: a record is never listed without it.
    await writeFileAtomic(join(this.dir, `${hexOf(record.id)}.json`), manifest);
    await appendFile(this.file, `${JSON.stringify(record)}\n`);
  }

  async list(): Promise<BundleRecord[]> {
    const text = await readFile(this.file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return '';
      throw new StowageError('IO', `cannot read the store's bundle history: ${e.code ?? e.message}`);
    });
    const out: BundleRecord[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        out.push(JSON.parse(line) as BundleRecord);
      } catch {
        // Cut short by a crash: never completed, so never recorded.
      }
    }
    return out;
  }

  async manifest(id: string): Promise<Buffer | undefined> {
    return readFile(join(this.dir, `${hexOf(id)}.json`)).catch(() => undefined);
  }
}
