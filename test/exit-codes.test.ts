/**
 * Exit codes next to skopeo's, for the same failures against the real registries: skopeo (Debian's
 * 1.9.3) exits non-zero for each, 1 every time; stowage says which failure it was. A script that only
 * tests for non-zero works with both.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';
import { withTmpfs } from './harness/tmpfs.js';

const h = harness();
const plain = h.registries.plain;
const basic = h.registries.basic;

async function skopeoCode(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return run('skopeo', args, { env }).then(
    () => 0,
    (e: { code?: number }) => (typeof e.code === 'number' ? e.code : -1),
  );
}

describe('exit codes, beside skopeo', () => {
  it('tells apart what skopeo reports as 1: not found, denied, unreachable, bad input', async () => {
    const w = await workdir('exit-codes', insecureConf(plain.host, basic.host));
    const cases: { what: string; ours: string[]; theirs: string[]; code: number }[] = [
      {
        what: 'a tag that does not exist',
        ours: ['inspect', `docker://${plain.host}/fixtures/small:nope`],
        theirs: ['inspect', '--tls-verify=false', `docker://${plain.host}/fixtures/small:nope`],
        code: 5,
      },
      {
        what: 'a registry that wants credentials',
        ours: ['inspect', `docker://${basic.host}/fixtures/small:v1`],
        theirs: ['inspect', '--tls-verify=false', `docker://${basic.host}/fixtures/small:v1`],
        code: 4,
      },
      {
        what: 'a registry nobody answers for',
        ours: ['inspect', '--retry-times', '0', 'docker://127.0.0.1:1/x/y:v1'],
        theirs: ['inspect', '--tls-verify=false', '--retry-times', '0', 'docker://127.0.0.1:1/x/y:v1'],
        code: 8,
      },
      {
        what: 'an option that does not exist',
        ours: ['inspect', '--no-such-option', `docker://${plain.host}/fixtures/small:v1`],
        theirs: ['inspect', '--no-such-option', `docker://${plain.host}/fixtures/small:v1`],
        code: 2,
      },
    ];
    for (const c of cases) {
      const ours = await stowage(c.ours, { env: w.env });
      expect(ours.code, `${c.what}: ${ours.stderr}`).toBe(c.code);
      expect(await skopeoCode(c.theirs, w.env), c.what).not.toBe(0);
    }
  });

  it('says a full disk is a full disk (exit 9, not 1), and leaves nothing at the destination', async () => {
    const w = await workdir('full-disk', insecureConf(plain.host));
    // A 4 MiB file system for a 192 MiB image.
    await withTmpfs(join(w.dir, 'tiny'), '4m', async (small) => {
      const r = await stowage(
        ['pull', '-q', `${plain.host}/fixtures/large:v1`, '-o', join(small, 'large.tar')],
        {
          env: w.env,
        },
      );
      expect(r.code, r.stderr).toBe(9);
      expect(r.stderr).toMatch(
        /no space left on the device \(the file system is full\) while writing .*; free some space/,
      );
      expect(await readdir(small)).toEqual([]);
    });
  });
});
