/**
 * Full disks (issue 33): a store on a small tmpfs that fills up during a sync. The tag fails with an
 * error saying no space was left in the store, the store stays valid (`stowage verify`), nothing half
 * written is left once the next run has started, and the next sync completes once space is freed.
 * Tests run as root (as CI does), so they mount their own tmpfs.
 */
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';
import { withTmpfs } from './harness/tmpfs.js';

const h = harness();
const plain = h.registries.plain;

describe('a store on a full disk', () => {
  it('fails the tag saying so, verifies, and completes once space is freed', async () => {
    const w = await workdir('full-store', insecureConf(plain.host));
    await withTmpfs(join(w.dir, 'disk'), '320m', async (disk) => {
      const store = join(disk, 'store');
      const config = join(w.dir, 'stowage.toml');
      await writeFile(
        config,
        `[store]\npath = "${store}"\n\n[[job]]\nname = "large"\nsource = "${plain.host}/fixtures/large"\ntags = ["v1"]\n`,
      );
      // 300 MiB of the 320 taken: the 192 MiB image cannot fit.
      await run('dd', ['if=/dev/zero', `of=${join(disk, 'filler')}`, 'bs=1M', 'count=300', 'status=none']);
      const full = await stowage(['sync', '--config', config], { env: w.env });
      expect(full.code, full.stderr).toBe(13);
      expect(full.stdout).toMatch(
        /large\s+v1\s+failed\s.*no space left in the store .* while writing blob sha256:/,
      );
      expect((await stowage(['verify', `oci:${store}`], { env: w.env })).code).toBe(0);
      await rm(join(disk, 'filler'));
      const done = await stowage(['sync', '--json', '--config', config], { env: w.env });
      expect(done.code, done.stderr).toBe(0);
      expect(JSON.parse(done.stdout).jobs[0].tags[0]).toMatchObject({ action: 'fetched', archive: 'stored' });
      expect((await stowage(['verify', `oci:${store}`], { env: w.env })).code).toBe(0);
      // Nothing of the failed run is left in the store's scratch space.
      expect(await readdir(join(store, '.tmp'))).toEqual([]);
    });
  }, 120_000);
});
