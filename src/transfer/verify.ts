/**
 * `stowage verify`: reads an archive or layout end to end and says whether it is intact. Every blob is
 * digest- and size-checked, every manifest and index is checked against its descriptor, configs are
 * parsed, each layer is decompressed and its digest compared with the config's diff_id, and the
 * archive file is hashed against the `.sha256` beside it. Problems are collected, not thrown, so one
 * run reports all of them.
 */

import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Compression, decompressed } from '../archive/decompress.js';
import { ArchiveHasher } from '../archive/hasher.js';
import { Limiter } from '../core/limiter.js';
import { deadLeftovers, partialPid, tmpPid } from '../core/partials.js';
import { StowageError, toStowageError } from '../errors.js';
import { DigestVerifier } from '../image/digest.js';
import { isIndexMediaType, isManifestMediaType, MAX_MANIFEST_BYTES, MediaType } from '../image/mediatypes.js';
import { formatPlatform } from '../image/platform.js';
import {
  type Descriptor,
  imageConfigSchema,
  imageIndexSchema,
  imageManifestSchema,
} from '../image/schemas.js';
import { ANNOTATION } from '../store/version.js';
import { type ArchiveFormat, ArchiveSource, documentMediaType } from '../transports/archive/source.js';

/** What a problem says about the archive; each has its own exit code. */
export type ProblemKind = 'blob' | 'consistency' | 'checksum';

export interface VerifyProblem {
  kind: ProblemKind;
  message: string;
}

export type ChecksumStatus = 'ok' | 'mismatch' | 'absent' | 'not-applicable';

export interface VerifyReport {
  path: string;
  format: ArchiveFormat;
  ok: boolean;
  images: number;
  manifests: number;
  blobs: number;
  /** Bytes of blobs and documents read and checked. */
  bytes: number;
  checksum: {
    status: ChecksumStatus;
    /** The archive file's sha256 (hex), for files. */
    sha256?: string | undefined;
    expected?: string | undefined;
    /** Where the expected value came from: PATH.sha256 or --sha256. */
    source?: string | undefined;
  };
  problems: VerifyProblem[];
  /** Facts worth knowing that do not make the archive invalid. */
  warnings: string[];
}

export interface VerifyOptions {
  format?: ArchiveFormat | undefined;
  /** Expected sha256 of the archive file (hex), instead of PATH.sha256. */
  sha256?: string | undefined;
  /** Fail when there is no checksum to compare with. */
  requireChecksum?: boolean;
  concurrency?: number;
  signal?: AbortSignal | undefined;
}

export { VERIFY_EXIT, verifyExitCode } from './verify-exit.js';

const DAMAGED = 'the archive is damaged';

const IMAGE_CONFIG_TYPES = new Set<string>([MediaType.OciConfig, MediaType.DockerConfig]);

/** The sha256 recorded in a sha256sum-style file ("<hex>  <name>"). */
async function readChecksumFile(path: string): Promise<string | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const m = /^([0-9a-f]{64})\b/i.exec(text.trim());
  if (!m) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `${path} does not hold a sha256 (expected "<64 hex digits>  <file name>", as sha256sum writes)`,
    );
  }
  return m[1]!.toLowerCase();
}

export async function verifyArchive(path: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  if (opts.sha256 !== undefined && !/^[0-9a-f]{64}$/i.test(opts.sha256)) {
    throw new StowageError('INVALID_ARGUMENT', `--sha256 "${opts.sha256}" is not 64 hex digits`);
  }
  const source = await ArchiveSource.open(path, opts.format);
  const st = await stat(path);
  // The whole file is hashed on a worker while the blobs are checked here.
  let hasher: ArchiveHasher | undefined;
  if (st.isFile()) {
    hasher = new ArchiveHasher(path, [{ start: 0, length: st.size }]);
    hasher.written(0, st.size);
  }
  try {
    const check = new ArchiveCheck(path, source, opts);
    await Promise.all([
      ...source.images.map((img) => check.document(img.descriptor, undefined, pulledThrough(img.descriptor))),
      // What is attached to them (signatures, SBOMs) is checked too.
      ...source.attachments.map((d) => check.document(d, undefined)),
    ]);
    check.settleMissing();
    const report = check.report;
    if (hasher) {
      const { archive } = await hasher.finish();
      hasher = undefined;
      await compareChecksum(report, archive, opts);
    } else if (opts.requireChecksum || opts.sha256) {
      check.problem('checksum', `${path} is a directory; only archive files have a sha256`);
    }
    if (st.isDirectory()) report.warnings.push(...(await leftoverNotes(path)));
    report.ok = report.problems.length === 0;
    return report;
  } finally {
    hasher?.abort();
    await source.close();
  }
}

