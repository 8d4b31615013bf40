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
  const report: VerifyReport = {
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
  const problem = (kind: ProblemKind, message: string) => report.problems.push({ kind, message });

  // The whole file is hashed on a worker while the blobs are checked here.
  let hasher: ArchiveHasher | undefined;
  if (st.isFile()) {
    hasher = new ArchiveHasher(path, [{ start: 0, length: st.size }]);
    hasher.written(0, st.size);
  }
  try {
    const limiter = new Limiter(Math.max(1, opts.concurrency ?? 4));
    const documents = new Map<string, Promise<void>>();
    const blobs = new Map<string, Promise<string | undefined>>();
    const signal = opts.signal;

    /** Reads a blob through, checking digest and size; returns the digest of its decompressed bytes. */
    const checkBlob = (d: Descriptor, what: string, decompress: boolean): Promise<string | undefined> => {
      const key = `${d.digest} ${decompress}`;
      let p = blobs.get(key);
      if (!p) {
        p = limiter.run(async () => {
          signal?.throwIfAborted();
          // Every blob counts in the summary, the missing and damaged ones too.
          report.blobs++;
          if (!(await source.has(d.digest))) {
            problem('blob', `${what} ${d.digest} is missing from the archive`);
            return undefined;
          }
          const v = new DigestVerifier(d.digest, d.size, `${what} ${d.digest}`, DAMAGED);
          const plain = createHash('sha256');
          let compression: Compression = 'none';
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
          } catch (e) {
            const err = toStowageError(e);
            if (err.code === 'DIGEST_MISMATCH' || err.code === 'INVALID_ARCHIVE') {
              problem('blob', err.message);
              return undefined;
            }
            if (err.code === 'ABORTED' || err.code === 'IO') throw err;
            // The bytes do not decompress. If they match their digest, the producer stored a broken
            // layer; otherwise they were damaged since. A second, digest-only read tells which.
            const again = new DigestVerifier(d.digest, d.size, `${what} ${d.digest}`, DAMAGED);
            try {
              for await (const c of await source.getBlob(d, signal)) again.update(c);
              again.finish();
            } catch (e2) {
              problem('blob', toStowageError(e2).message);
              return undefined;
            }
            problem(
              'consistency',
              `${what} ${d.digest} does not decompress as ${compression}: ${err.message}`,
            );
            return undefined;
          }
          try {
            v.finish();
          } catch (e) {
            problem('blob', toStowageError(e).message);
            return undefined;
          }
          report.bytes += v.bytes;
          return decompress ? `sha256:${plain.digest('hex')}` : undefined;
        });
        blobs.set(key, p);
      }
      return p;
    };

    const checkImage = async (manifest: Buffer, digest: string) => {
      const parsed = imageManifestSchema.safeParse(jsonOrUndefined(manifest));
      if (!parsed.success) {
        problem('consistency', `manifest ${digest} is not a valid image manifest`);
        return;
      }
      const m = parsed.data;
      const configDesc = m.config;
      if (configDesc.size > MAX_MANIFEST_BYTES) {
        problem(
          'consistency',
          `config ${configDesc.digest} is ${configDesc.size} bytes, over the 4 MiB limit`,
        );
        return;
      }
      if (!IMAGE_CONFIG_TYPES.has(configDesc.mediaType)) {
        // An artifact (signature, attestation, chart): its blobs have no diff_ids to compare.
        await Promise.all([
          checkBlob(configDesc, 'config', false),
          ...m.layers.map((l) => checkBlob(l, 'blob', false)),
        ]);
        return;
      }
      // Counted once, whether it proves intact or not.
      const configKey = `${configDesc.digest} false`;
      const firstSight = !blobs.has(configKey);
      if (firstSight) {
        blobs.set(configKey, Promise.resolve(undefined));
        report.blobs++;
      }
      let configBytes: Buffer;
      try {
        if (!(await source.has(configDesc.digest))) {
          problem('blob', `config ${configDesc.digest} of manifest ${digest} is missing from the archive`);
          return;
        }
        const parts: Buffer[] = [];
        const v = new DigestVerifier(
          configDesc.digest,
          configDesc.size,
          `config ${configDesc.digest}`,
          DAMAGED,
        );
        for await (const c of await source.getBlob(configDesc, signal)) {
          v.update(c);
          parts.push(Buffer.from(c));
        }
        v.finish();
        configBytes = Buffer.concat(parts);
      } catch (e) {
        const err = toStowageError(e);
        if (err.code !== 'DIGEST_MISMATCH') throw err;
        problem('blob', err.message);
        return;
      }
      if (firstSight) report.bytes += configBytes.length;
      const config = imageConfigSchema.safeParse(jsonOrUndefined(configBytes));
      if (!config.success) {
        problem(
          'consistency',
          `config ${configDesc.digest} of manifest ${digest} is not a valid image config`,
        );
        return;
      }
      const diffIds = config.data.rootfs?.diff_ids ?? [];
      if (diffIds.length !== m.layers.length) {
        problem(
          'consistency',
          `manifest ${digest} has ${m.layers.length} layers but its config ${configDesc.digest} lists ${diffIds.length} diff_ids`,
        );
      }
      await Promise.all(
        m.layers.map(async (l, i) => {
          const diffId = diffIds[i];
          // An uncompressed layer is its own diff_id: the digest check covers it.
          const plain = await checkBlob(l, 'layer', diffId !== undefined && diffId !== l.digest);
          if (plain !== undefined && diffId !== undefined && plain !== diffId) {
            problem(
              'consistency',
              `layer ${i} (${l.digest}) of manifest ${digest} decompresses to ${plain}, but the config's diff_id is ${diffId}`,
            );
          }
        }),
      );
    };

    const checkDocument = (d: Descriptor, parent: string | undefined): Promise<void> => {
      let p = documents.get(d.digest);
      if (!p) {
        p = (async () => {
          if (!(await source.has(d.digest, 'manifest'))) {
            if (parent) {
              const platform = d.platform ? ` (${formatPlatform(d.platform)})` : '';
              report.warnings.push(
                `index ${parent} names manifest ${d.digest}${platform}, which the archive does not hold; only the platforms present can be restored`,
              );
            } else {
              problem('blob', `manifest ${d.digest} is missing from the archive`);
            }
            return;
          }
          let bytes: Buffer;
          try {
            bytes = (await source.getManifest(d.digest)).bytes;
          } catch (e) {
            const err = toStowageError(e);
            if (err.code === 'DIGEST_MISMATCH') problem('blob', err.message);
            else if (err.code === 'TOO_LARGE' || err.code === 'INVALID_ARCHIVE')
              problem('consistency', err.message);
            else throw err;
            return;
          }
          report.manifests++;
          report.bytes += bytes.length;
          if (bytes.length !== d.size) {
            problem(
              'consistency',
              `manifest ${d.digest} is ${bytes.length} bytes, its descriptor says ${d.size}`,
            );
          }
          let mediaType: string;
          try {
            mediaType = documentMediaType(bytes, `manifest ${d.digest}`);
          } catch (e) {
            problem('consistency', toStowageError(e).message);
            return;
          }
          if (isIndexMediaType(mediaType)) {
            const index = imageIndexSchema.safeParse(jsonOrUndefined(bytes));
            if (!index.success) {
              problem('consistency', `index ${d.digest} is not a valid image index`);
              return;
            }
            await Promise.all(index.data.manifests.map((child) => checkDocument(child, d.digest)));
          } else if (isManifestMediaType(mediaType)) {
            await checkImage(bytes, d.digest);
          } else {
            problem('consistency', `manifest ${d.digest} has an unknown media type "${mediaType}"`);
          }
        })();
        documents.set(d.digest, p);
      }
      return p;
    };

    await Promise.all(source.images.map((img) => checkDocument(img.descriptor, undefined)));

    if (hasher) {
      const { archive } = await hasher.finish();
      hasher = undefined;
      report.checksum.sha256 = archive;
      const expected = opts.sha256?.toLowerCase() ?? (await readChecksumFile(`${path}.sha256`));
      report.checksum.source = opts.sha256 ? '--sha256' : `${path}.sha256`;
      if (expected === undefined) {
        report.checksum.status = 'absent';
        report.checksum.source = undefined;
        if (opts.requireChecksum)
          problem('checksum', `there is no ${path}.sha256 to check the archive against (give --sha256)`);
      } else {
        report.checksum.expected = expected;
        report.checksum.status = expected === archive ? 'ok' : 'mismatch';
        if (expected !== archive) {
          problem(
            'checksum',
            `the archive's sha256 is ${archive}, but ${report.checksum.source} says ${expected}: the file changed after it was written`,
          );
        }
      }
    } else if (opts.requireChecksum || opts.sha256) {
      problem('checksum', `${path} is a directory; only archive files have a sha256`);
    }
    if (st.isDirectory()) report.warnings.push(...(await leftoverNotes(path)));
    report.ok = report.problems.length === 0;
    return report;
  } finally {
    hasher?.abort();
    await source.close();
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
