/**
 * Restore and mirror against the real registries: archives go back with their digests, docker-archives
 * get a deterministic new manifest, a second push sends nothing, blobs are mounted across
 * repositories, and failures (a damaged archive, a wrong password, a registry that drops an upload or
 * keeps failing) end with a clear error and no tag on an incomplete image.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { harness, insecureConf, learntLocations, locationsDir, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, isBlobUpload, startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';
import type { RegistryMode } from './harness/registry.js';
import { damageEntry, podmanFlags } from './harness/tools.js';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const h = harness();
const plain = h.registries.plain;
const small = `${plain.host}/fixtures/small:v1`;
const multi = `${plain.host}/fixtures/multi:v1`;
const multiarch = `${plain.host}/fixtures/multiarch:v1`;
const creds = `${h.user}:${h.password}`;

const proxies: FaultProxy[] = [];
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

/** What stowage needs to reach a registry of each mode. */
function accessFlags(mode: RegistryMode): string[] {
  if (mode === 'tls') return ['--cert-dir', h.caDir];
  if (mode === 'basic' || mode === 'token') return ['--creds', creds];
  return [];
}

/** skopeo's flags for the same registry. */
function skopeoFlags(mode: RegistryMode): string[] {
  if (mode === 'tls') return ['--cert-dir', h.caDir];
  if (mode === 'basic' || mode === 'token') return ['--tls-verify=false', '--creds', creds];
  return ['--tls-verify=false'];
}

/** What `skopeo inspect --raw` or `--config` printed: the fields these tests read. */
interface Inspected {
  mediaType: string;
  layers: { mediaType: string; digest: string }[];
  rootfs: { diff_ids: string[] };
}

async function skopeoJson(...args: string[]): Promise<Inspected> {
  return JSON.parse((await run('skopeo', args)).stdout) as Inspected;
}

async function rawDigest(ref: string, flags: string[]): Promise<string> {
  const { stdout } = await run('skopeo', ['inspect', ...flags, '--raw', `docker://${ref}`]);
  return `sha256:${sha256(stdout)}`;
}

async function tagsOf(repo: string, flags: string[]): Promise<string[]> {
  try {
    const { stdout } = await run('skopeo', ['list-tags', ...flags, `docker://${repo}`]);
    return JSON.parse(stdout).Tags;
  } catch (e) {
    if (/NAME_UNKNOWN|name unknown|repository name not known|404 \(Not Found\)/i.test(String(e))) return [];
    throw e;
  }
}

const podman = podmanFlags;

