/**
 * Files and directories written aside before they are renamed into place are named
 * `.NAME.<pid>-<hex>.partial`: hidden, and saying which process writes them. A writer killed with
 * SIGKILL cannot remove its own; the next writer into the same directory (and the service at start)
 * removes those whose process is gone, and never one a live process is still writing.
 */
import { randomBytes } from 'node:crypto';
import type { Dirent } from 'node:fs';
import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** `.NAME.PID-HEX.partial`, and files a writer keeps beside it (`.partial.layer3`: docker-archive spools). */
const PARTIAL = /^\..+\.(\d+)-[0-9a-f]{8}\.partial(\.[a-z0-9]+)?$/;
/** Written by stowage before partials carried a pid: removed once nobody has touched them for an hour. */
const LEGACY_PARTIAL = /^\..+\.[0-9a-f]{8,12}\.partial$/;
const LEGACY_AGE_MS = 60 * 60_000;

/** Where `target` is written before it is complete. */
export function partialPath(target: string): string {
  return join(
    dirname(target),
    `.${basename(target)}.${process.pid}-${randomBytes(4).toString('hex')}.partial`,
  );
}

/** Whether a process with this pid is running (one we may not signal is running too). */
export function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface Leftover {
  name: string;
  bytes: number;
}

/**
 * The leftovers in `dir` whose writer is gone. `pidOf` reads the writer's pid from a name (undefined:
 * not a leftover of ours); by default the partial naming above.
 */
export async function deadLeftovers(
  dir: string,
  pidOf: (name: string) => number | undefined = partialPid,
): Promise<Leftover[]> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const found: Leftover[] = [];
  for (const e of entries) {
    const pid = pidOf(e.name);
    const legacy = pid === undefined && pidOf === partialPid && LEGACY_PARTIAL.test(e.name);
    if (pid === undefined && !legacy) continue;
    if (pid !== undefined && processAlive(pid)) continue;
    const st = await lstat(join(dir, e.name)).catch(() => undefined);
    if (!st) continue;
    if (legacy && Date.now() - st.mtimeMs < LEGACY_AGE_MS) continue;
    found.push({ name: e.name, bytes: st.isDirectory() ? await treeBytes(join(dir, e.name)) : st.size });
  }
  return found;
}

/** Removes what `deadLeftovers` finds; returns what went. Never throws. */
export async function sweepLeftovers(
  dir: string,
  pidOf?: (name: string) => number | undefined,
): Promise<Leftover[]> {
  const gone = await deadLeftovers(dir, pidOf).catch(() => []);
  for (const l of gone) await rm(join(dir, l.name), { recursive: true, force: true }).catch(() => {});
  return gone;
}

const swept = new Map<string, Promise<unknown>>();

/** sweepLeftovers once per directory per process: every writer calls it, only the first pays. */
export function sweepOnce(dir: string): Promise<unknown> {
  let p = swept.get(dir);
  if (!p) {
    p = sweepLeftovers(dir);
    swept.set(dir, p);
  }
  return p;
}

/** A partial path for `target`, after removing dead writers' leftovers beside it. */
export async function preparePartial(target: string): Promise<string> {
  await sweepOnce(dirname(target));
  return partialPath(target);
}

/**
 * A scratch directory `PREFIX<pid>-XXXXXX` in `parent` (spools, recompressed layers), after removing
 * those of `prefix` whose process is gone: what a killed run left there goes at the next one's start.
 */
export async function scratchDir(parent: string, prefix: string): Promise<string> {
  await sweepScratch(parent, prefix);
  return mkdtemp(join(parent, `${prefix}${process.pid}-`));
}

/**
 * Removes, once per process, the scratch directories `prefix` + PID that dead processes left in
 * `parent`; for a run that makes none itself this time, but must not let a crash's pile grow.
 */
export async function sweepScratch(parent: string, prefix: string): Promise<void> {
  const key = `${parent}\0${prefix}`;
  if (sweptScratch.has(key)) return;
  sweptScratch.add(key);
  await sweepLeftovers(parent, (name) => {
    if (!name.startsWith(prefix)) return undefined;
    const m = /^(\d+)-/.exec(name.slice(prefix.length));
    return m ? Number(m[1]) : undefined;
  });
}

const sweptScratch = new Set<string>();

export function partialPid(name: string): number | undefined {
  const m = PARTIAL.exec(name);
  return m ? Number(m[1]) : undefined;
}

/**
 * The writer's pid in a name in a store's .tmp: partial naming, or the store's earlier `HEX.PID.RAND`
 * blobs, or the service's `upload-PID-RAND.tar` spools (with the `.sig` an uploaded bundle's signature is
 * put beside it as) and `rendition-PID-...tar` renditions being made.
 */
export function tmpPid(name: string): number | undefined {
  const m =
    /^[0-9a-f]{64}\.(\d+)\.[0-9a-z]+$/.exec(name) ??
    /^upload-(\d+)-[0-9a-z]+\.tar(\.sig)?$/.exec(name) ??
    /^rendition-(\d+)-[0-9a-z.-]+\.tar(\.sha256)?$/.exec(name);
  return m ? Number(m[1]) : partialPid(name);
}

/** Bytes of the files below a directory (a partial OCI layout or dir:). */
export async function treeBytes(dir: string): Promise<number> {
  let n = 0;
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isFile()) continue;
    n += (await lstat(join(e.parentPath, e.name)).catch(() => undefined))?.size ?? 0;
  }
  return n;
}
