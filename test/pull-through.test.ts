/**
 * The registry as a pull-through cache, with real clients and a real upstream: a docker-registry
 * behind a small counting proxy (which also stands for the upstream going away). podman, told by
 * registries.conf to use the gateway as a mirror, pulls an image the store did not have, and the store
 * has it afterwards; one platform of an index pulled through stores that platform's blobs only; a
 * second pull within tag-ttl asks nothing of the upstream; three clients at once fetch each blob once;
 * the upstream's rate limit answers TOOMANYREQUESTS; the trust policy refuses before anything is
 * stored; with the upstream gone, what was pulled through is still served.
 */
import { createHash } from 'node:crypto';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage } from './harness/cli.js';
import { type FaultProxy, startFaultProxy } from './harness/fault-proxy.js';
import { run, stopProcess } from './harness/processes.js';
import { startRegistry } from './harness/registry.js';
import { api, type RunningService, type ServiceDir, serviceDir, startService } from './harness/service.js';
import { podmanFlags } from './harness/tools.js';

const h = harness();
const plain = h.registries.plain;
let upstream: Awaited<ReturnType<typeof startRegistry>>;
let proxy: FaultProxy;
let d: ServiceDir;
let service: RunningService;
let gateway: string;
/** The gateway's name for the upstream's repository: GATEWAY/HOST_PORT/PATH. */
const through = (repo: string) => `${gateway}/${proxy.host.replace(':', '_')}/${repo}`;
const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

async function raw(ref: string, extra: string[] = []): Promise<string> {
  return (await run('skopeo', ['inspect', '--raw', '--tls-verify=false', ...extra, `docker://${ref}`]))
    .stdout;
}

const inStore = (digest: string) =>
  access(join(d.store, 'blobs', 'sha256', digest.slice(7))).then(
    () => true,
    () => false,
  );

/** Requests that reached the upstream, but for the /v2/ pings. */
const upstreamAsked = () => proxy.seen.filter((r) => r.path !== '/v2/').length;

beforeAll(async () => {
  upstream = await startRegistry({ mode: 'plain', dir: h.dir });
  for (const name of ['small', 'multi', 'multiarch', 'small:guarded', 'small:limited']) {
    await run('skopeo', [
      'copy',
      '--all',
      '--quiet',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${plain.host}/fixtures/${name.split(':')[0]}:v1`,
      `docker://${upstream.registry.host}/fixtures/${name.split(':').at(-1)}:v1`,
    ]);
  }
  // The upstream rate-limits one repository, asking for an hour's wait.
  proxy = await startFaultProxy({
    upstream: upstream.registry.url,
    fault: (req) =>
      req.url?.startsWith('/v2/fixtures/limited/')
        ? { kind: 'status', status: 429, headers: { 'retry-after': '3600' } }
        : undefined,
  });
  d = await serviceDir(
    'pull-through',
    insecureConf(proxy.host),
    `[server.registry]\nanonymous-pull = true\npull-through = ["${proxy.host}"]\ntag-ttl = "5m"\n`,
  );
  service = await startService(d);
  gateway = new URL(service.url).host;
}, 120_000);

afterAll(async () => {
  await service?.stop('SIGKILL');
  await proxy?.close().catch(() => {});
  if (upstream) await stopProcess(upstream.child);
});