describe('push and copy', () => {
  it('restores an archive into every kind of registry with manifest and index digests intact', async () => {
    const hosts = (['plain', 'basic', 'tls', 'token'] as const).map((m) => h.registries[m].host);
    const w = await workdir('restore', insecureConf(plain.host, hosts[1]!, hosts[3]!));
    const archive = join(w.dir, 'three.tar');
    const pulled = await stowage(['pull', '-q', '--all', small, multi, multiarch, '-o', archive], {
      env: w.env,
    });
    expect(pulled.code, pulled.stderr).toBe(0);
    for (const mode of ['plain', 'basic', 'tls', 'token'] as const) {
      const reg = h.registries[mode];
      const r = await stowage(['push', '--json', ...accessFlags(mode), archive, `${reg.host}/restore`], {
        env: w.env,
      });
      expect(r.code, `${mode}: ${r.stderr}`).toBe(0);
      const result = JSON.parse(r.stdout);
      expect(result.images.map((i: { destinations: string[] }) => i.destinations)).toEqual([
        [`${reg.host}/restore/fixtures/small:v1`],
        [`${reg.host}/restore/fixtures/multi:v1`],
        [`${reg.host}/restore/fixtures/multiarch:v1`],
      ]);
      for (const name of ['small', 'multi', 'multiarch']) {
        expect(
          await rawDigest(`${reg.host}/restore/fixtures/${name}:v1`, skopeoFlags(mode)),
          `${mode} ${name}`,
        ).toBe(h.fixtures.images[name]!.digest);
      }
      // One image under a name of our choosing, every blob already there.
      const one = await stowage(
        [
          'push',
          '--json',
          ...accessFlags(mode),
          '--image',
          `${multiarch}`,
          archive,
          `${reg.host}/renamed/app:2.0`,
        ],
        { env: w.env },
      );
      expect(one.code, one.stderr).toBe(0);
      // Into the registry it came from, the blobs are mounted from the repository the archive names.
      if (mode === 'plain') {
        const stats = JSON.parse(one.stdout).stats;
        expect(stats.uploaded).toBe(0);
        expect(stats.mounted).toBeGreaterThan(0);
      }
      expect(await rawDigest(`${reg.host}/renamed/app:2.0`, skopeoFlags(mode))).toBe(
        h.fixtures.images.multiarch!.digest,
      );
    }
    // --prefix maps every image under a path; --all-tags pushes every tag an image records.
    for (const tag of ['a', 'b'])
      await run('skopeo', [
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        '--dest-tls-verify=false',
        `docker://${small}`,
        `docker://${plain.host}/tags/small:${tag}`,
      ]);
    const tagged = join(w.dir, 'tagged.tar');
    const two = [`${plain.host}/tags/small:a`, `${plain.host}/tags/small:b`];
    expect(
      (await stowage(['pull', '-q', '-f', 'docker-archive', ...two, '-o', tagged], { env: w.env })).code,
    ).toBe(0);
    const pre = await stowage(['push', '-q', '--prefix', 'mirror/', tagged, plain.host], { env: w.env });
    expect(pre.code, pre.stderr).toBe(0);
    expect(await tagsOf(`${plain.host}/mirror/tags/small`, skopeoFlags('plain'))).toEqual(['a']);
    const all = await stowage(['push', '-q', '--all-tags', tagged, `${plain.host}/single/small`], {
      env: w.env,
    });
    expect(all.code, all.stderr).toBe(0);
    expect((await tagsOf(`${plain.host}/single/small`, skopeoFlags('plain'))).sort()).toEqual(['a', 'b']);
  });

  it('restores a docker-archive saved by podman: gzipped deterministically, the same digest as from ours', async () => {
    const w = await workdir('docker-restore', insecureConf(plain.host));
    const root = join(w.dir, 'podman');
    const viaSkopeo = join(w.dir, 's-d.tar');
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${multi}`,
      `docker-archive:${viaSkopeo}:${multi}`,
    ]);
    await run('podman', [...podman(root), 'load', '-q', '-i', viaSkopeo]);
    const fromPodman = join(w.dir, 'p-d.tar');
    await run('podman', [
      ...podman(root),
      'save',
      '-q',
      '--format',
      'docker-archive',
      '-o',
      fromPodman,
      multi,
    ]);
    const ours = join(w.dir, 'ours-d.tar');
    // Pulled with a HOME of its own: the pushes below remember no manifest the image came with, so they
    // compress (the same registry holds its layers; with that memory it would go back as it was).
    const puller = await workdir('docker-restore-pull', insecureConf(plain.host));
    expect(
      (await stowage(['pull', '-q', '-f', 'docker-archive', multi, '-o', ours], { env: puller.env })).code,
    ).toBe(0);

    const digests: string[] = [];
    for (const [archive, repo] of [
      [fromPodman, 'podman'],
      [ours, 'ours'],
      [fromPodman, 'again'],
    ] as const) {
      const r = await stowage(['push', '--json', archive, `${plain.host}/${repo}/multi:v1`], { env: w.env });
      expect(r.code, r.stderr).toBe(0);
      const img = JSON.parse(r.stdout).images[0];
      expect(img.newDigest).toBe(true);
      expect(img.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
      expect(await rawDigest(`${plain.host}/${repo}/multi:v1`, ['--tls-verify=false'])).toBe(img.digest);
      digests.push(img.digest);
    }
    expect(new Set(digests).size).toBe(1);
    // The first push remembered what it compressed; the later ones compressed while uploading, from
    // that memory, and came to the same bytes (a different byte would have failed the upload).
    const cache = JSON.parse(await readFile(join(w.env.HOME!, '.cache/stowage/digests.json'), 'utf8'));
    expect(Object.keys(cache.made)).toHaveLength(3);
    // skopeo reads it cleanly; the copy it makes verifies (every layer decompresses to its diff_id).
    const inspected = JSON.parse(
      (await run('skopeo', ['inspect', '--tls-verify=false', `docker://${plain.host}/podman/multi:v1`]))
        .stdout,
    );
    expect(inspected.Layers).toHaveLength(3);
    const layout = join(w.dir, 'back');
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${plain.host}/podman/multi:v1`,
      `oci:${layout}`,
    ]);
    const v = await stowage(['verify', `oci:${layout}`], { env: w.env });
    expect(v.code, v.stdout).toBe(0);
    const config = JSON.parse((await run('skopeo', ['inspect', '--config', `oci:${layout}`])).stdout);
    const original = JSON.parse(
      (await run('skopeo', ['inspect', '--tls-verify=false', '--config', `docker://${multi}`])).stdout,
    );
    expect(config.rootfs.diff_ids).toEqual(original.rootfs.diff_ids);
  });

  it('compresses a docker-archive as asked: gzip levels, zstd where Node has it, or none; refuses what cannot apply', async () => {
    const w = await workdir('compress-choices', insecureConf(plain.host));
    const saved = join(w.dir, 'saved.tar');
    // Pulled with another HOME, so that the pushes compress (see the test above).
    const puller = await workdir('compress-choices-pull', insecureConf(plain.host));
    expect(
      (await stowage(['pull', '-q', '-f', 'docker-archive', multi, '-o', saved], { env: puller.env })).code,
    ).toBe(0);
    const pushed = async (repo: string, flags: string[]) => {
      const r = await stowage(['push', '--json', ...flags, saved, `${plain.host}/${repo}/multi:v1`], {
        env: w.env,
      });
      expect(r.code, r.stderr).toBe(0);
      const raw = await skopeoJson(
        'inspect',
        '--raw',
        '--tls-verify=false',
        `docker://${plain.host}/${repo}/multi:v1`,
      );
      return { digest: JSON.parse(r.stdout).images[0].digest as string, raw };
    };
    // The default is gzip level 1; level 6 is asked for.
    const standard = await pushed('gz1', []);
    const smaller = await pushed('gz6', ['--compress-level', '6']);
    const plainLayers = await pushed('none', ['--compress', 'none']);
    expect(standard.raw.layers.map((l: { mediaType: string }) => l.mediaType)).toEqual(
      Array(3).fill('application/vnd.docker.image.rootfs.diff.tar.gzip'),
    );
    // Another level is other bytes, so another digest; the same level again is the same digest.
    expect(smaller.digest).not.toBe(standard.digest);
    expect((await pushed('gz1-again', ['--compress', 'gzip'])).digest).toBe(standard.digest);
    expect((await pushed('gz1-asked', ['--compress-level', '1'])).digest).toBe(standard.digest);
    // none: the layers go up as they are, their digests the config's diff_ids.
    const config = await skopeoJson(
      'inspect',
      '--config',
      '--tls-verify=false',
      `docker://${plain.host}/none/multi:v1`,
    );
    expect(plainLayers.raw.layers.map((l: { digest: string }) => l.digest)).toEqual(config.rootfs.diff_ids);
    // Every variant reads back as the same image: skopeo copies each into a layout that verifies.
    for (const repo of ['gz1', 'none']) {
      const layout = join(w.dir, `back-${repo}`);
      await run('skopeo', [
        'copy',
        '-q',
        '--src-tls-verify=false',
        `docker://${plain.host}/${repo}/multi:v1`,
        `oci:${layout}`,
      ]);
      const v = await stowage(['verify', `oci:${layout}`], { env: w.env });
      expect(v.code, v.stdout).toBe(0);
    }
    const zstd = await stowage(['push', '-q', '--compress', 'zstd', saved, `${plain.host}/zstd/multi:v1`], {
      env: w.env,
    });
    if ('createZstdCompress' in (await import('node:zlib'))) {
      expect(zstd.code, zstd.stderr).toBe(0);
      const raw = await skopeoJson(
        'inspect',
        '--raw',
        '--tls-verify=false',
        `docker://${plain.host}/zstd/multi:v1`,
      );
      // docker's schema 2 has no zstd layers: the image is an OCI one, as podman makes it.
      expect(raw.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
      expect(raw.layers.map((l) => l.mediaType)).toEqual(
        Array(3).fill('application/vnd.oci.image.layer.v1.tar+zstd'),
      );
    } else {
      expect(zstd.code).toBe(2);
      expect(zstd.stderr).toMatch(/zstd compression needs Node.js 22.15 or later/);
    }
    const badLevel = await stowage(['push', '--compress-level', '0', saved, `${plain.host}/bad/multi:v1`], {
      env: w.env,
    });
    expect(badLevel.code).toBe(2);
    expect(badLevel.stderr).toMatch(/compression level 0 is out of range for gzip: use 1-9/);
    // A docker-archive holds plain layers: compressing for it is refused before anything is written.
    const out = join(w.dir, 'again.tar');
    const refused = await stowage(
      ['copy', '--compress', 'gzip', `docker-archive:${saved}`, `docker-archive:${out}`],
      {
        env: w.env,
      },
    );
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/docker-archive holds its layers uncompressed/);
    // An oci-archive takes them compressed when asked (and plain, as they are, when not).
    const oci = join(w.dir, 'gz.tar');
    const made = await stowage(
      ['copy', '-q', '--compress', 'gzip', `docker-archive:${saved}`, `oci-archive:${oci}`],
      {
        env: w.env,
      },
    );
    expect(made.code, made.stderr).toBe(0);
    const inOci = await skopeoJson('inspect', '--raw', `oci-archive:${oci}`);
    // The manifest stays Docker schema 2 (a docker-archive's), its layers now gzipped.
    expect(inOci.layers.map((l: { mediaType: string }) => l.mediaType)).toEqual(
      Array(3).fill('application/vnd.docker.image.rootfs.diff.tar.gzip'),
    );
  });

  it('puts a docker-archive back as it was pulled, digest intact, where the registry has its layers', async () => {
    const basic = h.registries.basic;
    const w = await workdir('restore-original', insecureConf(plain.host, basic.host));
    // A repository of its own: the fixtures are shared by every test.
    const src = `${plain.host}/restore-src/multi`;
    await run('skopeo', [
      'copy',
      '-q',
      '--all',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${multi}`,
      `docker://${src}:v1`,
    ]);
    const saved = join(w.dir, 'saved.tar');
    // The pull remembers the manifest each config came with (the archive itself cannot keep it).
    expect(
      (await stowage(['pull', '-q', '-f', 'docker-archive', `${src}:v1`, '-o', saved], { env: w.env })).code,
    ).toBe(0);
    const original = await rawDigest(`${src}:v1`, ['--tls-verify=false']);
    const back = await stowage(['push', '--json', saved, `${src}:restored`], {
      env: w.env,
    });
    expect(back.code, back.stderr).toBe(0);
    const img = JSON.parse(back.stdout).images[0];
    expect(img.digest).toBe(original);
    expect(img.newDigest).toBe(false);
    expect(JSON.parse(back.stdout).stats.uploaded).toBe(0);
    expect(await rawDigest(`${src}:restored`, ['--tls-verify=false'])).toBe(original);
    // Another repository of the same registry: the layers are mounted from the one the archive names
    // (its RepoTags), and the manifest goes back as it was (issue 33).
    const sibling = await stowage(['push', '--json', saved, `${plain.host}/elsewhere/multi:v1`], {
      env: w.env,
    });
    expect(sibling.code, sibling.stderr).toBe(0);
    const pushed = JSON.parse(sibling.stdout);
    expect(pushed.images[0]).toMatchObject({ digest: original, newDigest: false });
    expect(pushed.stats).toMatchObject({ uploaded: 0, mounted: 4 });
    expect(await rawDigest(`${plain.host}/elsewhere/multi:v1`, ['--tls-verify=false'])).toBe(original);
    // A registry that answers a mount with an upload session instead: the blobs are copied from the
    // repository that holds them, and the digest is still kept.
    const noMount = await startFaultProxy({
      upstream: `http://${plain.host}`,
      fault: (req) =>
        req.method === 'POST' && req.url?.includes('mount=')
          ? { kind: 'rewrite-path', path: req.url.split('?')[0]! }
          : undefined,
    });
    proxies.push(noMount);
    await writeFile(w.conf, insecureConf(plain.host, basic.host, noMount.host));
    const viaProxy = saved.replace('.tar', '-proxied.tar');
    expect(
      (
        await stowage(
          ['pull', '-q', '-f', 'docker-archive', `${noMount.host}/restore-src/multi:v1`, '-o', viaProxy],
          { env: w.env },
        )
      ).code,
    ).toBe(0);
    const copied = await stowage(['push', '--json', viaProxy, `${noMount.host}/unmounted/multi:v1`], {
      env: w.env,
    });
    expect(copied.code, copied.stderr).toBe(0);
    expect(JSON.parse(copied.stdout).images[0]).toMatchObject({ digest: original, newDigest: false });
    expect(JSON.parse(copied.stdout).stats).toMatchObject({ mounted: 0 });
    expect(await rawDigest(`${plain.host}/unmounted/multi:v1`, ['--tls-verify=false'])).toBe(original);
    // Where the layers are not (another registry), the archive's own layers are compressed and sent:
    // a new digest.
    const elsewhere = await stowage(
      ['push', '--json', '--creds', creds, saved, `${basic.host}/elsewhere/multi:v1`],
      { env: w.env },
    );
    expect(elsewhere.code, elsewhere.stderr).toBe(0);
    expect(JSON.parse(elsewhere.stdout).images[0].newDigest).toBe(true);
    // The archive is still read and checked: a damaged layer fails even where the registry has it.
    const manifest = JSON.parse((await run('tar', ['-xOf', saved, 'manifest.json'])).stdout)[0];
    await damageEntry(saved, manifest.Layers[1]);
    const bad = await stowage(['push', '-q', saved, `${src}:damaged`], { env: w.env });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/sha256|digest/i);
    expect(await tagsOf(src, ['--tls-verify=false'])).not.toContain('damaged');
  });

  it('sends nothing the second time, and mounts blobs from another repository (token auth)', async () => {
    const token = h.registries.token;
    const proxy = await startFaultProxy({ upstream: token.url });
    proxies.push(proxy);
    const w = await workdir('twice', insecureConf(plain.host, proxy.host, token.host));
    const archive = join(w.dir, 'multi.tar');
    expect((await stowage(['pull', '-q', multi, '-o', archive], { env: w.env })).code).toBe(0);
    const first = await stowage(
      ['push', '--json', '--creds', creds, archive, `${proxy.host}/twice/multi:v1`],
      {
        env: w.env,
      },
    );
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout).stats).toMatchObject({ uploaded: 4, existing: 0 });
    const mark = proxy.seen.length;
    const second = await stowage(
      ['push', '--json', '--creds', creds, archive, `${proxy.host}/twice/multi:v1`],
      {
        env: w.env,
      },
    );
    expect(second.code, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout).stats).toMatchObject({ uploaded: 0, existing: 4, bytes: 0 });
    const again = proxy.seen.slice(mark);
    expect(again.filter((s) => /\/blobs\/uploads\//.test(s.path))).toEqual([]);
    expect(again.filter((s) => s.method === 'HEAD' && /\/blobs\//.test(s.path))).toHaveLength(4);

    // Registry to registry within one registry: every blob mounted, nothing uploaded.
    const mark2 = proxy.seen.length;
    const copy = await stowage(
      [
        'copy',
        '--json',
        '--src-creds',
        creds,
        '--dest-creds',
        creds,
        `docker://${proxy.host}/twice/multi:v1`,
        `docker://${proxy.host}/elsewhere/multi:v2`,
      ],
      { env: w.env },
    );
    expect(copy.code, copy.stderr).toBe(0);
    expect(JSON.parse(copy.stdout).stats).toMatchObject({ uploaded: 0, mounted: 4 });
    const mounts = proxy.seen.slice(mark2).filter((s) => s.method === 'POST');
    expect(mounts).toHaveLength(4);
    for (const m of mounts)
      expect(m.path).toMatch(
        /\/v2\/elsewhere\/multi\/blobs\/uploads\/\?mount=sha256%3A[0-9a-f]{64}&from=twice%2Fmulti/,
      );
    expect(await rawDigest(`${proxy.host}/elsewhere/multi:v2`, skopeoFlags('token'))).toBe(
      h.fixtures.images.multi!.digest,
    );

    // Registry to registry across registries streams each blob (plain -> token), digest intact.
    const across = await stowage(
      [
        'copy',
        '--json',
        '--all',
        '--dest-creds',
        creds,
        `docker://${multiarch}`,
        `docker://${token.host}/across/multiarch`,
      ],
      { env: w.env },
    );
    expect(across.code, across.stderr).toBe(0);
    expect(JSON.parse(across.stdout).stats.uploaded).toBeGreaterThan(0);
    expect(await rawDigest(`${token.host}/across/multiarch:v1`, skopeoFlags('token'))).toBe(
      h.fixtures.images.multiarch!.digest,
    );
  });

  it('mounts in a later run what an earlier one wrote to another repository, and uploads where a mount is refused (token auth)', async () => {
    const token = h.registries.token;
    let refuse = false;
    const proxy = await startFaultProxy({
      upstream: token.url,
      fault: (req) =>
        refuse && req.method === 'POST' && req.url?.includes('mount=')
          ? { kind: 'status', status: 403 }
          : undefined,
    });
    proxies.push(proxy);
    const w = await workdir('remembered', insecureConf(plain.host, proxy.host, token.host));
    const copyTo = (repo: string) =>
      stowage(
        ['copy', '--json', '--dest-creds', creds, `docker://${multi}`, `docker://${proxy.host}/${repo}:v1`],
        {
          env: w.env,
        },
      );
    const first = await copyTo('remembered-a/multi');
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(first.stdout).stats).toMatchObject({ uploaded: 4, mounted: 0 });
    // What the run learnt stays in the user's cache, readable by the user alone, and holds no secret:
    // a shard per first byte of the digest, one for each blob here.
    const dir = locationsDir(w.env);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    const shards = await readdir(dir);
    expect(shards.length).toBeGreaterThan(0);
    expect(shards.length).toBeLessThanOrEqual(4);
    for (const s of shards) expect((await stat(join(dir, s))).mode & 0o777).toBe(0o600);
    const kept = await learntLocations(w.env);
    expect(kept).toContain('remembered-a/multi');
    expect(kept).not.toContain(h.password);

    // The next run, from the other registry again: every blob mounted from where the first put it.
    const mark = proxy.seen.length;
    const second = await copyTo('remembered-b/multi');
    expect(second.code, second.stderr).toBe(0);
    expect(JSON.parse(second.stdout).stats).toMatchObject({ uploaded: 0, mounted: 4, bytes: 0 });
    const posts = proxy.seen.slice(mark).filter((s) => s.method === 'POST');
    expect(posts).toHaveLength(4);
    for (const p of posts) expect(p.path).toMatch(/\?mount=sha256%3A[0-9a-f]{64}&from=remembered-a%2Fmulti$/);
    expect(await rawDigest(`${token.host}/remembered-b/multi:v1`, skopeoFlags('token'))).toBe(
      h.fixtures.images.multi!.digest,
    );

    // A location is only a hint: a registry that refuses the mount gets the blob uploaded instead.
    refuse = true;
    const third = await copyTo('remembered-c/multi');
    expect(third.code, third.stderr).toBe(0);
    expect(JSON.parse(third.stdout).stats).toMatchObject({ uploaded: 4, mounted: 0 });
    expect(await rawDigest(`${token.host}/remembered-c/multi:v1`, skopeoFlags('token'))).toBe(
      h.fixtures.images.multi!.digest,
    );
  });

  it('checks in place, on worker threads, a large layer the registry already has: a damaged one fails', async () => {
    const w = await workdir('in-place', insecureConf(plain.host));
    const archive = join(w.dir, 'large.tar');
    const large = `${plain.host}/fixtures/large:v1`;
    expect((await stowage(['pull', '-q', large, '-o', archive], { env: w.env })).code).toBe(0);
    const manifest = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}`])).stdout);
    const layer = (manifest.layers as { digest: string; size: number }[])[0]!;
    expect(layer.size).toBeGreaterThan(4 << 20);
    // The registry has every blob (they came from there): nothing is sent, every one is read and checked.
    const again = await stowage(['push', '--json', archive, `${plain.host}/in-place/large:v1`], {
      env: w.env,
    });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).stats).toMatchObject({ uploaded: 0, bytes: 0 });
    await damageEntry(archive, `blobs/sha256/${layer.digest.slice(7)}`);
    const bad = await stowage(['push', '-q', archive, `${plain.host}/in-place/large:damaged`], {
      env: w.env,
    });
    expect(bad.code).toBe(7);
    expect(bad.stderr).toContain(`blob ${layer.digest}`);
    expect(bad.stderr).toContain('the archive is damaged');
    expect(await tagsOf(`${plain.host}/in-place/large`, ['--tls-verify=false'])).not.toContain('damaged');
  });

  it('uploads a large blob in chunks, and survives an upload cut short', async () => {
    // The first PATCH is cut after 200 000 bytes: PATCHes carry 1 MiB chunks of blobs over the chunk
    // size, so a request surely larger than the cut is dropped.
    let dropped = 0;
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) => {
        if (req.method !== 'PATCH' || !isBlobUpload(req) || dropped > 0) return undefined;
        dropped++;
        return { kind: 'drop-request', afterBytes: 200_000 };
      },
    });
    proxies.push(proxy);
    const w = await workdir('chunks', insecureConf(plain.host, proxy.host));
    const archive = join(w.dir, 'multi.tar');
    expect((await stowage(['pull', '-q', multi, '-o', archive], { env: w.env })).code).toBe(0);
    const manifest = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}`])).stdout);
    const chunked = (manifest.layers as { size: number }[]).filter((l) => l.size > 1024 * 1024);
    expect(chunked.length).toBeGreaterThan(0);
    const r = await stowage(
      ['push', '--json', '--chunk-size', '1MiB', archive, `${proxy.host}/chunked/multi:v1`],
      {
        env: w.env,
      },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(dropped).toBe(1);
    const patches = proxy.seen.filter((s) => s.method === 'PATCH');
    for (const p of patches) expect(String(p.headers['content-range'])).toMatch(/^\d+-\d+$/);
    // The cut upload's session was cancelled (DELETE), and its blob sent again from its first byte:
    // one more upload starting at 0 than there are chunked blobs.
    expect(proxy.seen.some((s) => s.method === 'DELETE' && s.path.includes('/blobs/uploads/'))).toBe(true);
    const starts = patches.filter((p) => String(p.headers['content-range']).startsWith('0-'));
    expect(starts.length).toBe(chunked.length + 1);
    expect(JSON.parse(r.stdout).stats.uploaded).toBe(manifest.layers.length + 1);
    expect(await rawDigest(`${plain.host}/chunked/multi:v1`, ['--tls-verify=false'])).toBe(
      h.fixtures.images.multi!.digest,
    );
    const back = join(w.dir, 'back.tar');
    expect(
      (await stowage(['pull', '-q', `${plain.host}/chunked/multi:v1`, '-o', back], { env: w.env })).code,
    ).toBe(0);
    expect((await stowage(['verify', back], { env: w.env })).code).toBe(0);
  });

  it('compresses a docker-archive layer again when its streamed upload is cut short, and lands the same digest', async () => {
    // The first streamed PATCH (no Content-Range: a layer compressed as it is sent) is cut mid-way.
    let dropped = 0;
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) => {
        if (req.method !== 'PATCH' || !isBlobUpload(req) || req.headers['content-range'] || dropped > 0)
          return undefined;
        dropped++;
        // After its first bytes: every layer's gzip is longer than that.
        return { kind: 'drop-request', afterBytes: 20 };
      },
    });
    proxies.push(proxy);
    const w = await workdir('stream-cut', insecureConf(plain.host, proxy.host));
    const saved = join(w.dir, 'saved.tar');
    expect(
      (await stowage(['pull', '-q', '-f', 'docker-archive', multi, '-o', saved], { env: w.env })).code,
    ).toBe(0);
    const cut = await stowage(['push', '--json', saved, `${proxy.host}/stream-cut/multi:v1`], { env: w.env });
    expect(cut.code, cut.stderr).toBe(0);
    expect(dropped).toBe(1);
    // The cut session was cancelled; the same layer was made again and sent whole.
    expect(proxy.seen.some((s) => s.method === 'DELETE' && s.path.includes('/blobs/uploads/'))).toBe(true);
    const streamed = proxy.seen.filter((s) => s.method === 'PATCH' && !s.headers['content-range']);
    // One streamed PATCH per layer, and one more for the layer sent again.
    const { layers } = await skopeoJson(
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${plain.host}/stream-cut/multi:v1`,
    );
    expect(streamed.length).toBe(layers.length + 1);
    // The same digest as a push that nothing interrupted (another HOME: no digest cache to lean on).
    const other = await workdir('stream-clean', insecureConf(plain.host));
    const clean = await stowage(['push', '--json', saved, `${plain.host}/stream-clean/multi:v1`], {
      env: other.env,
    });
    expect(clean.code, clean.stderr).toBe(0);
    expect(JSON.parse(cut.stdout).images[0].digest).toBe(JSON.parse(clean.stdout).images[0].digest);
    const layout = join(w.dir, 'back');
    await run('skopeo', [
      'copy',
      '-q',
      '--src-tls-verify=false',
      `docker://${plain.host}/stream-cut/multi:v1`,
      `oci:${layout}`,
    ]);
    expect((await stowage(['verify', `oci:${layout}`], { env: w.env })).code).toBe(0);
  });

  it('fails cleanly: a damaged archive, a wrong password, a registry that keeps failing, a blocked registry', async () => {
    const basic = h.registries.basic;
    const w = await workdir('push-bad', insecureConf(plain.host, basic.host));
    const archive = join(w.dir, 'multi.tar');
    expect((await stowage(['pull', '-q', multi, '-o', archive], { env: w.env })).code).toBe(0);
    const manifest = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}`])).stdout);

    // A damaged layer: digest mismatch, and the tag never appears. (The basic-auth registry does not
    // hold these blobs; into the plain one they would be mounted from fixtures/multi, bytes unread.)
    const damaged = join(w.dir, 'damaged.tar');
    await run('cp', [archive, damaged]);
    await damageEntry(damaged, `blobs/sha256/${manifest.layers[2].digest.slice(7)}`);
    const bad = await stowage(['push', '--creds', creds, damaged, `${basic.host}/damaged/multi:v1`], {
      env: w.env,
    });
    expect(bad.code, bad.stderr).toBe(7);
    expect(bad.stderr).toContain(manifest.layers[2].digest);
    expect(await tagsOf(`${basic.host}/damaged/multi`, skopeoFlags('basic'))).toEqual([]);

    // A wrong password: refused, and the password is nowhere in the output.
    const wrong = 'not-the-password-9f2c';
    const denied = await stowage(
      ['push', '--creds', `${h.user}:${wrong}`, archive, `${basic.host}/denied/multi:v1`],
      {
        env: w.env,
      },
    );
    expect(denied.code).toBe(4);
    expect(denied.stderr).toMatch(/rejected the credentials/);
    expect(denied.stderr + denied.stdout).not.toContain(wrong);

    // A registry that fails every manifest PUT: blobs go up, the tag does not, the error says so.
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) =>
        req.method === 'PUT' && /\/manifests\//.test(req.url ?? '')
          ? { kind: 'status', status: 503 }
          : undefined,
    });
    proxies.push(proxy);
    const w2 = await workdir('push-503', insecureConf(plain.host, proxy.host));
    const failing = await stowage(['push', '--retry-times', '1', archive, `${proxy.host}/failing/multi:v1`], {
      env: w2.env,
    });
    expect(failing.code).toBe(8);
    expect(failing.stderr).toMatch(/HTTP 503 .*gave up after 2 attempts/);
    expect(await tagsOf(`${plain.host}/failing/multi`, ['--tls-verify=false'])).toEqual([]);

    // registries.conf blocks the destination: nothing is sent.
    const blockedConf = `${insecureConf(plain.host)}\n[[registry]]\nlocation = "${plain.host}/locked"\nblocked = true\n`;
    const w3 = await workdir('push-blocked', blockedConf);
    const blocked = await stowage(['push', archive, `${plain.host}/locked/multi:v1`], { env: w3.env });
    expect(blocked.code).toBe(3);
    expect(await tagsOf(`${plain.host}/locked/multi`, ['--tls-verify=false'])).toEqual([]);
  });
});
