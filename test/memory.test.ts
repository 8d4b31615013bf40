/**
 * The README's promise that memory stays flat whatever the image size, for every path a large layer
 * takes, not only pull and export: push, copy (registry to registry), sync into the store, import of a
 * root filesystem, and the service's download of a stored version. Each peak is compared with the same
 * runtime's peak for a small image; holding a third of the 192 MiB layer would show.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type CliResult, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { api, serviceDir, startService, waitJob } from './harness/service.js';

const h = harness();
const reg = h.registries.plain;
const large = `${reg.host}/fixtures/large:v1`;
const MiB = 1024 * 1024;

describe('memory stays flat', () => {
  it('for push, copy, sync, import and the service download of a large layer', async () => {
    const w = await workdir('memory', insecureConf(reg.host));
    const bound = Math.min(64 * MiB, h.fixtures.largeLayerBytes / 3);
    expect(h.fixtures.largeLayerBytes).toBeGreaterThanOrEqual(128 * MiB);
    const measured = async (args: string[]): Promise<number> => {
      const r: CliResult = await stowage(args, { env: w.env, measureRss: true });
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(0);
      expect(r.maxRss).toBeGreaterThan(0);
      return r.maxRss!;
    };
    const baseline = await measured([
      'pull',
      '-q',
      `${reg.host}/fixtures/small:v1`,
      '-o',
      join(w.dir, 's.tar'),
    ]);
    const archive = join(w.dir, 'large.tar');
    await measured(['pull', '-q', large, '-o', archive]);
    const peaks: Record<string, number> = {
      push: await measured(['push', '-q', archive, `${reg.host}/memory/pushed:v1`]),
      copy: await measured(['copy', '-q', large, `${reg.host}/memory/copied:v1`]),
    };
    const config = join(w.dir, 'stowage.toml');
    const store = join(w.dir, 'store');
    await import('node:fs/promises').then((fs) =>
      fs.writeFile(
        config,
        `[store]\npath = "${store}"\n\n[[job]]\nname = "large"\nsource = "${reg.host}/fixtures/large"\ntags = ["v1"]\n`,
      ),
    );
    peaks.sync = await measured(['sync', '-q', '--config', config]);
    const rootfs = join(w.dir, 'rootfs.tar');
    expect((await stowage(['export', '-q', large, '-o', rootfs], { env: w.env })).code).toBe(0);
    peaks.import = await measured([
      'import',
      '-q',
      rootfs,
      'memory/imported:v1',
      '-o',
      join(w.dir, 'imported.tar'),
    ]);
    for (const [what, peak] of Object.entries(peaks)) expect(peak - baseline, what).toBeLessThan(bound);

    // The service: its peak (VmHWM) before and after serving the large version's download.
    const d = await serviceDir('svc-memory', insecureConf(reg.host));
    const s = await startService(d);
    try {
      const hwm = async () =>
        Number(/VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${s.child.pid}/status`, 'utf8'))![1]) * 1024;
      const pullVersion = async (ref: string) => {
        const res = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: { ref } });
        const job = (await waitJob(s, ((await res.json()) as { id: string }).id)) as {
          result: { archives: { id: string }[] };
        };
        return job.result.archives[0]!.id;
      };
      const download = async (id: string) => {
        const res = await api(s, 'reader', `/v1/archives/${id}/content`);
        let n = 0;
        for await (const c of res.body!) n += (c as Uint8Array).byteLength;
        return n;
      };
      const id = await pullVersion(large);
      // What the download alone adds to the peak: the archive is streamed from the store's blobs.
      const before = await hwm();
      expect(await download(id)).toBeGreaterThan(h.fixtures.largeLayerBytes);
      expect((await hwm()) - before).toBeLessThan(bound);
    } finally {
      await s.stop('SIGKILL');
    }
  });
});
