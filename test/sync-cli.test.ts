/**
 * A one-off sync from the command line (`stowage sync --src ... --dest ...`), as `skopeo sync` is used,
 * with the same tag filters as a [[job]] of stowage.toml: against the real registry, the mirror gets
 * exactly the tags the filters choose (read back with skopeo), --dry-run writes nothing, and a second
 * run finds nothing to do. With --prune, the mirror's tags gone from the source are deleted (each
 * alone: docker-registry 2.8 refuses DELETE by tag, and other tags of the same manifest stay), planned
 * by --dry-run first; a source listing no tags prunes nothing.
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

  it('--prune deletes the mirror tags gone from the source, each alone, after a --dry-run shows them', async () => {
    const w = await workdir('sync-prune', insecureConf(plain.host));
    const env = { ...w.env, STOWAGE_STORE: join(w.dir, 'store') };
    const src = `${plain.host}/sync-cli/prune-src`;
    const dest = `${plain.host}/sync-cli/prune-mirror`;
    const copy = (from: string, to: string) =>
      run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', from, to], {
        env,
      });
    await pushTags(repo.layout, repo.tags, src);
    await copy(`docker://${src}:1.4.0`, `docker://${src}:latest`);
    const first = await stowage(['sync', '-q', '--src', src, '--dest', dest], { env });
    expect(first.code, first.stderr).toBe(0);
    const digest = (tag: string) => repo.digests.get(tag)!;
    const sigTag = (d: string) => `sha256-${d.slice(7)}.sig`;
    // Only in the mirror: a tag naming the same manifest as 1.4.0 and latest, and two signature tags
    // (one of an image the mirror keeps, one of an image about to go).
    await copy(`docker://${dest}:1.4.0`, `docker://${dest}:1.4.0-hotfix`);
    await copy(`docker://${dest}:1.0.0`, `docker://${dest}:${sigTag(digest('1.2.0'))}`);
    await copy(`docker://${dest}:1.0.0`, `docker://${dest}:${sigTag(digest('1.1.0'))}`);
    // 1.1.0 leaves the source (its manifest is deleted: it had that tag alone).
    await run('skopeo', ['delete', '--tls-verify=false', `docker://${src}:1.1.0`], { env });
    const before = await mirrorTags(dest, env);
    const gone = ['1.1.0', '1.4.0-hotfix', sigTag(digest('1.1.0'))].sort();

    const plan = await stowage(['sync', '--src', src, '--dest', dest, '--prune', '--dry-run', '--json'], {
      env,
    });
    expect(plan.code, plan.stderr).toBe(0);
    const planned = JSON.parse(plan.stdout).jobs[0].mirrorDeleted as { tag: string; digest: string }[];
    expect(planned.map((d) => d.tag).sort()).toEqual(gone);
    expect(planned.find((d) => d.tag === '1.4.0-hotfix')?.digest).toBe(digest('1.4.0'));
    expect(await mirrorTags(dest, env)).toEqual(before);

    const done = await stowage(['sync', '--src', src, '--dest', dest, '--prune'], { env });
    expect(done.code, `${done.stdout}${done.stderr}`).toBe(0);
    expect(done.stdout).toMatch(/1\.4\.0-hotfix\s+gone\s+-\s+deleted/);
    expect(await mirrorTags(dest, env)).toEqual(before.filter((t) => !gone.includes(t)));
    // The manifest the deleted 1.4.0-hotfix named is still there under its other tags.
    for (const tag of ['1.4.0', 'latest']) {
      const r = await run('skopeo', ['inspect', '--tls-verify=false', `docker://${dest}:${tag}`], { env });
      expect(JSON.parse(r.stdout).Digest).toBe(digest('1.4.0'));
    }
    const again = await stowage(['sync', '--src', src, '--dest', dest, '--prune', '--json'], { env });
    expect(JSON.parse(again.stdout).jobs[0].mirrorDeleted).toEqual([]);

    const storeOnly = await stowage(['sync', '--src', src, '--prune'], { env });
    expect(storeOnly.code).toBe(2);
    expect(storeOnly.stderr).toContain('--prune deletes mirror tags gone from the source and needs --dest');
    // The checks stowage.toml's jobs get, with the flags' names: nothing is contacted for a bad one.
    for (const [flags, said] of [
      [['--semver', 'nope'], '--semver: "nope" is not a semver range'],
      [['--include', '(['], '--include: '],
      [['--platforms', 'linux/'], '--platforms: '],
    ] as const) {
      const bad = await stowage(['sync', '--src', src, ...flags], { env });
      expect(bad.code, bad.stderr).toBe(2);
      expect(bad.stderr).toContain(said);
    }
  });

  it('--prune deletes nothing when the source lists no tags, and the job fails saying so', async () => {
    const w = await workdir('sync-prune-empty', insecureConf(plain.host));
    const env = { ...w.env, STOWAGE_STORE: join(w.dir, 'store') };
    const src = `${plain.host}/sync-cli/emptied-src`;
    const dest = `${plain.host}/sync-cli/emptied-mirror`;
    await pushTags(repo.layout, ['1.0.0'], src);
    const first = await stowage(['sync', '-q', '--src', src, '--dest', dest], { env });
    expect(first.code, first.stderr).toBe(0);
    await run('skopeo', ['delete', '--tls-verify=false', `docker://${src}:1.0.0`], { env });
    const r = await stowage(['sync', '--src', src, '--dest', dest, '--prune', '--json'], { env });
    expect(r.code).toBe(13);
    const job = JSON.parse(r.stdout).jobs[0];
    expect(job.mirrorDeleted).toEqual([]);
    expect(job.error).toContain('the source lists no tags, so prune deleted none');
    expect(await mirrorTags(dest, env)).toEqual(['1.0.0']);
  });

  it('--preserve-digests fails a tag whose platforms make a new index (foreseen by --dry-run), and mirrors one platform as it is', async () => {
    const w = await workdir('sync-preserve', insecureConf(plain.host));
    const env = { ...w.env, STOWAGE_STORE: join(w.dir, 'store') };
    const args = ['sync', '--src', `${plain.host}/fixtures/multiarch`, '--tags', 'v1', '--preserve-digests'];
    const toBoth = [
      ...args,
      '--dest',
      `${plain.host}/sync-cli/preserve-both`,
      '--platforms',
      'linux/amd64,linux/arm64/v8',
      '--json',
    ];
    const plan = await stowage([...toBoth, '--dry-run'], { env });
    // A dry run foresees it from the HEAD (an index, two platforms chosen) and writes nothing.
    expect(plan.code, plan.stderr).toBe(0);
    const planned = JSON.parse(plan.stdout).jobs[0].tags[0];
    expect(planned).toMatchObject({ action: 'would-fail', code: 'INVALID_ARGUMENT' });
    expect(planned.error).toContain('makes a new index');
    const both = await stowage(toBoth, { env });
    expect(both.code).toBe(13);
    const tag = JSON.parse(both.stdout).jobs[0].tags[0];
    expect(tag.action).toBe('failed');
    expect(tag.error).toContain('makes a new index');
    expect(await mirrorTags(`${plain.host}/sync-cli/preserve-both`, env)).toEqual([]);
    const one = `${plain.host}/sync-cli/preserve-one`;
    const r = await stowage([...args, '--dest', one, '--platforms', 'linux/arm64/v8'], { env });
    expect(r.code, r.stderr).toBe(0);
    const raw = (
      await run(
        'skopeo',
        ['inspect', '--raw', '--tls-verify=false', `docker://${plain.host}/fixtures/multiarch:v1`],
        {
          env,
        },
      )
    ).stdout;
    const arm = JSON.parse(raw).manifests.find(
      (m: { platform: { architecture: string } }) => m.platform.architecture === 'arm64',
    );
    const mirrored = await run('skopeo', ['inspect', '--tls-verify=false', `docker://${one}:v1`], { env });
    expect(JSON.parse(mirrored.stdout).Digest).toBe(arm.digest);
  });

  it('--prune works through token auth (the delete scope asked for and granted)', async () => {
    const token = h.registries.token;
    const w = await workdir('sync-prune-token', insecureConf(token.host));
    const env = { ...w.env, STOWAGE_STORE: join(w.dir, 'store') };
    const creds = ['--creds', `${h.user}:${h.password}`];
    const dest = `${token.host}/sync-cli/prune-token`;
    const args = ['sync', '-q', ...creds, '--src', `${token.host}/fixtures/small`, '--dest', dest];
    expect((await stowage(args, { env })).code).toBe(0);
    const extra = await stowage(
      [
        'copy',
        '-q',
        '--src-creds',
        `${h.user}:${h.password}`,
        '--dest-creds',
        `${h.user}:${h.password}`,
        `docker://${dest}:v1`,
        `docker://${dest}:old`,
      ],
      { env },
    );
    expect(extra.code, extra.stderr).toBe(0);
    const tags = async () =>
      JSON.parse((await stowage(['tags', ...creds, dest], { env })).stdout).Tags.sort() as string[];
    expect(await tags()).toEqual(['old', 'v1']);
    const pruned = await stowage([...args, '--prune'], { env });
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(await tags()).toEqual(['v1']);
  });
});
