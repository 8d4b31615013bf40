import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { deadLeftovers, partialPath, partialPid, sweepLeftovers, tmpPid } from './partials.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}

describe('partial files', () => {
  it('are named for their writer, hidden, beside their target', () => {
    const p = partialPath('/srv/out/app.tar');
    expect(p).toMatch(new RegExp(`^/srv/out/\\.app\\.tar\\.${process.pid}-[0-9a-f]{8}\\.partial$`));
    expect(partialPid(p.split('/').at(-1)!)).toBe(process.pid);
    expect(partialPid('app.tar')).toBeUndefined();
    expect(tmpPid(`${'a'.repeat(64)}.123.k3j4`)).toBe(123);
    expect(tmpPid('upload-77-abc.tar')).toBe(77);
    expect(tmpPid('upload-77-abc.tar.sig')).toBe(77);
  });

  it('are swept when their writer is gone, never while it lives; old unnamed ones after an hour', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-partials-'));
    dirs.push(dir);
    const dead = await deadPid();
    const names = {
      dead: `.a.tar.${dead}-0123abcd.partial`,
      deadSpool: `.a.tar.${dead}-0123abcd.partial.layer2`,
      live: `.b.tar.${process.pid}-0123abcd.partial`,
      legacyOld: '.c.tar.0123456789ab.partial',
      legacyNew: '.d.tar.0123456789ab.partial',
      other: 'keep.tar',
    };
    for (const n of Object.values(names)) await writeFile(join(dir, n), 'x');
    await mkdir(join(dir, `.layout.${dead}-0badf00d.partial`));
    await writeFile(join(dir, `.layout.${dead}-0badf00d.partial`, 'index.json'), '{}');
    const hourAgo = new Date(Date.now() - 2 * 60 * 60_000);
    await utimes(join(dir, names.legacyOld), hourAgo, hourAgo);
    const found = (await deadLeftovers(dir)).map((l) => l.name).sort();
    expect(found).toEqual(
      [names.dead, names.deadSpool, names.legacyOld, `.layout.${dead}-0badf00d.partial`].sort(),
    );
    await sweepLeftovers(dir);
    expect((await readdir(dir)).sort()).toEqual([names.live, names.legacyNew, names.other].sort());
  });
});
