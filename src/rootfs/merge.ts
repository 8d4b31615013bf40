/**
 * The filesystem a fresh container of an image sees, worked out from the layers' headers alone.
 *
 * Layers are applied in order to a tree of nodes that holds metadata, never file contents: whiteouts
 * (`.wh.NAME`) remove a lower path, opaque markers (`.wh..wh..opq`) empty a lower directory, an entry
 * replaces what was at its path (a directory over a directory merges), hard links share the inode of
 * their target as it was when the link was made. Whiteouts act only on lower layers (OCI image spec,
 * "Whiteouts"), so each layer's whiteouts are applied before its other entries.
 *
 * The result says, for each (layer, entry index), what to write when the second pass streams that
 * entry: a node's header, or a file's content under its first surviving name followed by hard links
 * for its other names. Parents are written before the first thing beneath them.
 */
import { StowageError } from '../errors.js';
import type { FsEntry } from './tar.js';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';

/** A regular file's content: where it is in the layers, and the names that reach it at the end. */
export interface Inode {
  layer: number;
  index: number;
  entry: FsEntry;
  names: Set<FsNode>;
}

export interface FsNode {
  name: string;
  parent: FsNode | undefined;
  /** Directories only. */
  children: Map<string, FsNode> | undefined;
  entry: FsEntry;
  /** Position of the entry that made it; layer -1 for directories implied by a path. */
  layer: number;
  index: number;
  inode: Inode | undefined;
  written: boolean;
}

export interface LayerEntry {
  index: number;
  entry: FsEntry;
}

const MAX_SYMLINKS = 40;

export function impliedDirectory(): FsEntry {
  return {
    name: '',
    type: 'directory',
    size: 0,
    mode: 0o755,
    uid: 0,
    gid: 0,
    uname: '',
    gname: '',
    mtime: 0,
    linkname: '',
    devmajor: 0,
    devminor: 0,
  };
}

export function nodePath(node: FsNode): string {
  const parts: string[] = [];
  for (let n: FsNode | undefined = node; n?.parent; n = n.parent) parts.push(n.name);
  return parts.reverse().join('/');
}

function newNode(name: string, parent: FsNode, entry: FsEntry, layer: number, index: number): FsNode {
  const node: FsNode = {
    name,
    parent,
    children: entry.type === 'directory' ? new Map() : undefined,
    entry,
    layer,
    index,
    inode: undefined,
    written: false,
  };
  parent.children!.set(name, node);
  return node;
}

export class RootfsMerger {
  readonly root: FsNode = {
    name: '',
    parent: undefined,
    children: new Map(),
    entry: impliedDirectory(),
    layer: -1,
    index: -1,
    inode: undefined,
    written: true,
  };
  entries = 0;

  constructor(private readonly what: (layer: number) => string) {}

  private fail(layer: number, name: string, why: string): never {
    throw new StowageError('INVALID_ARCHIVE', `${this.what(layer)}: entry "${name}": ${why}`);
  }

  /**
   * The directory a path's parent components lead to, following symlinks inside the tree (".." stops
   * at the root). Missing directories are created as implied ones when `create` is set.
   */
  private walk(parts: string[], create: boolean, layer: number, name: string, depth = 0): FsNode | undefined {
    let cur = this.root;
    for (const part of parts) {
      if (part === '' || part === '.') continue;
      if (part === '..') {
        cur = cur.parent ?? this.root;
        continue;
      }
      let child = cur.children!.get(part);
      if (!child) {
        if (!create) return undefined;
        child = newNode(part, cur, impliedDirectory(), -1, -1);
      }
      if (child.entry.type === 'symlink') {
        if (depth >= MAX_SYMLINKS) this.fail(layer, name, 'too many levels of symbolic links');
        const target = child.entry.linkname;
        const base = target.startsWith('/') ? [] : nodePath(cur).split('/');
        const resolved = this.walk([...base, ...target.split('/')], create, layer, name, depth + 1);
        if (!resolved) return undefined;
        child = resolved;
      }
      if (!child.children) {
        if (!create) return undefined;
        this.fail(layer, name, `its parent "${nodePath(child)}" is not a directory`);
      }
      cur = child;
    }
    return cur;
  }