/** Compares the archive's sha256 with --sha256 or PATH.sha256, noting a mismatch or a missing one. */
async function compareChecksum(report: VerifyReport, archive: string, opts: VerifyOptions): Promise<void> {
  const path = report.path;
  report.checksum.sha256 = archive;
  const expected = opts.sha256?.toLowerCase() ?? (await readChecksumFile(`${path}.sha256`));
  report.checksum.source = opts.sha256 ? '--sha256' : `${path}.sha256`;
  if (expected === undefined) {
    report.checksum.status = 'absent';
    report.checksum.source = undefined;
    if (opts.requireChecksum)
      report.problems.push({
        kind: 'checksum',
        message: `there is no ${path}.sha256 to check the archive against (give --sha256)`,
      });
    return;
  }
  report.checksum.expected = expected;
  report.checksum.status = expected === archive ? 'ok' : 'mismatch';
  if (expected !== archive) {
    report.problems.push({
      kind: 'checksum',
      message: `the archive's sha256 is ${archive}, but ${report.checksum.source} says ${expected}: the file changed after it was written`,
    });
  }
}

/**
 * One verification: every document and blob the archive's images name, each read once (a few at a
 * time), each problem noted rather than thrown, so the report lists them all.
 */
class ArchiveCheck {
  readonly report: VerifyReport;
  private readonly limiter: Limiter;
  private readonly documents = new Map<string, Promise<void>>();
  private readonly blobs = new Map<string, Promise<string | undefined>>();
  private readonly signal: AbortSignal | undefined;
  /** Blobs found missing, each with its message, and whether every image that needs it may lack it. */
  private readonly missing = new Map<string, string>();
  private readonly needs = new Map<string, boolean>();

  constructor(
    path: string,
    private readonly source: ArchiveSource,
    opts: VerifyOptions,
  ) {
    this.limiter = new Limiter(Math.max(1, opts.concurrency ?? 4));
    this.signal = opts.signal;
    this.report = {
      path,
      format: source.format,
      ok: false,
      images: source.images.length,
      manifests: 0,
      blobs: 0,
      bytes: 0,
      checksum: { status: 'not-applicable' },
      problems: [],
      warnings: [],
    };
  }

  problem(kind: ProblemKind, message: string): void {
    this.report.problems.push({ kind, message });
  }

  /** Notes that an image needs a blob; `sparse`: a version pulled through, which may lack it. */
  private need(digest: string, sparse: boolean): void {
    this.needs.set(digest, (this.needs.get(digest) ?? true) && sparse);
  }

  /**
   * Missing blobs as problems, but for those only versions pulled through need: the registry's
   * pull-through keeps what clients asked for, so their absence is said, not counted as damage.
   */
  settleMissing(): void {
    for (const [digest, message] of this.missing) {
      if (this.needs.get(digest)) {
        this.report.warnings.push(`${message}: a version pulled through holds only what clients asked for`);
      } else {
        this.problem('blob', message);
      }
    }
  }

  /** Reads a blob through, checking digest and size; returns the digest of its decompressed bytes. */
  blob(d: Descriptor, what: string, decompress: boolean, sparse: boolean): Promise<string | undefined> {
    this.need(d.digest, sparse);
    const key = `${d.digest} ${decompress}`;
    let p = this.blobs.get(key);
    if (!p) {
      p = this.limiter.run(() => this.readBlob(d, what, decompress));
      this.blobs.set(key, p);
    }
    return p;
  }

