import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function skopeoRawDigest(ref: string): Promise<string> {
  const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--raw', ref]);
  return `sha256:${sha256(Buffer.from(stdout))}`;
}

describe('stowage pull (plain registry)', () => {
  const h = harness();
  const reg = h.registries.plain;

  it('writes an oci-archive that skopeo reads, with the registry manifest digest and a valid .sha256', async () => {
    const w = await workdir('pull-small', insecureConf(reg.host));
    const out = join(w.dir, 'small.tar');
    const r = await stowage(['pull', `${reg.host}/fixtures/small:v1`, '-o', out], { env: w.env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(h.fixtures.images.small!.digest);
    // sha256sum -c accepts the checksum file
    const check = await run('sha256sum', ['-c', 'small.tar.sha256'], { cwd: w.dir });
    expect(check.stdout).toContain('small.tar: OK');
    // skopeo reads it and the manifest digest is the registry's
    const layout = join(w.dir, 'layout');
    await run('skopeo', ['copy', '--quiet', `oci-archive:${out}`, `oci:${layout}:copied`]);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    expect(index.manifests[0].digest).toBe(await skopeoRawDigest(`docker://${reg.host}/fixtures/small:v1`));
    expect(index.manifests[0].digest).toBe(h.fixtures.images.small!.digest);
    // the archive names the image
    const ours = JSON.parse((await run('tar', ['-xOf', out, 'index.json'])).stdout);
    expect(ours.manifests[0].annotations).toEqual({
      'io.containerd.image.name': `${reg.host}/fixtures/small:v1`,
      'org.opencontainers.image.ref.name': 'v1',
    });
    // nothing else was left in the directory
    expect((await readdir(w.dir)).sort()).toEqual([
      'home',
      'layout',
      'registries.conf',
      'small.tar',
      'small.tar.sha256',
    ]);
  });

  it('writes no .sha256 with --no-checksum, and removes a stale one left at the path', async () => {
    const w = await workdir('no-checksum', insecureConf(reg.host));
    const small = `${reg.host}/fixtures/small:v1`;
    for (const format of ['oci-archive', 'docker-archive']) {
      const out = join(w.dir, `${format}.tar`);
      expect((await stowage(['pull', '-q', '-f', format, small, '-o', out], { env: w.env })).code).toBe(0);
      const sum = (await readFile(`${out}.sha256`, 'utf8')).split(' ')[0];
      const r = await stowage(['pull', '--json', '--no-checksum', '-f', format, small, '-o', out], {
        env: w.env,
      });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).sha256).toBe('');
      // The same bytes as with the checksum; only the file beside them is gone.
      expect(sha256(await readFile(out))).toBe(sum);
      await expect(readFile(`${out}.sha256`)).rejects.toThrow(/ENOENT/);
    }
  });

  it('gives byte-identical archives for different concurrency and runs', async () => {
    const w = await workdir('repro', insecureConf(reg.host));
    const a = join(w.dir, 'a.tar');
    const b = join(w.dir, 'b.tar');
    expect(
      (await stowage(['pull', '-q', '-j', '1', `${reg.host}/fixtures/multi:v1`, '-o', a], { env: w.env }))
        .code,
    ).toBe(0);
    expect(
      (
        await stowage(['pull', '-q', '-j', '8', `${reg.host}/fixtures/multi:v1`, '-o', b], {
          env: { ...w.env, TZ: 'Asia/Tokyo' },
        })
      ).code,
    ).toBe(0);
    const [ba, bb] = await Promise.all([readFile(a), readFile(b)]);
    expect(ba.length).toBeGreaterThan(3 * 300 * 1024);
    expect(sha256(ba)).toBe(sha256(bb));
    expect((await readFile(`${a}.sha256`, 'utf8')).split(' ')[0]).toBe(sha256(ba));
  });

  it('keeps a whole multi-arch index with --all, digest intact, and is reproducible', async () => {
    const w = await workdir('all', insecureConf(reg.host));
    const a = join(w.dir, 'all.tar');
    const b = join(w.dir, 'all2.tar');
    const r = await stowage(['pull', '--all', '--json', `${reg.host}/fixtures/multiarch:v1`, '-o', a], {
      env: w.env,
    });
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    const registryDigest = await skopeoRawDigest(`docker://${reg.host}/fixtures/multiarch:v1`);
    expect(result.digest).toBe(registryDigest);
    expect(result.platforms.sort()).toEqual(['linux/amd64', 'linux/arm64/v8']);
    const layout = join(w.dir, 'layout');
    await run('skopeo', ['copy', '--quiet', '--all', `oci-archive:${a}`, `oci:${layout}:x`]);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    expect(index.manifests[0].digest).toBe(registryDigest);
    expect(
      (
        await stowage(['pull', '-q', '--all', '-j', '1', `${reg.host}/fixtures/multiarch:v1`, '-o', b], {
          env: w.env,
        })
      ).code,
    ).toBe(0);
    expect(sha256(await readFile(a))).toBe(sha256(await readFile(b)));
  });

  it('chooses one platform with --platform', async () => {
    const w = await workdir('platform', insecureConf(reg.host));
    const out = join(w.dir, 'arm.tar');
    const r = await stowage(
      ['pull', '--json', '--platform', 'linux/arm64', `${reg.host}/fixtures/multiarch:v1`, '-o', out],
      { env: w.env },
    );
    expect(r.code).toBe(0);
    const index = JSON.parse(
      (
        await run('skopeo', [
          'inspect',
          '--raw',
          '--tls-verify=false',
          `docker://${reg.host}/fixtures/multiarch:v1`,
        ])
      ).stdout,
    );
    const arm = index.manifests.find(
      (m: { platform: { architecture: string } }) => m.platform.architecture === 'arm64',
    );
    expect(JSON.parse(r.stdout).digest).toBe(arm.digest);
    const cfg = JSON.parse((await run('skopeo', ['inspect', '--config', `oci-archive:${out}`])).stdout);
    expect(cfg.architecture).toBe('arm64');
    const missing = await stowage(
      ['pull', '--platform', 'linux/s390x', `${reg.host}/fixtures/multiarch:v1`, '-o', join(w.dir, 'x.tar')],
      { env: w.env },
    );
    expect(missing.code).toBe(5);
    expect(missing.stderr).toContain('linux/amd64');
    expect(missing.stderr).toContain('linux/arm64');
  });

  it('pulls Docker schema 2 manifests and manifest lists as they are', async () => {
    const w = await workdir('v2s2', insecureConf(reg.host));
    for (const name of ['small-v2s2', 'multiarch-v2s2']) {
      const out = join(w.dir, `${name}.tar`);
      const r = await stowage(['pull', '--all', '--json', `${reg.host}/fixtures/${name}:v1`, '-o', out], {
        env: w.env,
      });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const result = JSON.parse(r.stdout);
      expect(result.mediaType).toMatch(
        /^application\/vnd\.docker\.distribution\.manifest\.(v2|list\.v2)\+json$/,
      );
      expect(result.digest).toBe(await skopeoRawDigest(`docker://${reg.host}/fixtures/${name}:v1`));
      const layout = join(w.dir, `${name}-layout`);
      await run('skopeo', ['copy', '--quiet', '--all', `oci-archive:${out}`, `oci:${layout}:x`]);
      expect((await stat(join(layout, 'index.json'))).isFile()).toBe(true);
    }
  });

  it('streams a large layer with flat memory', async () => {
    const w = await workdir('large', insecureConf(reg.host));
    // The same runtime's peak for a small image is the baseline (it differs between Node versions).
    const small = await stowage(
      ['pull', '-q', `${reg.host}/fixtures/small:v1`, '-o', join(w.dir, 'small.tar')],
      {
        env: w.env,
        measureRss: true,
      },
    );
    expect(small.code).toBe(0);
    const out = join(w.dir, 'large.tar');
    const r = await stowage(['pull', '-q', `${reg.host}/fixtures/large:v1`, '-o', out], {
      env: w.env,
      measureRss: true,
    });
    expect(r.code).toBe(0);
    const size = (await stat(out)).size;
    expect(size).toBeGreaterThan(h.fixtures.largeLayerBytes);
    expect(small.maxRss).toBeGreaterThan(0);
    // Holding the layer, or even a third of it, in memory would show over the baseline; streaming adds
    // its buffers only (measured: about 30 MiB on Node 20, 17 MiB on Node 24, for a 192 MiB layer).
    expect(h.fixtures.largeLayerBytes).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    expect(r.maxRss! - small.maxRss!).toBeLessThan(
      Math.min(64 * 1024 * 1024, h.fixtures.largeLayerBytes / 3),
    );
    const check = await run('sha256sum', ['-c', 'large.tar.sha256'], { cwd: w.dir });
    expect(check.stdout).toContain('OK');
  });
});
