/**
 * The folders of src/ form layers: each may import only from the layers below it, so there is no
 * import cycle between folders and no folder reaches up into one that builds on it. A new folder must
 * be given its place here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * Bottom first. Files at the root of src/ are layers of their own: errors.ts is below everything;
 * server.ts (the service, put together) sits under cli, which starts it.
 */
const LAYERS: string[][] = [
  ['errors.ts'],
  // The typed API client for other programs: it imports nothing of stowage's own.
  ['api-client'],
  ['core'],
  ['reference'],
  ['image'],
  ['config'],
  ['db'],
  ['policy'],
  ['auth'],
  ['registry'],
  ['archive'],
  ['store'],
  ['engine'],
  ['transports'],
  ['transfer'],
  ['rootfs'],
  ['sync'],
  // Air-gap bundles of the store (create, import), which the service runs as jobs.
  ['bundle'],
  // Events the service publishes, their webhooks and their log (in process, or in PostgreSQL).
  ['events'],
  ['service'],
  ['api'],
  // The archive store served as a registry (/v2/), beside the API on the same listener.
  ['distribution'],
  ['console'],
  ['server.ts'],
  ['cli'],
];

const SRC = import.meta.dirname;
const rank = new Map(LAYERS.flatMap((names, i) => names.map((n) => [n, i] as const)));

/** The layer a file of src/ belongs to: its top folder, or its own name at the root. */
function unit(file: string): string {
  // Imports name the compiled .js; the source beside us is the .ts of the same name.
  return relative(SRC, file).split('/')[0]!.replace(/\.js$/, '.ts');
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return /\.(ts|js)$/.test(e.name) && !/\.test\.ts$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

describe('folder layers', () => {
  it('every folder and root file has a layer', () => {
    const units = new Set(sources(SRC).map(unit));
    expect([...units].filter((u) => !rank.has(u))).toEqual([]);
  });

  it('no file imports from its own layer’s neighbours or from a layer above it', () => {
    const wrong: string[] = [];
    for (const file of sources(SRC)) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from\s+|import\()\s*'(\.{1,2}\/[^']+)'/g)) {
        const target = normalize(join(dirname(file), m[1]!));
        if (!target.startsWith(SRC)) continue;
        const [from, to] = [unit(file), unit(target)];
        if (from === to) continue;
        if ((rank.get(to) ?? Number.POSITIVE_INFINITY) >= (rank.get(from) ?? -1)) {
          wrong.push(`${relative(SRC, file)} imports ${relative(SRC, target)} (${from} may not use ${to})`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });
});
