/**
 * One page of a store's versions read straight from index.json, from its start and only as far as the
 * page needs, so that a process that has not loaded the index (`stowage archives --limit 20`, a
 * service's first listing) shows the first page of 100,000 versions without reading the other 99,980.
 *
 * index.json is scanned as bytes: each element of the index's `manifests` array is cut out (tracking
 * strings and nesting) and parsed alone. Whether a version is its tag's newest is what its ref.name
 * says (the store names the newest REPOSITORY:TAG, older ones REPOSITORY:TAG@TIME). The journal's
 * changes are laid over it: versions it replaced, and those it added after index.json's. A journal that
 * removed versions (they could make an older version the newest), or a page that would need more than
 * `budget` bytes of index.json, is left to the caller: it answers undefined, and the caller loads the
 * index whole.
 */
import type { FileHandle } from 'node:fs/promises';
import { StowageError } from '../errors.js';
import type { Descriptor } from '../image/schemas.js';
import type { JournalOp } from './index-files.js';
import { versionOfEntry } from './index-files.js';
import { ANNOTATION, type StoredVersion } from './version.js';
import { cursorGone, type VersionPage, type VersionQuery } from './version-index.js';

const CHUNK = 256 * 1024;

/** The elements of the top-level `manifests` array, one JSON text each, in order. */
async function* manifestEntries(fh: FileHandle, budget: number): AsyncGenerator<string | 'over-budget'> {
  const buf = Buffer.allocUnsafe(CHUNK);
  let pos = 0;
  let depth = 0;
  let inString = false;
  let escaped = false;
  /** Depth of the manifests array once it is entered (the top-level object's only array). */
  let arrayDepth = -1;
  let start = -1;
  let pending: Buffer[] = [];
  for (;;) {
    if (pos >= budget) {
      yield 'over-budget';
      return;
    }
    const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
    if (!bytesRead) return;
    const chunk = buf.subarray(0, bytesRead);
    let from = 0;
    for (let i = 0; i < bytesRead; i++) {
      const c = chunk[i]!;
      if (inString) {
        if (escaped) escaped = false;
        else if (c === 0x5c) escaped = true;
        else if (c === 0x22) inString = false;
        continue;
      }
      if (c === 0x22) inString = true;
      else if (c === 0x7b || c === 0x5b) {
        depth++;
        if (c === 0x5b && depth === 2 && arrayDepth < 0) arrayDepth = depth;
        else if (c === 0x7b && depth === arrayDepth + 1 && arrayDepth > 0) {
          start = i;
          from = i;
          pending = [];
        }
      } else if (c === 0x7d || c === 0x5d) {
        if (c === 0x7d && depth === arrayDepth + 1 && arrayDepth > 0 && start >= 0) {
          pending.push(Buffer.from(chunk.subarray(from, i + 1)));
          yield Buffer.concat(pending).toString('utf8');
          pending = [];
          start = -1;
        } else if (c === 0x5d && depth === arrayDepth) {
          return;
        }
        depth--;
      }
    }
    // An element that runs on into the next chunk.
    if (start >= 0) {
      pending.push(Buffer.from(chunk.subarray(from, bytesRead)));
      start = 0;
    }
    pos += bytesRead;
  }
}

/** The journal's changes in the form the scan lays over index.json (undefined: it removed versions). */
function overlay(
  ops: JournalOp[],
): { added: StoredVersion[]; replaced: Map<string, StoredVersion> } | undefined {
  const added = new Map<string, StoredVersion>();
  const replaced = new Map<string, StoredVersion>();
  for (const op of ops) {
    if ('remove' in op) return undefined;
    if ('add' in op) added.set(op.add.id, op.add);
    else if (added.has(op.put.id)) added.set(op.put.id, op.put);
    else replaced.set(op.put.id, op.put);
  }
  return { added: [...added.values()], replaced };
}

export async function scanIndexPage(
  fh: FileHandle,
  label: string,
  journal: JournalOp[],
  q: VersionQuery,
  budget: number,
): Promise<VersionPage | undefined> {
  const changes = overlay(journal);
  if (!changes) return undefined;
  const limit = Math.max(1, q.limit);
  // A tag the journal added a version to has a newer version than any in index.json.
  const addedNames = new Map<string, string>();
  for (const v of changes.added) addedNames.set(`${v.repository}:${v.tag}`, v.id);
  const search = q.search?.toLowerCase();
  const out: VersionPage['versions'] = [];
  let passedCursor = q.after === undefined;
  const take = (v: StoredVersion, latest: boolean): boolean => {
    if (!passedCursor) {
      passedCursor = v.id === q.after;
      return false;
    }
    if (q.repository && v.repository !== q.repository) return false;
    if (q.tag && v.tag !== q.tag) return false;
    if (search && !`${v.repository}:${v.tag} ${v.id} ${v.descriptor.digest}`.toLowerCase().includes(search))
      return false;
    if (q.latest !== undefined && latest !== q.latest) return false;
    out.push({ version: v, latest });
    return out.length > limit;
  };
  const invalid = () => new StowageError('INVALID_ARCHIVE', `${label}/index.json is not a valid OCI index`);
  const inIndex = new Set<string>();
  let full = false;
  for await (const text of manifestEntries(fh, budget)) {
    if (text === 'over-budget') return undefined;
    let d: Descriptor;
    try {
      d = JSON.parse(text) as Descriptor;
    } catch {
      throw invalid();
    }
    const found = versionOfEntry(d, invalid);
    if (!found) continue;
    inIndex.add(found.id);
    const v = changes.replaced.get(found.id) ?? found;
    const name = `${v.repository}:${v.tag}`;
    const newestHere = (d.annotations as Record<string, string> | undefined)?.[ANNOTATION.refName] === name;
    if (take(v, newestHere && !addedNames.has(name))) {
      full = true;
      break;
    }
  }
  if (!full) {
    for (const v of changes.added) {
      if (inIndex.has(v.id)) continue;
      if (take(v, addedNames.get(`${v.repository}:${v.tag}`) === v.id)) break;
    }
  }
  if (!passedCursor) cursorGone(q.after!);
  const more = out.length > limit;
  if (more) out.pop();
  return { versions: out, next: more ? out[out.length - 1]?.version.id : undefined };
}