  private remove(node: FsNode): void {
    node.parent?.children?.delete(node.name);
    const drop = (n: FsNode) => {
      n.inode?.names.delete(n);
      for (const c of n.children?.values() ?? []) drop(c);
    };
    drop(node);
  }

  /** Applies one layer (its entries' headers, in archive order). */
  addLayer(layer: number, entries: LayerEntry[]): void {
    for (const { entry } of entries) {
      const slash = entry.name.lastIndexOf('/');
      const base = entry.name.slice(slash + 1);
      if (!base.startsWith(WHITEOUT_PREFIX)) continue;
      const dir = this.walk(slash < 0 ? [] : entry.name.slice(0, slash).split('/'), false, layer, entry.name);
      if (!dir) continue;
      if (base === OPAQUE_MARKER) {
        for (const child of [...dir.children!.values()]) this.remove(child);
      } else {
        const victim = dir.children!.get(base.slice(WHITEOUT_PREFIX.length));
        if (victim) this.remove(victim);
      }
    }
    for (const { index, entry } of entries) {
      this.entries++;
      if (entry.name === '') continue; // the root itself
      const parts = entry.name.split('/');
      const base = parts.pop()!;
      if (base.startsWith(WHITEOUT_PREFIX)) continue;
      if (base === '..' || base === '.') continue;
      const dir = this.walk(parts, true, layer, entry.name)!;
      const existing = dir.children!.get(base);
      if (entry.type === 'directory' && existing?.children) {
        existing.entry = entry;
        existing.layer = layer;
        existing.index = index;
        continue;
      }
      if (entry.type === 'hardlink') {
        const tparts = entry.linkname.split('/');
        const tbase = tparts.pop()!;
        const tdir = this.walk(tparts, false, layer, entry.name);
        const target = tdir?.children?.get(tbase);
        if (!target) this.fail(layer, entry.name, `hard link to "${entry.linkname}", which does not exist`);
        if (target.children) this.fail(layer, entry.name, `hard link to the directory "${entry.linkname}"`);
        if (target === existing) continue;
        if (existing) this.remove(existing);
        if (target.inode) {
          const node = newNode(base, dir, target.inode.entry, layer, index);
          node.inode = target.inode;
          target.inode.names.add(node);
        } else {
          newNode(base, dir, target.entry, layer, index);
        }
        continue;
      }
      if (existing) this.remove(existing);
      const node = newNode(base, dir, entry, layer, index);
      if (entry.type === 'file') {
        node.inode = { layer, index, entry, names: new Set([node]) };
      }
    }
  }

  /** What to write at each (layer, index): the nodes made there and files whose content is there. */
  actions(): Map<number, Map<number, FsNode | Inode>> {
    const out = new Map<number, Map<number, FsNode | Inode>>();
    const put = (layer: number, index: number, what: FsNode | Inode) => {
      let m = out.get(layer);
      if (!m) {
        m = new Map();
        out.set(layer, m);
      }
      m.set(index, what);
    };
    const visit = (node: FsNode) => {
      for (const child of node.children?.values() ?? []) {
        if (child.inode) {
          if (child.inode.names.size > 0) put(child.inode.layer, child.inode.index, child.inode);
        } else if (child.layer >= 0) {
          put(child.layer, child.index, child);
        }
        visit(child);
      }
    };
    visit(this.root);
    return out;
  }

  /** Nodes never written by an action (directories implied by paths whose contents went away), sorted. */
  *unwritten(node: FsNode = this.root): Generator<FsNode> {
    const names = [...(node.children?.keys() ?? [])].sort();
    for (const name of names) {
      const child = node.children!.get(name)!;
      if (!child.written && !child.inode) yield child;
      yield* this.unwritten(child);
    }
  }
}
