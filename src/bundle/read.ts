/**
 * A bundle on the far side: its parts found and joined in order (a missing one named), every checksum
 * beside it checked, its manifest read, its signature judged by the trust policy when one is given.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { BLOCK, paddedSize } from '../archive/tar.js';
import { cstring, parseNumber, readAt } from '../archive/tar-reader.js';
import { partialPath, sweepOnce } from '../core/partials.js';
import { StowageError } from '../errors.js';
import { BUNDLE_FILE, type BundleManifest, bundleId, parseManifest } from './manifest.js';

/** `FILE.001-of-003`: each part says how many there are, so a missing last one is named too. */
const PART = /^(.*)\.(\d{3,})-of-(\d{3,})$/;

export function partName(base: string, n: number, count: number): string {
  const width = Math.max(3, String(count).length);
  return `${base}.${String(n).padStart(width, '0')}-of-${String(count).padStart(width, '0')}`;
}

export interface BundleFiles {
  /** The bundle as given (a whole file, or the name its parts share). */
  name: string;
  /** Its parts in order (one: the file itself). */
  parts: string[];
}

/** The files of each bundle the arguments name (a file, its parts, or the name the parts share). */
export async function findBundles(args: string[]): Promise<BundleFiles[]> {
  const out: BundleFiles[] = [];
  const seen = new Set<string>();
  for (const arg of args) {
    const m = PART.exec(arg);
    const name = m ? m[1]! : arg;
    if (seen.has(name)) continue;
    seen.add(name);
    const st = await stat(name).catch(() => undefined);
    if (!m && st?.isFile()) {
      out.push({ name, parts: [name] });
      continue;
    }
    out.push({ name, parts: await partsOf(name) });
  }
  return out;
}

async function partsOf(name: string): Promise<string[]> {
  const dir = dirname(name);
  const prefix = `${basename(name)}.`;
  const entries = await readdir(dir).catch(() => [] as string[]);
  const found = entries.filter((e) => e.startsWith(prefix) && PART.test(e) && !e.endsWith('.sha256'));
  if (found.length === 0)
    throw new StowageError('NOT_FOUND', `bundle ${name} does not exist (nor any part of it)`);
  const count = Number(PART.exec(found[0]!)![3]);
  const parts: string[] = [];
  for (let n = 1; n <= count; n++) {
    const part = join(dir, partName(basename(name), n, count));
    if (!found.includes(basename(part)))
      throw new StowageError('NOT_FOUND', `bundle ${name}: part ${basename(part)} of ${count} is missing`);
    parts.push(part);
  }
  return parts;
}

/** The sha256 a `FILE.sha256` beside `path` records, if there is one. */
async function recordedSum(path: string): Promise<string | undefined> {
  const text = await readFile(`${path}.sha256`, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const hex = /^([0-9a-f]{64})\s/.exec(text)?.[1];
  if (!hex) throw new StowageError('INVALID_ARCHIVE', `${path}.sha256 is not a sha256sum line`);
  return hex;
}

function damaged(path: string, actual: string, expected: string): StowageError {
  return new StowageError(
    'DIGEST_MISMATCH',
    `${path} is damaged: its sha256 is ${actual}, ${basename(path)}.sha256 says ${expected}; carry it again`,
  );
}

export interface OpenedBundle {
  /** One file holding the whole bundle (the parts joined into a temporary file). */
  path: string;
  name: string;
  manifest: BundleManifest;
  manifestBytes: Buffer;
  id: string;
  sha256: string;
  size: number;
  /** What was checked, for the result: "sha256" when a checksum file was there. */
  checked: string[];
  close(): Promise<void>;
}

/**
 * Opens a bundle: joins its parts (checking each part's checksum), checks the whole against
 * NAME.sha256 when there is one, and reads its manifest. Nothing is written to any destination here.
 */
export async function openBundle(
  files: BundleFiles,
  opts: { tmpDir?: string | undefined; signal?: AbortSignal | undefined } = {},
): Promise<OpenedBundle> {
  const checked: string[] = [];
  let path = files.parts[0]!;
  let temporary: string | undefined;
  let sha256: string;
  if (files.parts.length > 1) {
    const dir = opts.tmpDir ?? tmpdir();
    await sweepOnce(dir);
    temporary = partialPath(join(dir, basename(files.name)));
    sha256 = await joinParts(files.parts, temporary, opts.signal).catch(async (e) => {
      await unlink(temporary!).catch(() => {});
      throw e;
    });
    checked.push(`${files.parts.length} parts' sha256`);
    path = temporary;
  } else {
    sha256 = await hashFile(path, opts.signal);
  }
  const close = async () => {
    if (temporary) await unlink(temporary).catch(() => {});
  };
  try {
    const expected = await recordedSum(files.name);
    if (expected && expected !== sha256) throw damaged(files.name, sha256, expected);
    if (expected) checked.push('sha256');
    const { manifest, bytes, id } = await readBundleManifest(path, files.name);
    const size = (await stat(path)).size;
    return { path, name: files.name, manifest, manifestBytes: bytes, id, sha256, size, checked, close };
  } catch (e) {
    await close();
    throw e;
  }
}

async function hashFile(path: string, signal?: AbortSignal): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20, signal })) h.update(c as Buffer);
  return h.digest('hex');
}

/** Joins the parts into `out`, checking each against its own .sha256; the whole's sha256. */
async function joinParts(parts: string[], out: string, signal?: AbortSignal): Promise<string> {
  const whole = createHash('sha256');
  const fh = await open(out, 'wx');
  try {
    for (const part of parts) {
      const one = createHash('sha256');
      for await (const c of createReadStream(part, { highWaterMark: 1 << 20, signal })) {
        const chunk = c as Buffer;
        one.update(chunk);
        whole.update(chunk);
        await fh.write(chunk);
      }
      const expected = await recordedSum(part);
      const actual = one.digest('hex');
      if (expected && expected !== actual) throw damaged(part, actual, expected);
    }
  } finally {
    await fh.close();
  }
  return whole.digest('hex');
}

/**
 * The manifest of a bundle (or of its first part): the tar's third entry, after oci-layout and
 * index.json, read by walking the headers from the start.
 */
export async function readBundleManifest(
  path: string,
  label = path,
): Promise<{ manifest: BundleManifest; bytes: Buffer; id: string }> {
  const notBundle = () =>
    new StowageError(
      'INVALID_ARCHIVE',
      `${label} is not a stowage bundle (no ${BUNDLE_FILE} after index.json)`,
    );
  let pos = 0;
  for (let i = 0; i < 3; i++) {
    const h = await readAt(path, pos, BLOCK);
    if (h.length < BLOCK) throw notBundle();
    const name = cstring(h, 0, 100);
    const size = parseNumber(h, 124, 12);
    if (name === BUNDLE_FILE) {
      const bytes = await readAt(path, pos + BLOCK, size);
      if (bytes.length !== size) throw notBundle();
      return { manifest: parseManifest(bytes, label), bytes, id: bundleId(bytes) };
    }
    pos += BLOCK + paddedSize(size);
  }
  throw notBundle();
}