describe('pull-through', () => {
  it('fills the store when podman pulls through it as a registries.conf mirror', async () => {
    const root = join(d.dir, 'podman');
    const conf = join(d.dir, 'podman-registries.conf');
    await writeFile(
      conf,
      `[[registry]]\nlocation = "${proxy.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${gateway}/${proxy.host.replace(':', '_')}"\ninsecure = true\n`,
    );
    const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: conf };
    await run('podman', [...podmanFlags(root), 'pull', '-q', `${proxy.host}/fixtures/small:v1`], { env });
    const listed = (await (
      await api(
        service,
        'reader',
        `/v1/archives?repository=${encodeURIComponent(`${proxy.host}/fixtures/small`)}`,
      )
    ).json()) as { archives: { tag: string; digest: string; pulledThrough?: boolean }[] };
    expect(listed.archives).toHaveLength(1);
    expect(listed.archives[0]).toMatchObject({ tag: 'v1', pulledThrough: true });
    expect(listed.archives[0]!.digest).toBe(
      `sha256:${sha256(await raw(`${upstream.registry.host}/fixtures/small:v1`))}`,
    );
    // podman asked the gateway, and the gateway the upstream: the image's layers are in the store.
    const manifest = JSON.parse(await raw(`${upstream.registry.host}/fixtures/small:v1`)) as {
      layers: { digest: string }[];
    };
    for (const l of manifest.layers) expect(await inStore(l.digest)).toBe(true);
  });

  it('stores only the platform a client asked for of an index, and asks nothing more within tag-ttl', async () => {
    const index = JSON.parse(await raw(`${upstream.registry.host}/fixtures/multiarch:v1`)) as {
      manifests: { digest: string; platform: { architecture: string } }[];
    };
    const layersOf = async (digest: string) =>
      (
        JSON.parse(await raw(`${upstream.registry.host}/fixtures/multiarch@${digest}`)) as {
          layers: { digest: string }[];
        }
      ).layers;
    const arm = index.manifests.find((m) => m.platform.architecture === 'arm64')!;
    const amd = index.manifests.find((m) => m.platform.architecture === 'amd64')!;
    const layout = join(d.dir, 'arm');
    const copy = () =>
      run('skopeo', [
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        '--override-arch',
        'arm64',
        `docker://${through('fixtures/multiarch')}:v1`,
        `oci:${layout}:m`,
      ]);
    // What of the other platform the store did not hold before (the small image shares its layers).
    const armLayers = new Set((await layersOf(arm.digest)).map((l) => l.digest));
    const amdOnly: string[] = [];
    for (const l of await layersOf(amd.digest)) {
      if (!armLayers.has(l.digest) && !(await inStore(l.digest))) amdOnly.push(l.digest);
    }
    expect(amdOnly.length).toBeGreaterThan(0);
    await copy();
    expect(await inStore(arm.digest)).toBe(true);
    for (const l of armLayers) expect(await inStore(l)).toBe(true);
    for (const l of amdOnly) expect(await inStore(l)).toBe(false);
    expect(await inStore(amd.digest)).toBe(false);
    // The sparse version exports as the platform it holds; whole, it says what is missing.
    const listed = (await (
      await api(
        service,
        'reader',
        `/v1/archives?repository=${encodeURIComponent(`${proxy.host}/fixtures/multiarch`)}`,
      )
    ).json()) as { archives: { id: string; pulledThrough?: boolean; platforms: string[] }[] };
    expect(listed.archives[0]).toMatchObject({
      pulledThrough: true,
      platforms: ['linux/amd64', 'linux/arm64/v8'],
    });
    const id = listed.archives[0]!.id;
    const exported = join(d.dir, 'arm.tar');
    const one = await stowage(
      ['archives', 'export', id, '--platform', 'linux/arm64/v8', '-o', exported, '-q', '--store', d.store],
      { env: d.env },
    );
    expect(one.code, one.stderr).toBe(0);
    const whole = await stowage(
      ['archives', 'export', id, '--all', '-o', join(d.dir, 'whole.tar'), '-q', '--store', d.store],
      { env: d.env },
    );
    expect(whole.code).not.toBe(0);
    expect(whole.stderr).toContain(amd.digest);
    // The same pull again: all from the store, not one request upstream.
    const before = upstreamAsked();
    await copy();
    expect(upstreamAsked()).toBe(before);
  });

  it('fetches each blob once upstream while three clients pull the same image at once', async () => {
    await Promise.all(
      [1, 2, 3].map((i) =>
        run('skopeo', [
          'copy',
          '--quiet',
          '--src-tls-verify=false',
          `docker://${through('fixtures/multi')}:v1`,
          `oci:${join(d.dir, `multi-${i}`)}:m`,
        ]),
      ),
    );
    const blobGets = proxy.seen.filter(
      (r) => r.method === 'GET' && r.path.startsWith('/v2/fixtures/multi/blobs/'),
    );
    const perBlob = new Map<string, number>();
    for (const r of blobGets) perBlob.set(r.path, (perBlob.get(r.path) ?? 0) + 1);
    expect(perBlob.size).toBeGreaterThanOrEqual(3);
    for (const [path, n] of perBlob) expect(n, path).toBe(1);
    const layouts = await Promise.all(
      [1, 2, 3].map((i) => readFile(join(d.dir, `multi-${i}`, 'index.json'), 'utf8')),
    );
    expect(new Set(layouts.map((l) => JSON.parse(l).manifests[0].digest)).size).toBe(1);
  });

  it('verifies a store holding versions pulled through in part: what no client asked for is said, not damage', async () => {
    // The amd64 manifest of the index pulled through for arm64, asked for alone: now held, while its
    // own layer is not.
    const index = JSON.parse(await raw(`${upstream.registry.host}/fixtures/multiarch:v1`)) as {
      manifests: { digest: string; platform: { architecture: string } }[];
    };
    const amd = index.manifests.find((m) => m.platform.architecture === 'amd64')!;
    await raw(`${through('fixtures/multiarch')}@${amd.digest}`);
    expect(await inStore(amd.digest)).toBe(true);
    const report = await stowage(['verify', '--json', d.store], { env: d.env });
    expect(report.code, report.stdout + report.stderr).toBe(0);
    const parsed = JSON.parse(report.stdout) as { problems: unknown[]; warnings: string[] };
    expect(parsed.problems).toEqual([]);
    expect(
      parsed.warnings.some((w) => w.includes('a version pulled through holds only what clients asked for')),
    ).toBe(true);
  });

  it("answers the upstream's rate limit as TOOMANYREQUESTS, and stores nothing", async () => {
    const res = await fetch(
      `http://${gateway}/v2/${proxy.host.replace(':', '_')}/fixtures/limited/manifests/v1`,
    );
    expect(res.status).toBe(429);
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0]!.code).toBe('TOOMANYREQUESTS');
    expect(body.errors[0]!.message).toContain('Retry-After');
    const listed = (await (
      await api(
        service,
        'reader',
        `/v1/archives?repository=${encodeURIComponent(`${proxy.host}/fixtures/limited`)}`,
      )
    ).json()) as { archives: unknown[] };
    expect(listed.archives).toEqual([]);
  });

  it('lets the trust policy refuse an image before any of it is served or stored', async () => {
    const home = join(d.dir, 'home-guarded');
    await mkdir(join(home, '.config', 'containers'), { recursive: true });
    await writeFile(
      join(home, '.config', 'containers', 'policy.json'),
      JSON.stringify({
        default: [{ type: 'insecureAcceptAnything' }],
        transports: { docker: { [`${proxy.host}/fixtures/guarded`]: [{ type: 'reject' }] } },
      }),
    );
    const toml = (await readFile(d.config, 'utf8')).replace(
      /state = ".*"/,
      `state = "${join(d.dir, 'state-guarded')}"`,
    );
    const config = join(d.dir, 'stowage-guarded.toml');
    await writeFile(config, toml);
    const guarded = await startService({ ...d, config, env: { ...d.env, HOME: home } });
    try {
      const host = new URL(guarded.url).host;
      const path = `/v2/${proxy.host.replace(':', '_')}/fixtures/guarded/manifests/v1`;
      const refused = await fetch(`http://${host}${path}`);
      expect(refused.status).toBe(403);
      expect(((await refused.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('DENIED');
      const listed = (await (
        await api(
          guarded,
          'reader',
          `/v1/archives?repository=${encodeURIComponent(`${proxy.host}/fixtures/guarded`)}`,
        )
      ).json()) as { archives: unknown[] };
      expect(listed.archives).toEqual([]);
      // What the policy lets in still comes through the same gateway.
      expect(
        (await fetch(`http://${host}/v2/${proxy.host.replace(':', '_')}/fixtures/small/manifests/v1`)).status,
      ).toBe(200);
    } finally {
      await guarded.stop('SIGKILL');
    }
  });

  it('serves what it pulled through while the upstream is gone, and counts hits, misses and stale answers', async () => {
    // A second gateway on the same store that asks the upstream again after one second.
    const toml = (await readFile(d.config, 'utf8'))
      .replace('tag-ttl = "5m"', 'tag-ttl = "1s"')
      .replace(/state = ".*"/, `state = "${join(d.dir, 'state-short')}"`);
    const config = join(d.dir, 'stowage-short.toml');
    await writeFile(config, toml);
    const short = await startService({ ...d, config });
    try {
      const host = new URL(short.url).host;
      const ref = `${host}/${proxy.host.replace(':', '_')}/fixtures/small:v1`;
      const want = await raw(ref);
      await proxy.close();
      await new Promise((r) => setTimeout(r, 1500));
      expect(await raw(ref)).toBe(want);
      await run('skopeo', [
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        `docker://${ref}`,
        `oci:${join(d.dir, 'offline')}:s`,
      ]);
      const metrics = await (await api(short, 'admin', '/metrics')).text();
      expect(metrics).toMatch(/stowage_registry_pull_through_total\{result="stale"[^}]*\} [1-9]/);
      expect(short.output()).toContain('upstream unreachable: serving the stored version');
      // Something never pulled through cannot be served with the upstream gone: a clear 502.
      const missing = await fetch(
        `${short.url}/v2/${proxy.host.replace(':', '_')}/fixtures/never/manifests/v1`,
      );
      expect(missing.status).toBe(502);
      expect(((await missing.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('UNKNOWN');
    } finally {
      await short.stop('SIGKILL');
    }
    const metrics = await (await api(service, 'admin', '/metrics')).text();
    expect(metrics).toMatch(/stowage_registry_pull_through_total\{result="miss"[^}]*\} [1-9]/);
    expect(metrics).toMatch(/stowage_registry_pull_through_total\{result="hit"[^}]*\} [1-9]/);
  });
});
