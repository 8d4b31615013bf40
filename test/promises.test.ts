/**
 * README promises that had no test of their own: `stowage token`, exit codes 6 (schema 1) and 9 (a
 * file system error), $DOCKER_CONFIG and credsStore, mirrors never used for push, a down mirror costing
 * one retry, keep-within retention.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, isManifestGet, startFaultProxy } from './harness/fault-proxy.js';
import { api, type RunningService, serviceDir, startService } from './harness/service.js';

const h = harness();
const plain = h.registries.plain;
const basic = h.registries.basic;
const small = `${plain.host}/fixtures/small:v1`;
const proxies: FaultProxy[] = [];
const running: RunningService[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop('SIGKILL')));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('README promises', () => {
  it('stowage token prints a token and the stowage.toml entry the service accepts it by', async () => {
    const w = await workdir('token');
    const r = await stowage(['token', 'ci-bot', '--scopes', 'read,pull'], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const token = r.stdout.trim();
    expect(token).toMatch(/^stw_[A-Za-z0-9_-]{20,}$/);
    const sha = createHash('sha256').update(token).digest('hex');
    expect(r.stderr).toContain(`name = "ci-bot"\nsha256 = "${sha}"\nscopes = ["read", "pull"]`);
    // The printed entry, as it is, lets that token in with those scopes and no more.
    const d = await serviceDir('svc-token', insecureConf(plain.host));
    const entry = r.stderr.slice(r.stderr.indexOf('[[server.token]]'));
    await writeFile(d.config, `${await readFile(d.config, 'utf8')}\n${entry}`);
    const s = await startService(d);
    running.push(s);
    const auth = { authorization: `Bearer ${token}` };
    expect((await fetch(`${s.url}/v1/jobs`, { headers: auth })).status).toBe(200);
    const push = await fetch(`${s.url}/v1/pushes`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ archive: 'x', destination: `${plain.host}/x/y` }),
    });
    expect(push.status).toBe(403);
    expect((await api(s, undefined, '/v1/jobs')).status).toBe(401);
  });

  it('exits 6 for a Docker schema 1 manifest, and 9 for a file system error', async () => {
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) =>
        isManifestGet(req)
          ? {
              kind: 'respond',
              handle: (_r, res) => {
                res.writeHead(200, {
                  'content-type': 'application/vnd.docker.distribution.manifest.v1+prettyjws',
                });
                res.end(
                  JSON.stringify({ schemaVersion: 1, name: 'fixtures/small', tag: 'v1', fsLayers: [] }),
                );
              },
            }
          : undefined,
    });
    proxies.push(proxy);
    const w = await workdir('exit-codes', insecureConf(proxy.host, plain.host));
    const s1 = await stowage(['pull', `${proxy.host}/fixtures/small:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(s1.code).toBe(6);
    expect(s1.stderr).toContain('schema 1');
    // /proc takes no new files, whoever asks (root included).
    const fs = await stowage(['pull', small, '-o', '/proc/stowage-test.tar'], { env: w.env });
    expect(fs.code, fs.stderr).toBe(9);
    expect(fs.stderr).toContain('cannot write /proc/stowage-test.tar');
  });

  it('reads credentials from $DOCKER_CONFIG/config.json, and through its credsStore', async () => {
    const w = await workdir('docker-config', insecureConf(basic.host));
    const docker = join(w.dir, 'docker');
    await mkdir(docker);
    await writeFile(
      join(docker, 'config.json'),
      JSON.stringify({ auths: { [basic.host]: { auth: b64(`${h.user}:${h.password}`) } } }),
    );
    const env: NodeJS.ProcessEnv = { ...w.env, DOCKER_CONFIG: docker };
    const ref = `${basic.host}/fixtures/small:v1`;
    const r = await stowage(['pull', '-q', ref, '-o', join(w.dir, 'a.tar')], { env });
    expect(r.code, r.stderr).toBe(0);
    // Without it, the registry refuses: the credentials came from there.
    expect((await stowage(['pull', '-q', ref, '-o', join(w.dir, 'b.tar')], { env: w.env })).code).toBe(4);

    // credsStore: every registry's credentials through one helper (docker-credential-NAME on PATH).
    const bin = join(w.dir, 'bin');
    await mkdir(bin);
    const helper = join(bin, 'docker-credential-teststore');
    await writeFile(
      helper,
      `#!/bin/sh\n[ "$1" = get ] || exit 1\nread server\nprintf '{"ServerURL":"%s","Username":"${h.user}","Secret":"%s"}' "$server" "$SECRET"\n`,
    );
    await chmod(helper, 0o755);
    await writeFile(join(docker, 'config.json'), JSON.stringify({ credsStore: 'teststore' }));
    const viaStore = await stowage(['pull', '-q', ref, '-o', join(w.dir, 'c.tar')], {
      env: { ...env, PATH: `${bin}:${env.PATH}`, SECRET: h.password },
    });
    expect(viaStore.code, viaStore.stderr).toBe(0);
  });

  it('never pushes to a mirror, and a mirror that is down costs one retry before the primary', async () => {
    let connections = 0;
    const down = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((r) => down.listen(0, '127.0.0.1', r));
    const port = (down.address() as { port: number }).port;
    const mirror = await startFaultProxy({ upstream: plain.url });
    proxies.push(mirror);
    try {
      const conf = (mirrorHost: string) =>
        `[[registry]]\nlocation = "${plain.host}"\ninsecure = true\n\n[[registry.mirror]]\nlocation = "${mirrorHost}"\ninsecure = true\n`;
      const w = await workdir('mirror-down', conf(`127.0.0.1:${port}`));
      const r = await stowage(['pull', '--json', small, '-o', join(w.dir, 'a.tar')], { env: w.env });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).source).toBe(`${plain.host}/fixtures/small`);
      // One attempt and one retry, each over HTTPS and plain HTTP (an insecure mirror): at most four.
      expect(connections).toBeGreaterThan(0);
      expect(connections).toBeLessThanOrEqual(4);

      // A working mirror serves pulls, and sees nothing of a push to the primary.
      const w2 = await workdir('mirror-push', conf(mirror.host));
      const archive = join(w2.dir, 'small.tar');
      expect((await stowage(['pull', '-q', small, '-o', archive], { env: w2.env })).code).toBe(0);
      expect(mirror.seen.some((q) => q.method === 'GET' && q.path.includes('/manifests/'))).toBe(true);
      const before = mirror.seen.length;
      const p = await stowage(['push', archive, `${plain.host}/mirror-push/small:v1`], { env: w2.env });
      expect(p.code, p.stderr).toBe(0);
      expect(mirror.seen.slice(before)).toEqual([]);
    } finally {
      await new Promise((r) => down.close(r));
    }
  });

  it('keep-within prunes versions older than the window, and never a tag’s newest', async () => {
    const w = await workdir('keep-within', insecureConf(plain.host));
    const store = join(w.dir, 'store');
    const config = join(w.dir, 'stowage.toml');
    const job = (tags: string) =>
      `[store]\npath = "${store}"\n\n[retention]\nkeep-within = "30d"\n\n[[job]]\nname = "j"\nsource = "${plain.host}/fixtures/small"\ntags = [${tags}]\n`;
    await writeFile(config, job('"v1"'));
    expect((await stowage(['sync', '-q', '--config', config], { env: w.env })).code).toBe(0);
    // The tag moves (another image under it), then the first version is made 90 days old.
    const { run } = await import('./harness/processes.js');
    await run('skopeo', [
      'copy',
      '-q',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${plain.host}/fixtures/multi:v1`,
      `docker://${plain.host}/keep-within/app:v1`,
    ]);
    const index = JSON.parse(await readFile(join(store, 'index.json'), 'utf8'));
    const old = new Date(Date.now() - 90 * 86_400_000).toISOString();
    for (const m of index.manifests)
      for (const k of Object.keys(m.annotations)) if (k.endsWith('.taken')) m.annotations[k] = old;
    await writeFile(join(store, 'index.json'), JSON.stringify(index));
    const listed = JSON.parse(
      (await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout,
    );
    expect(listed).toHaveLength(1);
    expect(listed[0].taken).toBe(old);
    // Alone and old, it is the tag's newest: kept.
    expect((await stowage(['sync', '-q', '--config', config], { env: w.env })).code).toBe(0);
    expect(
      JSON.parse((await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout),
    ).toHaveLength(1);
    // A new version of the same tag arrives: the old one is now outside the window and goes.
    await writeFile(
      config,
      job('"v1"').replace(`${plain.host}/fixtures/small`, `${plain.host}/keep-within/app`),
    );
    const index2 = JSON.parse(await readFile(join(store, 'index.json'), 'utf8'));
    for (const m of index2.manifests)
      for (const k of Object.keys(m.annotations)) {
        if (k.endsWith('.repository')) m.annotations[k] = `${plain.host}/keep-within/app`;
        if (k === 'org.opencontainers.image.ref.name') m.annotations[k] = `${plain.host}/keep-within/app:v1`;
      }
    await writeFile(join(store, 'index.json'), JSON.stringify(index2));
    const r = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).jobs[0].pruned.map((p: { taken: string }) => p.taken)).toEqual([old]);
    const after = JSON.parse(
      (await stowage(['archives', '--json', '--config', config], { env: w.env })).stdout,
    );
    expect(after).toHaveLength(1);
    expect(after[0].taken).not.toBe(old);
  });
});