  private async readBlob(d: Descriptor, what: string, decompress: boolean): Promise<string | undefined> {
    this.signal?.throwIfAborted();
    // Every blob counts in the summary, the missing and damaged ones too.
    this.report.blobs++;
    if (!(await this.source.has(d.digest))) {
      this.missing.set(d.digest, `${what} ${d.digest} is missing from the archive`);
      return undefined;
    }
    const v = new DigestVerifier(d.digest, d.size, `${what} ${d.digest}`, DAMAGED);
    const plain = createHash('sha256');
    let compression: Compression = 'none';
    const signal = this.signal;
    const source = this.source;
    const counted = (async function* () {
      for await (const c of await source.getBlob(d, signal)) {
        v.update(c);
        yield c;
      }
    })();
    try {
      if (decompress) {
        for await (const c of decompressed(counted, (c) => {
          compression = c;
        }))
          plain.update(c);
      } else {
        for await (const _ of counted);
      }
      v.finish();
    } catch (e) {
      const err = toStowageError(e);
      if (err.code === 'DIGEST_MISMATCH' || err.code === 'INVALID_ARCHIVE') {
        this.problem('blob', err.message);
        return undefined;
      }
      if (err.code === 'ABORTED' || err.code === 'IO') throw err;
      await this.undecompressable(d, what, compression, err.message);
      return undefined;
    }
    this.report.bytes += v.bytes;
    return decompress ? `sha256:${plain.digest('hex')}` : undefined;
  }

  /**
   * A blob that does not decompress. If its bytes match their digest, the producer stored a broken
   * layer; otherwise they were damaged since. A second, digest-only read tells which.
   */
  private async undecompressable(
    d: Descriptor,
    what: string,
    compression: Compression,
    why: string,
  ): Promise<void> {
    const again = new DigestVerifier(d.digest, d.size, `${what} ${d.digest}`, DAMAGED);
    try {
      for await (const c of await this.source.getBlob(d, this.signal)) again.update(c);
      again.finish();
    } catch (e2) {
      this.problem('blob', toStowageError(e2).message);
      return;
    }
    this.problem('consistency', `${what} ${d.digest} does not decompress as ${compression}: ${why}`);
  }

  /** An image manifest: its config read and parsed, each layer checked against the config's diff_id. */
  private async image(manifest: Buffer, digest: string, sparse: boolean): Promise<void> {
    const parsed = imageManifestSchema.safeParse(jsonOrUndefined(manifest));
    if (!parsed.success) {
      this.problem('consistency', `manifest ${digest} is not a valid image manifest`);
      return;
    }
    const m = parsed.data;
    if (m.config.size > MAX_MANIFEST_BYTES) {
      this.problem(
        'consistency',
        `config ${m.config.digest} is ${m.config.size} bytes, over the 4 MiB limit`,
      );
      return;
    }
    if (!IMAGE_CONFIG_TYPES.has(m.config.mediaType)) {
      // An artifact (signature, attestation, chart): its blobs have no diff_ids to compare.
      await Promise.all([
        this.blob(m.config, 'config', false, sparse),
        ...m.layers.map((l) => this.blob(l, 'blob', false, sparse)),
      ]);
      return;
    }
    const diffIds = await this.diffIds(m.config, digest, sparse);
    if (!diffIds) return;
    if (diffIds.length !== m.layers.length) {
      this.problem(
        'consistency',
        `manifest ${digest} has ${m.layers.length} layers but its config ${m.config.digest} lists ${diffIds.length} diff_ids`,
      );
    }
    await Promise.all(
      m.layers.map(async (l, i) => {
        const diffId = diffIds[i];
        // An uncompressed layer is its own diff_id: the digest check covers it.
        const plain = await this.blob(l, 'layer', diffId !== undefined && diffId !== l.digest, sparse);
        if (plain !== undefined && diffId !== undefined && plain !== diffId) {
          this.problem(
            'consistency',
            `layer ${i} (${l.digest}) of manifest ${digest} decompresses to ${plain}, but the config's diff_id is ${diffId}`,
          );
        }
      }),
    );
  }

  /** An image config's diff_ids (undefined, with the problem noted, when it is missing or invalid). */
  private async diffIds(
    configDesc: Descriptor,
    manifest: string,
    sparse: boolean,
  ): Promise<string[] | undefined> {
    this.need(configDesc.digest, sparse);
    // Counted once, whether it proves intact or not.
    const configKey = `${configDesc.digest} false`;
    const firstSight = !this.blobs.has(configKey);
    if (firstSight) {
      this.blobs.set(configKey, Promise.resolve(undefined));
      this.report.blobs++;
    }
    if (!(await this.source.has(configDesc.digest))) {
      this.missing.set(
        configDesc.digest,
        `config ${configDesc.digest} of manifest ${manifest} is missing from the archive`,
      );
      return undefined;
    }
    let configBytes: Buffer;
    try {
      const parts: Buffer[] = [];
      const v = new DigestVerifier(
        configDesc.digest,
        configDesc.size,
        `config ${configDesc.digest}`,
        DAMAGED,
      );
      for await (const c of await this.source.getBlob(configDesc, this.signal)) {
        v.update(c);
        parts.push(Buffer.from(c));
      }
      v.finish();
      configBytes = Buffer.concat(parts);
    } catch (e) {
      const err = toStowageError(e);
      if (err.code !== 'DIGEST_MISMATCH') throw err;
      this.problem('blob', err.message);
      return undefined;
    }
    if (firstSight) this.report.bytes += configBytes.length;
    const config = imageConfigSchema.safeParse(jsonOrUndefined(configBytes));
    if (!config.success) {
      this.problem(
        'consistency',
        `config ${configDesc.digest} of manifest ${manifest} is not a valid image config`,
      );
      return undefined;
    }
    return config.data.rootfs?.diff_ids ?? [];
  }

