/**
 * The archive store served as a registry by a real `stowage serve`, pulled from by the real clients:
 * skopeo (login, inspect, list-tags, copy --all of an index), podman (login with an API token, pull by
 * tag and by digest, anonymous where allowed), buildah, containerd's ctr, and a docker-registry
 * caching it (proxy: remoteurl), each digest equal to the source registry's.
 */
import { createHash } from 'node:crypto';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness, insecureConf } from './harness/cli.js';
import { run, startProcess, stopProcess } from './harness/processes.js';
import { startRegistry } from './harness/registry.js';
import { api, type RunningService, serviceDir, startService, TOKENS, waitJob } from './harness/service.js';
import { podmanFlags } from './harness/tools.js';

const h = harness();
const plain = h.registries.plain;
/** The served name of what was pulled from the plain registry: its port spelled HOST_PORT. */
const served = (repo: string) => `${plain.host.replace(':', '_')}/${repo}`;

let service: RunningService;
let open: RunningService;
let dir: string;
let gateway: string;

async function skopeo(args: string[]) {
  return run('skopeo', args);
}

/** The sha256 of the manifest a reference names, as skopeo reads it. */
async function digestAt(ref: string, extra: string[] = []): Promise<string> {
  const out = await skopeo(['inspect', '--raw', '--tls-verify=false', ...extra, `docker://${ref}`]);
  return createHash('sha256').update(out.stdout).digest('hex');
}

beforeAll(async () => {
  const d = await serviceDir('registry-serve', insecureConf(plain.host));
  dir = d.dir;
  service = await startService(d);
  gateway = new URL(service.url).host;
  for (const ref of [`${plain.host}/fixtures/small:v1`, `${plain.host}/fixtures/multiarch:v1`]) {
    const res = await api(service, 'puller', '/v1/pulls', {
      method: 'POST',
      json: { ref, platforms: 'all' },
    });
    expect(res.status, await res.clone().text()).toBe(202);
    const job = await waitJob(service, ((await res.json()) as { id: string }).id);
    expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
  }
  // A second service on the same store (a state of its own) that lets anyone pull.
  const toml = (await readFile(d.config, 'utf8'))
    .replace(/state = ".*"/, `state = "${join(d.dir, 'state-open')}"`)
    .replace('[server]', '[server.registry]\nanonymous-pull = true\n\n[server]');
  const config = join(d.dir, 'stowage-open.toml');
  await writeFile(config, toml);
  open = await startService({ ...d, config });
}, 120_000);

afterAll(async () => {
  await service?.stop('SIGKILL');
  await open?.stop('SIGKILL');
});

