/**
 * A one-off sync from the command line (`stowage sync --src ... --dest ...`), as `skopeo sync` is used,
 * with the same tag filters as a [[job]] of stowage.toml: against the real registry, the mirror gets
 * exactly the tags the filters choose (read back with skopeo), --dry-run writes nothing, and a second
 * run finds nothing to do.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';
import { buildTaggedRepo, pushTags, type TaggedRepo } from './harness/tagged-repo.js';

const h = harness();
const plain = h.registries.plain;
let repo: TaggedRepo;

beforeAll(async () => {
  repo = await buildTaggedRepo(join(h.dir, 'sync-cli-layout'), {
    count: 5,
    baseKiB: 64,
    ownKiB: 8,
    seed: 'sync-cli',
  });
  await pushTags(repo.layout, repo.tags, `${plain.host}/sync-cli/app`);
}, 120_000);

async function mirrorTags(repository: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  const r = await run('skopeo', ['list-tags', '--tls-verify=false', `docker://${repository}`], { env }).catch(
    () => ({
      stdout: '{"Tags":[]}',
    }),
  );
  return (JSON.parse(r.stdout).Tags as string[]).sort();
}

describe('stowage sync --src', () => {
  it('mirrors the tags the filters choose, plans first with --dry-run, and does nothing the second time', async () => {
    const w = await workdir('sync-cli', insecureConf(plain.host));
    const env = { ...w.env, STOWAGE_STORE: join(w.dir, 'store') };
    const dest = `${plain.host}/sync-cli/mirror`;
    // Tags 1.0.0 .. 1.4.0: those from 1.1 on, not 1.3.0, the newest two of what is left.
    const args = [
      'sync',
      '--src',
      `${plain.host}/sync-cli/app`,
      '--dest',
      dest,
      '--semver',
      '>=1.1.0',
      '--exclude',
      '^1\\.3\\.',
      '--newest',
      '2',
    ];
    const plan = await stowage([...args, '--dry-run', '--json'], { env });
    expect(plan.code, plan.stderr).toBe(0);
    const planned = JSON.parse(plan.stdout)
      .jobs[0].tags.map((t: { tag: string }) => t.tag)
      .sort();
    expect(planned).toEqual(['1.2.0', '1.4.0']);
    expect(await mirrorTags(dest, env)).toEqual([]);

    const done = await stowage([...args, '--json'], { env });
    expect(done.code, done.stderr).toBe(0);
    expect(await mirrorTags(dest, env)).toEqual(['1.2.0', '1.4.0']);
    const digest = JSON.parse(
      (await run('skopeo', ['inspect', '--tls-verify=false', `docker://${dest}:1.4.0`], { env })).stdout,
    ).Digest;
    expect(digest).toBe(repo.digests.get('1.4.0'));
    // Mirroring only: nothing went into the store.
    expect(JSON.parse((await stowage(['archives', '--json'], { env })).stdout)).toEqual([]);

    const again = await stowage([...args, '--json'], { env });
    const report = JSON.parse(again.stdout);
    expect(report.fetchedBytes).toBe(0);
    expect(report.jobs[0].tags.map((t: { mirror: string }) => t.mirror)).toEqual(['current', 'current']);
  });

  it('keeps versions in the store without --dest, and refuses filters without --src', async () => {
    const w = await workdir('sync-cli-store', insecureConf(plain.host));
    const env = { ...w.env, STOWAGE_STORE: join(w.dir, 'store') };
    const r = await stowage(['sync', '-q', '--src', `${plain.host}/sync-cli/app`, '--tags', '1.0.0,1.1.0'], {
      env,
    });
    expect(r.code, r.stderr).toBe(0);
    const stored = JSON.parse((await stowage(['archives', '--json'], { env })).stdout) as { tag: string }[];
    expect(stored.map((v) => v.tag).sort()).toEqual(['1.0.0', '1.1.0']);
    const refused = await stowage(['sync', '--newest', '2'], { env });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('give --src');
    const both = await stowage(['sync', 'nightly', '--src', `${plain.host}/sync-cli/app`], { env });
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('drop the job names');
  });
});
