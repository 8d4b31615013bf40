/**
 * Whole namespaces (issue 32) against a real docker-registry: a source pattern (HOST/team/**) found
 * through the catalog, read page by page at a small page size, include/exclude of repositories, each
 * repository mirrored under a prefix ({path}) and stored; a registry without the catalog fails the job
 * saying what to do; requests per tag counted at a proxy in front of the registry; skopeo reads the
 * store afterwards. A store killed mid-sync with thousands of versions keeps every version it had
 * journaled, `stowage verify` accepts it, and the next sync completes it.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, startFaultProxy } from './harness/fault-proxy.js';
import { run, stopProcess } from './harness/processes.js';
import { startRegistry } from './harness/registry.js';
import { buildTags, seedRegistry } from './harness/registry-seed.js';

const h = harness();
const children: ChildProcess[] = [];
const proxies: FaultProxy[] = [];
let source: { host: string; url: string; root: string };
let proxy: FaultProxy;
/** The team namespace: 50 repositories of 2 tags, one nested deeper, and one outside it. */
const TEAM = Array.from({ length: 50 }, (_, i) => `team/app${String(i).padStart(2, '0')}`);

beforeAll(async () => {
  const started = await startRegistry({ mode: 'plain', dir: join(h.dir, 'namespace') });
  children.push(started.child);
  source = started.registry;
  await seedRegistry(join(source.root, 'data'), [
    ...TEAM.map((name) => ({ name, tags: ['1.0', '1.1'] })),
    { name: 'team/sub/deep', tags: ['1.0'] },
    { name: 'other/app', tags: ['1.0'] },
    { name: 'big/app', tags: buildTags(2000) },
  ]);
  proxy = await startFaultProxy({ upstream: source.url });
  proxies.push(proxy);
}, 120_000);

afterAll(async () => {
  for (const p of proxies) await p.close();
  for (const c of children) await stopProcess(c);
});

async function mirrorTags(repository: string, env: NodeJS.ProcessEnv): Promise<string[]> {
  const r = await run('skopeo', ['list-tags', '--tls-verify=false', `docker://${repository}`], { env });
  return (JSON.parse(r.stdout).Tags as string[]).sort();
}