describe('the store served as a registry', () => {
  it('skopeo reads what was pulled, by tag, digest for digest, after logging in with an API token', async () => {
    const authfile = join(dir, 'skopeo-auth.json');
    await skopeo([
      'login',
      '--tls-verify=false',
      '--authfile',
      authfile,
      '-u',
      'ci',
      '-p',
      TOKENS.reader,
      gateway,
    ]);
    const auth = ['--authfile', authfile];
    for (const repo of ['fixtures/small', 'fixtures/multiarch']) {
      expect(await digestAt(`${gateway}/${served(repo)}:v1`, auth)).toBe(
        await digestAt(`${plain.host}/${repo}:v1`),
      );
    }
    const tags = JSON.parse(
      (
        await skopeo([
          'list-tags',
          '--tls-verify=false',
          ...auth,
          `docker://${gateway}/${served('fixtures/small')}`,
        ])
      ).stdout,
    ) as { Tags: string[] };
    expect(tags.Tags).toEqual(['v1']);
  });

  it('skopeo copies the whole index out of it, as it would from the source', async () => {
    const creds = ['--src-creds', `ci:${TOKENS.reader}`];
    const fromGateway = join(dir, 'from-gateway');
    const fromSource = join(dir, 'from-source');
    await skopeo([
      'copy',
      '--all',
      '--quiet',
      '--src-tls-verify=false',
      ...creds,
      `docker://${gateway}/${served('fixtures/multiarch')}:v1`,
      `oci:${fromGateway}:m`,
    ]);
    await skopeo([
      'copy',
      '--all',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${plain.host}/fixtures/multiarch:v1`,
      `oci:${fromSource}:m`,
    ]);
    const index = async (p: string) =>
      JSON.parse(await readFile(join(p, 'index.json'), 'utf8')).manifests[0].digest;
    expect(await index(fromGateway)).toBe(await index(fromSource));
  });

  it('refuses skopeo without credentials, and with a token of no read scope', async () => {
    const bare = await skopeo([
      'inspect',
      '--tls-verify=false',
      '--no-creds',
      `docker://${gateway}/${served('fixtures/small')}:v1`,
    ]).catch((e: Error) => e);
    expect(bare).toBeInstanceOf(Error);
    expect(String(bare)).toMatch(/unauthorized|authentication required/i);
  });

  it('podman logs in with an API token and pulls by tag and by digest', async () => {
    const root = join(dir, 'podman');
    const authfile = join(dir, 'podman-auth.json');
    const flags = podmanFlags(root);
    await run('podman', [
      ...flags,
      'login',
      '--tls-verify=false',
      '--authfile',
      authfile,
      '-u',
      'anyone',
      '-p',
      TOKENS.reader,
      gateway,
    ]);
    const ref = `${gateway}/${served('fixtures/small')}:v1`;
    await run('podman', [...flags, 'pull', '-q', '--tls-verify=false', '--authfile', authfile, ref]);
    const digest = `sha256:${await digestAt(`${plain.host}/fixtures/small:v1`)}`;
    const inspected = JSON.parse((await run('podman', [...flags, 'image', 'inspect', ref])).stdout) as {
      Digest: string;
    }[];
    expect(inspected[0]!.Digest).toBe(digest);
    const byDigest = `${gateway}/${served('fixtures/small')}@${digest}`;
    await run('podman', [...flags, 'pull', '-q', '--tls-verify=false', '--authfile', authfile, byDigest]);
    const wrong = await run('podman', [
      ...flags,
      'login',
      '--tls-verify=false',
      '--authfile',
      join(dir, 'bad.json'),
      '-u',
      'x',
      '-p',
      'stw_not-a-token',
      gateway,
    ]).catch((e: Error) => e);
    expect(wrong).toBeInstanceOf(Error);
  });

  it('lets podman pull without logging in where anonymous-pull is set', async () => {
    const root = join(dir, 'podman-anon');
    const host = new URL(open.url).host;
    const ref = `${host}/${served('fixtures/multiarch')}:v1`;
    await run('podman', [...podmanFlags(root), 'pull', '-q', '--tls-verify=false', '--arch', 'arm64', ref]);
    const inspected = JSON.parse(
      (await run('podman', [...podmanFlags(root), 'image', 'inspect', ref])).stdout,
    ) as { Architecture: string }[];
    expect(inspected[0]!.Architecture).toBe('arm64');
  });

  it('serves an older version of a tag as TAG--ID, beside the newest under the tag', async () => {
    const repo = 'registry-serve/app';
    const versions: string[] = [];
    for (const fixture of ['small', 'multi']) {
      await skopeo([
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        '--dest-tls-verify=false',
        `docker://${plain.host}/fixtures/${fixture}:v1`,
        `docker://${plain.host}/${repo}:1`,
      ]);
      versions.push(await digestAt(`${plain.host}/${repo}:1`));
      const res = await api(service, 'puller', '/v1/pulls', {
        method: 'POST',
        json: { ref: `${plain.host}/${repo}:1` },
      });
      const job = await waitJob(service, ((await res.json()) as { id: string }).id);
      expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
    }
    const listed = (await (
      await api(service, 'reader', `/v1/archives?repository=${encodeURIComponent(`${plain.host}/${repo}`)}`)
    ).json()) as {
      archives: { id: string; digest: string }[];
    };
    const older = listed.archives.find((a) => a.digest === `sha256:${versions[0]}`)!;
    const creds = ['--creds', `ci:${TOKENS.reader}`];
    expect(await digestAt(`${gateway}/${served(repo)}:1`, creds)).toBe(versions[1]);
    expect(await digestAt(`${gateway}/${served(repo)}:1--${older.id}`, creds)).toBe(versions[0]);
    const tags = JSON.parse(
      (await skopeo(['list-tags', '--tls-verify=false', ...creds, `docker://${gateway}/${served(repo)}`]))
        .stdout,
    ) as { Tags: string[] };
    expect(tags.Tags).toEqual(['1']);
  });

  it('feeds a docker-registry that caches it (proxy: remoteurl), logged in with an API token', async () => {
    const { registry, child } = await startRegistry({
      mode: 'plain',
      dir,
      proxy: { remoteurl: service.url, username: 'cache', password: TOKENS.reader },
    });
    try {
      const ref = `${registry.host}/${served('fixtures/small')}:v1`;
      expect(await digestAt(ref)).toBe(await digestAt(`${plain.host}/fixtures/small:v1`));
      const layout = join(dir, 'through-cache');
      await skopeo(['copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${layout}:s`]);
      const copied = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as {
        manifests: { digest: string }[];
      };
      expect(copied.manifests[0]!.digest).toBe(`sha256:${await digestAt(`${plain.host}/fixtures/small:v1`)}`);
    } finally {
      await stopProcess(child);
    }
  });

  it('buildah pulls from it after buildah login', async () => {
    const root = join(dir, 'buildah');
    const authfile = join(dir, 'buildah-auth.json');
    const flags = [
      '--root',
      join(root, 'storage'),
      '--runroot',
      podmanFlags(root)[3]!,
      '--storage-driver',
      'vfs',
    ];
    await run('buildah', [
      ...flags,
      'login',
      '--tls-verify=false',
      '--authfile',
      authfile,
      '-u',
      'ci',
      '-p',
      TOKENS.reader,
      gateway,
    ]);
    const ref = `${gateway}/${served('fixtures/small')}:v1`;
    await run('buildah', [...flags, 'pull', '-q', '--tls-verify=false', '--authfile', authfile, ref]);
    const images = JSON.parse((await run('buildah', [...flags, 'images', '--json'])).stdout) as {
      names: string[];
    }[];
    expect(images.flatMap((i) => i.names)).toContain(ref);
  });

  it("containerd's ctr pulls from it over plain HTTP with --user", async () => {
    const root = join(dir, 'containerd');
    await mkdir(root, { recursive: true });
    const socket = join(root, 'c.sock');
    const config = join(root, 'config.toml');
    await writeFile(
      config,
      `version = 2\nroot = "${join(root, 'root')}"\nstate = "${join(root, 'state')}"\n` +
        `disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${socket}"\n`,
    );
    const { child, output } = startProcess('containerd', ['--config', config]);
    try {
      for (let i = 0; ; i++) {
        if (
          await access(socket).then(
            () => true,
            () => false,
          )
        )
          break;
        if (i > 200 || child.exitCode !== null) throw new Error(`containerd did not start: ${output()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const ctr = (args: string[]) => run('ctr', ['--address', socket, ...args]);
      const ref = `${gateway}/${served('fixtures/multiarch')}:v1`;
      await ctr([
        'image',
        'pull',
        '--plain-http',
        '--user',
        `ci:${TOKENS.reader}`,
        '--snapshotter',
        'native',
        '--all-platforms',
        ref,
      ]);
      const listed = (await ctr(['image', 'ls'])).stdout;
      expect(listed).toContain(ref);
      expect(listed).toContain(`sha256:${await digestAt(`${plain.host}/fixtures/multiarch:v1`)}`);
    } finally {
      await stopProcess(child);
    }
  });

  it('counts its requests in the metrics by endpoint, never by repository name', async () => {
    const text = await (await api(service, 'admin', '/metrics')).text();
    const lines = text.split('\n').filter((l) => l.startsWith('stowage_http_requests_total{'));
    for (const endpoint of ['/v2/{name}/manifests/{reference}', '/v2/{name}/blobs/{digest}', '/auth/token']) {
      expect(
        lines.some((l) => l.includes(`route="${endpoint}"`)),
        endpoint,
      ).toBe(true);
    }
    expect(text).not.toContain('fixtures/small');
  });
});