  /** A manifest or index (once, however many indexes name it), and everything under it. */
  document(d: Descriptor, parent: string | undefined, sparse = false): Promise<void> {
    let p = this.documents.get(d.digest);
    if (!p) {
      p = this.readDocument(d, parent, sparse);
      this.documents.set(d.digest, p);
    }
    return p;
  }

  private async readDocument(d: Descriptor, parent: string | undefined, sparse: boolean): Promise<void> {
    if (!(await this.source.has(d.digest, 'manifest'))) {
      if (parent) {
        const platform = d.platform ? ` (${formatPlatform(d.platform)})` : '';
        this.report.warnings.push(
          `index ${parent} names manifest ${d.digest}${platform}, which the archive does not hold; only the platforms present can be restored`,
        );
      } else {
        this.problem('blob', `manifest ${d.digest} is missing from the archive`);
      }
      return;
    }
    const bytes = await this.manifestBytes(d);
    if (!bytes) return;
    let mediaType: string;
    try {
      mediaType = documentMediaType(bytes, `manifest ${d.digest}`);
    } catch (e) {
      this.problem('consistency', toStowageError(e).message);
      return;
    }
    if (isIndexMediaType(mediaType)) {
      const index = imageIndexSchema.safeParse(jsonOrUndefined(bytes));
      if (!index.success) {
        this.problem('consistency', `index ${d.digest} is not a valid image index`);
        return;
      }
      await Promise.all(index.data.manifests.map((child) => this.document(child, d.digest, sparse)));
    } else if (isManifestMediaType(mediaType)) {
      await this.image(bytes, d.digest, sparse);
    } else {
      this.problem('consistency', `manifest ${d.digest} has an unknown media type "${mediaType}"`);
    }
  }

  /** A document's bytes, counted; undefined (the problem noted) when they are damaged or too large. */
  private async manifestBytes(d: Descriptor): Promise<Buffer | undefined> {
    let bytes: Buffer;
    try {
      bytes = (await this.source.getManifest(d.digest)).bytes;
    } catch (e) {
      const err = toStowageError(e);
      if (err.code === 'DIGEST_MISMATCH') this.problem('blob', err.message);
      else if (err.code === 'TOO_LARGE' || err.code === 'INVALID_ARCHIVE')
        this.problem('consistency', err.message);
      else throw err;
      return undefined;
    }
    this.report.manifests++;
    this.report.bytes += bytes.length;
    if (bytes.length !== d.size) {
      this.problem(
        'consistency',
        `manifest ${d.digest} is ${bytes.length} bytes, its descriptor says ${d.size}`,
      );
    }
    return bytes;
  }
}

/**
 * What writers that were killed left in a layout or the archive store (its .tmp): harmless to what the
 * layout holds, but disk space nobody will get back until the next sync or service start removes it.
 */
async function leftoverNotes(path: string): Promise<string[]> {
  const notes: string[] = [];
  for (const [dir, pidOf] of [
    [join(path, '.tmp'), tmpPid],
    [join(path, 'blobs', 'sha256'), partialPid],
  ] as const) {
    const found = await deadLeftovers(dir, pidOf);
    if (found.length === 0) continue;
    const bytes = found.reduce((n, l) => n + l.bytes, 0);
    notes.push(
      `${found.length} leftover file${found.length === 1 ? '' : 's'} (${bytes} bytes) in ${dir} from writes whose process is gone; the next stowage sync or service start removes them`,
    );
  }
  return notes;
}

function jsonOrUndefined(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** Whether index.json marks a version as pulled through the registry (see distribution/). */
function pulledThrough(d: Descriptor): boolean {
  return (d.annotations as Record<string, string> | undefined)?.[ANNOTATION.pulledThrough] === 'true';
}