describe('sources that name many repositories', () => {
  it('finds a namespace by the paged catalog, filters repositories, mirrors under a prefix and stores each', async () => {
    const mirror = h.registries.plain.host;
    const w = await workdir('namespace', insecureConf(proxy.host, mirror));
    const store = join(w.dir, 'store');
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      [
        `[store]\npath = "${store}"\n`,
        `[registries."${proxy.host}"]\ncatalog-page-size = 7\n`,
        '[[job]]',
        'name = "team"',
        `source = "${proxy.host}/team/*"`,
        // app40 .. app49 left out; team/sub/deep is two segments below team, so * does not take it.
        'repositories = { exclude = ["^team/app4"] }',
        `mirror = "${mirror}/ns32/{path}"`,
        'archive = true',
        '',
      ].join('\n'),
    );
    const plan = await stowage(['sync', '--dry-run', '--json', '--config', config], { env: w.env });
    expect(plan.code, plan.stderr).toBe(0);
    const planned = JSON.parse(plan.stdout);
    expect(planned.jobs).toHaveLength(40);
    expect(planned.jobs[0]).toMatchObject({
      name: 'team',
      source: `${proxy.host}/team/app00`,
      pattern: `${proxy.host}/team/*`,
      mirror: `${mirror}/ns32/app00`,
    });
    expect(planned.jobs.flatMap((j: { tags: { action: string }[] }) => j.tags.map((t) => t.action))).toEqual(
      Array(80).fill('would-fetch'),
    );
    // 53 repositories at 7 a page: 8 pages, each asked for with n=7, the next by the Link header.
    const catalog = proxy.seen.filter((r) => r.path.startsWith('/v2/_catalog'));
    expect(catalog).toHaveLength(8);
    expect(catalog.every((r) => r.path.includes('n=7'))).toBe(true);

    const before = proxy.seen.length;
    const done = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(done.code, done.stderr).toBe(0);
    const report = JSON.parse(done.stdout);
    expect(report.failed).toBe(0);
    expect(report.jobs.map((j: { source: string }) => j.source)).toEqual(
      TEAM.slice(0, 40).map((r) => `${proxy.host}/${r}`),
    );
    // Per repository: the catalog's pages once per run, one tag listing; per new tag: HEAD, manifest
    // GET and one referrers look-up (remembered as missing after the first), plus the config blob
    // (the shared layer once per repository, as the store's blob sink remembers it for the run).
    const requests = proxy.seen.slice(before);
    const count = (re: RegExp) => requests.filter((r) => re.test(`${r.method} ${r.path}`)).length;
    expect(count(/^GET \/v2\/[^_].*\/tags\/list/)).toBe(40);
    expect(count(/^HEAD \/v2\/.*\/manifests\//)).toBe(80);
    expect(count(/^GET \/v2\/.*\/manifests\//)).toBe(80);
    expect(count(/\/referrers\//)).toBe(1);
    expect(count(/^GET \/v2\/.*\/blobs\//)).toBe(80 + 1);

    expect(await mirrorTags(`${mirror}/ns32/app07`, w.env)).toEqual(['1.0', '1.1']);
    const archives = JSON.parse(
      (await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout,
    );
    expect(new Set(archives.map((v: { repository: string }) => v.repository)).size).toBe(40);
    expect(archives).toHaveLength(80);
    // The store is an OCI layout skopeo reads after the run, every version named.
    const inspected = JSON.parse(
      (await run('skopeo', ['inspect', `oci:${store}:${proxy.host}/team/app12:1.1`])).stdout,
    );
    expect(inspected.Labels).toEqual({ repository: 'team/app12', tag: '1.1' });

    // Nothing changed: one HEAD per tag (and per mirror tag), nothing fetched.
    const warmFrom = proxy.seen.length;
    const again = JSON.parse((await stowage(['sync', '--json', '--config', config], { env: w.env })).stdout);
    expect(again.fetchedBytes).toBe(0);
    const warm = proxy.seen.slice(warmFrom).filter((r) => !r.path.startsWith('/v2/_catalog'));
    expect(warm.filter((r) => r.method === 'HEAD')).toHaveLength(80);
    expect(warm.filter((r) => r.method === 'GET' && !r.path.endsWith('/tags/list?n=1000'))).toEqual(
      warm.filter((r) => r.path === '/v2/'),
    );
  });

  it('takes repositories at any depth with ** and an include, from the command line too', async () => {
    const w = await workdir('namespace-deep', insecureConf(proxy.host));
    const env = { ...w.env, STOWAGE_STORE: join(w.dir, 'store') };
    const r = await stowage(
      ['sync', '--json', '--src', `${proxy.host}/team/**`, '--include-repo', '^team/(sub/|app0[12]$)'],
      { env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).jobs.map((j: { source: string }) => j.source)).toEqual([
      `${proxy.host}/team/app01`,
      `${proxy.host}/team/app02`,
      `${proxy.host}/team/sub/deep`,
    ]);
    const text = await stowage(
      ['sync', '--dry-run', '--src', `${proxy.host}/team/**`, '--include-repo', '^team/sub/'],
      {
        env,
      },
    );
    expect(text.stdout).toMatch(
      new RegExp(`command-line ${proxy.host}/team/sub/deep\\s+1\\.0\\s+would-skip`),
    );
    expect(text.stdout).toMatch(/1 job, 1 repository, 1 tag,/);
    // A pattern with a mirror that does not say where each repository goes is refused before anything.
    const bad = await stowage(['sync', '--src', `${proxy.host}/team/**`, '--dest', `${proxy.host}/one`], {
      env,
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--dest: .*add \{repository\}.*or \{path\}/);
  });

  it('fails the job, and only it, where the registry does not list its repositories', async () => {
    const noCatalog = await startFaultProxy({
      upstream: source.url,
      fault: (req) =>
        (req.url ?? '').startsWith('/v2/_catalog')
          ? { kind: 'status', status: 404, headers: { 'content-type': 'text/plain' } }
          : undefined,
    });
    proxies.push(noCatalog);
    const w = await workdir('namespace-nocatalog', insecureConf(noCatalog.host));
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${join(w.dir, 'store')}"\n\n[[job]]\nname = "all"\nsource = "${noCatalog.host}/**"\n\n` +
        `[[job]]\nname = "one"\nsource = "${noCatalog.host}/other/app"\n`,
    );
    const r = await stowage(['sync', '--config', config], { env: w.env });
    expect(r.code).toBe(13);
    expect(r.stdout).toMatch(
      /all\s+.*failed\s+.*does not list its repositories \(GET \/v2\/_catalog answered HTTP 404[^)]*\); name each repository as a job's source instead/,
    );
    expect(r.stdout).toMatch(/one\s+1\.0\s+fetched/);
  });

  it('a sync killed with thousands of versions journaled keeps them all; verify accepts the store; the next run completes it', async () => {
    const w = await workdir('namespace-kill', insecureConf(source.host));
    const store = join(w.dir, 'store');
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${store}"\n\n[[job]]\nname = "big"\nsource = "${source.host}/big/app"\n`,
    );
    const child = spawn(process.execPath, [BIN, 'sync', '-q', '--config', config], {
      env: w.env,
      stdio: 'ignore',
    });
    const journaled = async () =>
      (await readFile(join(store, 'index.journal'), 'utf8').catch(() => '')).split('\n').filter(Boolean)
        .length;
    for (let i = 0; i < 1200 && (await journaled()) < 1000; i++) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const kept = await journaled();
    expect(kept).toBeGreaterThanOrEqual(1000);
    expect(kept).toBeLessThan(2000);
    // A reader sees every journaled version; index.json (what skopeo reads) is still whole and valid.
    const listed = JSON.parse(
      (await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout,
    );
    expect(listed.length).toBeGreaterThanOrEqual(kept);
    const verified = await stowage(['verify', `oci:${store}`], { env: w.env });
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    // The next writer folds the journal into index.json, then fetches only what is missing.
    const rest = JSON.parse((await stowage(['sync', '--json', '--config', config], { env: w.env })).stdout);
    expect(rest.failed).toBe(0);
    const skipped = rest.jobs[0].tags.filter((t: { action: string }) => t.action === 'skipped').length;
    expect(skipped).toBeGreaterThanOrEqual(kept);
    const index = JSON.parse(await readFile(join(store, 'index.json'), 'utf8'));
    expect(index.manifests).toHaveLength(2000);
    expect((await stowage(['verify', `oci:${store}`], { env: w.env })).code).toBe(0);
    const inspected = JSON.parse(
      (await run('skopeo', ['inspect', `oci:${store}:${source.host}/big/app:build-00007`])).stdout,
    );
    expect(inspected.Labels.tag).toBe('build-00007');
  }, 240_000);
});
