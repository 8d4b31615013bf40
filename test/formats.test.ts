/**
 * Every archive format, written and read, against the real tools: skopeo reads what we write and keeps
 * the digests, podman loads our docker-archive and oci-archive, umoci unpacks our OCI layout, and we
 * read what skopeo and podman write. Reproducibility is checked byte for byte in every format.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { dockerSave25, dockerSaveLegacy, imageFromLayout } from './harness/docker-save.js';
import { run } from './harness/processes.js';
import { writeTarFixture } from './harness/third-party-tar.js';
import { podmanFlags } from './harness/tools.js';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/**
 * A digest of a file or a directory tree (names and contents), to compare outputs byte for byte. File
 * modes are left out on purpose: they follow the user's umask, as with every other tool.
 */
async function treeDigest(path: string): Promise<string> {
  const st = await stat(path);
  if (!st.isDirectory()) return sha256(await readFile(path));
  const h = createHash('sha256');
  const walk = async (rel: string) => {
    const entries = (await readdir(join(path, rel), { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    );
    for (const e of entries) {
      const r = join(rel, e.name);
      h.update(`${r}\0`);
      if (e.isDirectory()) await walk(r);
      else h.update(await readFile(join(path, r)));
    }
  };
  await walk('');
  return h.digest('hex');
}

const podman = podmanFlags;

async function skopeoDigest(ref: string, ...flags: string[]): Promise<string> {
  const { stdout } = await run('skopeo', ['inspect', ...flags, '--raw', ref]);
  return `sha256:${sha256(stdout)}`;
}

describe('archive formats', () => {
  const h = harness();
  const reg = h.registries.plain;
  const small = `${reg.host}/fixtures/small:v1`;
  const multi = `${reg.host}/fixtures/multi:v1`;
  const multiarch = `${reg.host}/fixtures/multiarch:v1`;

  it('writes all four formats; skopeo reads each and the OCI formats and dir keep the manifest digest', async () => {
    const w = await workdir('formats', insecureConf(reg.host));
    const digest = h.fixtures.images.multi!.digest;
    const targets = {
      'oci-archive': join(w.dir, 'a.tar'),
      'docker-archive': join(w.dir, 'd.tar'),
      oci: join(w.dir, 'layout'),
      dir: join(w.dir, 'dir'),
    };
    for (const [format, out] of Object.entries(targets)) {
      const r = await stowage(['pull', '-f', format, multi, '-o', out], { env: w.env });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    expect(await skopeoDigest(`oci-archive:${targets['oci-archive']}`)).toBe(digest);
    expect(await skopeoDigest(`oci:${targets.oci}:v1`)).toBe(digest);
    expect(await skopeoDigest(`dir:${targets.dir}`)).toBe(digest);
    // docker-archive: uncompressed layers whose digests are the config's diff_ids.
    const inspected = JSON.parse(
      (await run('skopeo', ['inspect', `docker-archive:${targets['docker-archive']}`])).stdout,
    );
    const config = JSON.parse(
      (await run('skopeo', ['inspect', '--config', `docker-archive:${targets['docker-archive']}`])).stdout,
    );
    expect(inspected.Layers).toEqual(config.rootfs.diff_ids);
    expect(inspected.RepoTags).toEqual([]); // skopeo lists no tags for a bare docker-archive: reference
    const manifest = JSON.parse(
      (await run('tar', ['-xOf', targets['docker-archive'], 'manifest.json'])).stdout,
    );
    expect(manifest[0].RepoTags).toEqual([multi]);
    await run('sha256sum', ['-c', 'a.tar.sha256', 'd.tar.sha256'], { cwd: w.dir });
    // Everything skopeo copies from our formats to a registry keeps the digest (OCI formats and dir).
    for (const src of [
      `oci-archive:${targets['oci-archive']}`,
      `oci:${targets.oci}:v1`,
      `dir:${targets.dir}`,
    ]) {
      const dest = `docker://${reg.host}/formats/back:${sha256(src).slice(0, 8)}`;
      await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', src, dest]);
      expect(await skopeoDigest(dest, '--tls-verify=false')).toBe(digest);
    }
  });

  it('podman loads our docker-archive and oci-archive with the right name and image id', async () => {
    const w = await workdir('podman-load', insecureConf(reg.host));
    const configDigest = JSON.parse(
      (await run('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${small}`])).stdout,
    ).config.digest as string;
    for (const format of ['docker-archive', 'oci-archive']) {
      const out = join(w.dir, `${format}.tar`);
      expect((await stowage(['pull', '-q', '-f', format, small, '-o', out], { env: w.env })).code).toBe(0);
      const root = join(w.dir, `podman-${format}`);
      const loaded = await run('podman', [...podman(root), 'load', '-i', out]);
      expect(loaded.stdout).toContain(`Loaded image: ${small}`);
      const images = JSON.parse(
        (await run('podman', [...podman(root), 'images', '--format', 'json'])).stdout,
      );
      expect(images).toHaveLength(1);
      expect(`sha256:${images[0].Id}`).toBe(configDigest);
      expect(images[0].Names).toEqual([small]);
    }
  });

  it('umoci unpacks our OCI layout', async () => {
    const w = await workdir('umoci', insecureConf(reg.host));
    const layout = join(w.dir, 'layout');
    expect((await stowage(['pull', '-q', '-f', 'oci', multi, '-o', layout], { env: w.env })).code).toBe(0);
    const bundle = join(w.dir, 'bundle');
    await run('umoci', ['unpack', '--rootless', '--image', `${layout}:v1`, bundle]);
    expect((await stat(join(bundle, 'config.json'))).isFile()).toBe(true);
    expect((await readdir(join(bundle, 'rootfs'))).length).toBeGreaterThan(0);
  });

  it('is byte-reproducible in every format: concurrency 1 and 8, another umask and TZ, another time', async () => {
    const w = await workdir('repro', insecureConf(reg.host));
    for (const format of ['oci-archive', 'docker-archive', 'oci', 'dir']) {
      const a = join(w.dir, `${format}-a`);
      const b = join(w.dir, `${format}-b`);
      const images = format === 'dir' ? [multi] : [multi, small];
      const r1 = await stowage(['pull', '-q', '-f', format, '-j', '1', ...images, '-o', a], { env: w.env });
      expect(r1.code, r1.stderr).toBe(0);
      // Another umask and time zone, through a shell (run() throws on a non-zero exit).
      const args = ['pull', '-q', '-f', format, '-j', '8', ...images, '-o', b];
      await run(
        'sh',
        [
          '-c',
          `umask 077; exec "$0" "$@"`,
          process.execPath,
          join(import.meta.dirname, '../bin/stowage.js'),
          ...args,
        ],
        {
          env: { ...w.env, TZ: 'Asia/Kolkata' },
        },
      );
      expect(await treeDigest(b), format).toBe(await treeDigest(a));
    }
  });

  it('writes the same docker-archive from a registry, an oci-archive, a gzipped one and a layout', async () => {
    // From the registry, an oci-archive and a layout, every layer's size is read from its end and the
    // archive is laid out up front; a gzipped tarball has no cheap end to read, so it is written in order.
    const w = await workdir('docker-any-source', insecureConf(reg.host));
    const oci = join(w.dir, 'm.tar');
    const layout = join(w.dir, 'layout');
    expect((await stowage(['pull', '-q', multi, '-o', oci], { env: w.env })).code).toBe(0);
    expect((await stowage(['pull', '-q', '-f', 'oci', multi, '-o', layout], { env: w.env })).code).toBe(0);
    await writeFile(`${oci}.gz`, gzipSync(await readFile(oci)));
    const sources = {
      registry: multi,
      'oci-archive': `oci-archive:${oci}`,
      'gzipped oci-archive': `oci-archive:${oci}.gz`,
      layout: `oci:${layout}`,
    };
    const digests: Record<string, string> = {};
    for (const [name, source] of Object.entries(sources)) {
      const out = join(w.dir, `${name.replace(/ /g, '-')}.docker.tar`);
      const r = await stowage(['pull', '-q', '-f', 'docker-archive', source, '-o', out], { env: w.env });
      expect(r.code, `${name}: ${r.stderr}`).toBe(0);
      digests[name] = sha256(await readFile(out));
    }
    expect(new Set(Object.values(digests)).size, JSON.stringify(digests)).toBe(1);
  });

  it('puts several images in one archive (like podman save -m), and several tags of one image', async () => {
    const w = await workdir('multi-image', insecureConf(reg.host));
    const d = join(w.dir, 'm.tar');
    const r = await stowage(
      ['pull', '-q', '-f', 'docker-archive', small, multi, `${reg.host}/fixtures/small-v2s2:v1`, '-o', d],
      { env: w.env },
    );
    expect(r.code, r.stderr).toBe(0);
    const root = join(w.dir, 'podman');
    await run('podman', [...podman(root), 'load', '-i', d]);
    const names = JSON.parse((await run('podman', [...podman(root), 'images', '--format', 'json'])).stdout)
      .flatMap((i: { Names: string[] }) => i.Names)
      .sort();
    // small and small-v2s2 share their config, so they are one image with two names.
    expect([...new Set(names)]).toEqual([multi, `${reg.host}/fixtures/small-v2s2:v1`, small].sort());
    const o = join(w.dir, 'm-oci.tar');
    expect((await stowage(['pull', '-q', small, multi, '-o', o], { env: w.env })).code).toBe(0);
    const index = JSON.parse((await run('tar', ['-xOf', o, 'index.json'])).stdout);
    expect(index.manifests.map((m: { digest: string }) => m.digest)).toEqual([
      h.fixtures.images.small!.digest,
      h.fixtures.images.multi!.digest,
    ]);
  });

  it('--all keeps the index digest; several --platform make a new index and say so; docker-archive refuses --all', async () => {
    const w = await workdir('multiarch-formats', insecureConf(reg.host));
    const all = join(w.dir, 'all');
    expect(
      (await stowage(['pull', '-q', '--all', '-f', 'oci', multiarch, '-o', all], { env: w.env })).code,
    ).toBe(0);
    expect(await skopeoDigest(`oci:${all}:v1`)).toBe(h.fixtures.images.multiarch!.digest);
    const two = join(w.dir, 'two.tar');
    const r = await stowage(['pull', '--platform', 'linux/arm64,linux/amd64', multiarch, '-o', two], {
      env: w.env,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('new index');
    const idx = JSON.parse((await run('tar', ['-xOf', two, 'index.json'])).stdout);
    expect(idx.manifests[0].digest).not.toBe(h.fixtures.images.multiarch!.digest);
    const refused = await stowage(
      ['pull', '--all', '-f', 'docker-archive', multiarch, '-o', join(w.dir, 'x.tar')],
      { env: w.env },
    );
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--all');
    expect(await readdir(w.dir)).not.toContain('x.tar');
  });

  it('reads archives written by skopeo and podman (docker-archive, oci-archive, save -m), and a gzipped tarball', async () => {
    const w = await workdir('read-peers', insecureConf(reg.host));
    const layout = join(w.dir, 'src');
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${small}`,
      `oci:${layout}:v1`,
    ]);
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${multi}`,
      `oci:${layout}:multi`,
    ]);
    const smallDigest = h.fixtures.images.small!.digest;
    const root = join(w.dir, 'podman');
    await run('skopeo', [
      'copy',
      '--quiet',
      `oci:${layout}:v1`,
      `docker-archive:${join(w.dir, 's-d.tar')}:${small}`,
    ]);
    await run('skopeo', ['copy', '--quiet', `oci:${layout}:v1`, `oci-archive:${join(w.dir, 's-o.tar')}:v1`]);
    await run('podman', [...podman(root), 'load', '-i', join(w.dir, 's-d.tar')]);
    await run('skopeo', [
      'copy',
      '--quiet',
      `oci:${layout}:multi`,
      `docker-archive:${join(w.dir, 's-m.tar')}:${multi}`,
    ]);
    await run('podman', [...podman(root), 'load', '-i', join(w.dir, 's-m.tar')]);
    await run('podman', [
      ...podman(root),
      'save',
      '-q',
      '--format',
      'docker-archive',
      '-o',
      join(w.dir, 'p-d.tar'),
      small,
    ]);
    await run('podman', [
      ...podman(root),
      'save',
      '-q',
      '--format',
      'oci-archive',
      '-o',
      join(w.dir, 'p-o.tar'),
      small,
    ]);
    const ids = JSON.parse((await run('podman', [...podman(root), 'images', '--format', 'json'])).stdout).map(
      (i: { Id: string }) => i.Id,
    );
    await run('podman', [
      ...podman(root),
      'save',
      '-q',
      '-m',
      '--format',
      'docker-archive',
      '-o',
      join(w.dir, 'p-m.tar'),
      ...ids,
    ]);
    await writeFile(join(w.dir, 's-d.tar.gz'), gzipSync(await readFile(join(w.dir, 's-d.tar'))));

    // What skopeo wrote as docker-archive, we read and write again as docker-archive: same bytes as ours.
    const ours = join(w.dir, 'ours-d.tar');
    expect(
      (await stowage(['pull', '-q', '-f', 'docker-archive', small, '-o', ours], { env: w.env })).code,
    ).toBe(0);
    const configDigest = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${layout}:v1`])).stdout)
      .config.digest;
    for (const src of [
      `oci-archive:${join(w.dir, 's-o.tar')}`,
      `docker-archive:${join(w.dir, 's-d.tar')}`,
      `docker-archive:${join(w.dir, 's-d.tar.gz')}`,
      `docker-archive:${join(w.dir, 'p-d.tar')}`,
      `oci-archive:${join(w.dir, 'p-o.tar')}`,
      `docker-archive:${join(w.dir, 's-d.tar')}:${small}`,
      `docker-archive:${join(w.dir, 'p-m.tar')}:@0`,
      `docker-archive:${join(w.dir, 'p-m.tar')}:@1`,
    ]) {
      const out = join(w.dir, `copy-${sha256(src).slice(0, 8)}.tar`);
      const r = await stowage(['pull', '-q', src, '-o', out], { env: w.env });
      expect(r.code, `${src}: ${r.stderr}`).toBe(0);
      // The config (the image id) is what every format keeps; skopeo reads the source to say which.
      const plainSrc = src.replace('s-d.tar.gz', 's-d.tar');
      const theirs = JSON.parse((await run('skopeo', ['inspect', '--raw', plainSrc])).stdout);
      const raw = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${out}`])).stdout);
      expect(raw.config.digest, src).toBe(theirs.config.digest);
      // Match file names, not the whole path: the work directory's random suffix can spell "s-o".
      if (!src.includes('/p-')) expect(raw.config.digest, src).toBe(configDigest);
      if (src.startsWith('oci-archive:') && src.includes('/s-o.tar'))
        expect(await skopeoDigest(`oci-archive:${out}`)).toBe(smallDigest);
      if (src.startsWith('docker-archive:') && !src.includes('/p-m.tar') && !src.endsWith(small)) {
        const again = join(w.dir, `again-${sha256(src).slice(0, 8)}.tar`);
        expect(
          (await stowage(['pull', '-q', '-f', 'docker-archive', src, '-o', again], { env: w.env })).code,
        ).toBe(0);
        expect(sha256(await readFile(again)), src).toBe(sha256(await readFile(ours)));
      }
    }
    // Pushed back to a registry, skopeo's and podman's OCI archives keep their manifest digests.
    for (const f of ['s-o.tar', 'p-o.tar']) {
      const theirs = await skopeoDigest(`oci-archive:${join(w.dir, f)}`);
      const r = await stowage(
        ['push', '-q', join(w.dir, f), `${reg.host}/peers/${f.replace('.tar', '')}:v1`],
        {
          env: w.env,
        },
      );
      expect(r.code, `${f}: ${r.stderr}`).toBe(0);
      expect(
        await skopeoDigest(`docker://${reg.host}/peers/${f.replace('.tar', '')}:v1`, '--tls-verify=false'),
      ).toBe(theirs);
    }

    // Every peer archive passes `stowage verify` (digests, diff_ids, configs), the gzipped one too.
    for (const f of ['s-o.tar', 's-d.tar', 's-d.tar.gz', 'p-d.tar', 'p-o.tar', 'p-m.tar']) {
      const r = await stowage(['verify', join(w.dir, f)], { env: w.env });
      expect(r.code, `${f}: ${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toMatch(/: verified\n/);
    }
  });

  it('reads docker save archives from before and after v25 (built from the format documentation)', async () => {
    const w = await workdir('docker-save', insecureConf(reg.host));
    const layout = join(w.dir, 'src');
    for (const [ref, tag] of [
      [small, 'small'],
      [multi, 'multi'],
    ] as const) {
      await run('skopeo', [
        'copy',
        '--quiet',
        '--src-tls-verify=false',
        `docker://${ref}`,
        `oci:${layout}:${tag}`,
      ]);
    }
    const images = [
      await imageFromLayout(layout, 'small', small),
      await imageFromLayout(layout, 'multi', 'busybox:latest'),
    ];
    const legacy = join(w.dir, 'legacy.tar');
    await dockerSaveLegacy(legacy, images);
    const v25 = join(w.dir, 'v25.tar');
    const v25Digests = await dockerSave25(v25, images);
    const multiConfig = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${layout}:multi`])).stdout)
      .config.digest;

    // Our docker-archive of the registry image: the same bytes must come out of either docker layout.
    const ours = join(w.dir, 'ours.tar');
    expect(
      (await stowage(['pull', '-q', '-f', 'docker-archive', small, '-o', ours], { env: w.env })).code,
    ).toBe(0);
    for (const [archive, variant] of [
      [legacy, undefined],
      [v25, 'docker save 25+ (OCI layout inside)'],
    ] as const) {
      const info = JSON.parse((await stowage(['inspect', '--json', archive], { env: w.env })).stdout);
      expect(info.format).toBe('docker-archive');
      expect(info.variant).toBe(variant);
      expect(info.images.map((i: { names: string[] }) => i.names)).toEqual(
        variant
          ? [
              [small, 'v1'],
              ['docker.io/library/busybox:latest', 'latest'],
            ]
          : [[small], ['busybox:latest']],
      );
      const verified = await stowage(['verify', archive], { env: w.env });
      expect(verified.code, verified.stdout + verified.stderr).toBe(0);

      const again = join(w.dir, `again-${basename(archive)}`);
      const r = await stowage(
        ['pull', '-q', '-f', 'docker-archive', `docker-archive:${archive}:@0`, '-o', again],
        {
          env: w.env,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(sha256(await readFile(again)), archive).toBe(sha256(await readFile(ours)));

      // By its short docker name, into an OCI archive: the image id (config) survives; from v25 the
      // manifest digest too, since that layout holds the manifest itself.
      const out = join(w.dir, `oci-${basename(archive)}`);
      const p = await stowage(
        ['pull', '-q', '--json', `docker-archive:${archive}:busybox:latest`, '-o', out],
        {
          env: w.env,
        },
      );
      expect(p.code, p.stderr).toBe(0);
      const raw = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${out}`])).stdout);
      expect(raw.config.digest).toBe(multiConfig);
      if (variant) expect(JSON.parse(p.stdout).digest).toBe(v25Digests[1]);
    }
  });

  it('refuses hostile archives with clear errors and writes nothing', async () => {
    const w = await workdir('hostile', insecureConf(reg.host));
    // Written by tar-stream: the hostile entries do not depend on our own header writer.
    const tar = async (name: string, entries: { name: string; data?: string; link?: string }[]) => {
      const path = join(w.dir, name);
      await writeTarFixture(
        path,
        entries.map((e) =>
          e.link !== undefined
            ? { name: e.name, type: 'symlink' as const, linkname: e.link }
            : { name: e.name, data: e.data ?? '' },
        ),
      );
      return path;
    };
    const layoutFile = '{"imageLayoutVersion":"1.0.0"}';
    const cases: [string, string, RegExp][] = [
      [await tar('dotdot.tar', [{ name: '../escape', data: 'x' }]), 'oci-archive', /"\.\.\/escape".*hostile/],
      [
        await tar('dup.tar', [
          { name: 'oci-layout', data: layoutFile },
          { name: 'oci-layout', data: layoutFile },
        ]),
        'oci-archive',
        /appears twice/,
      ],
      [
        await tar('link.tar', [
          { name: 'manifest.json', data: JSON.stringify([{ Config: 'c.json', RepoTags: [], Layers: [] }]) },
          { name: 'c.json', link: '../../../etc/passwd' },
        ]),
        'docker-archive',
        /outside the archive/,
      ],
      [
        await tar('missing.tar', [
          { name: 'oci-layout', data: layoutFile },
          {
            name: 'index.json',
            data: JSON.stringify({
              schemaVersion: 2,
              manifests: [
                {
                  mediaType: 'application/vnd.oci.image.manifest.v1+json',
                  digest: `sha256:${'a'.repeat(64)}`,
                  size: 10,
                },
              ],
            }),
          },
        ]),
        'oci-archive',
        /manifest sha256:a{64} \(blobs\/sha256\/a{64}\) is missing/,
      ],
    ];
    await mkdir(join(w.dir, 'out'));
    for (const [path, format, message] of cases) {
      const out = join(w.dir, 'out', 'x.tar');
      const r = await stowage(['pull', `${format}:${path}`, '-o', out], { env: w.env });
      expect(r.code, path).toBe(6);
      expect(r.stderr, path).toMatch(message);
      expect(await readdir(join(w.dir, 'out'))).toEqual([]);
    }
  });
});

describe('the README reproducibility rules, checked by other tools', () => {
  const h = harness();
  const reg = h.registries.plain;

  /** `tar --numeric-owner --full-time -tvvf`: GNU tar's own reading of every header. */
  async function listing(path: string) {
    const { stdout } = await run('tar', ['--numeric-owner', '--full-time', '-tvvf', path]);
    return stdout
      .trim()
      .split('\n')
      .map((l) => {
        const [perms, owner, size, date, time, ...rest] = l.split(/\s+/);
        const name = rest.join(' ').replace(/ -> .*$/, '');
        return { perms: perms!, owner: owner!, size: Number(size), when: `${date} ${time}`, name };
      });
  }

  /** Python's tarfile, for what GNU tar's listing hides: PAX records, user and group names. */
  async function pythonView(path: string) {
    const script = `import json, sys, tarfile
t = tarfile.open(sys.argv[1])
print(json.dumps([[m.name, m.uname, m.gname, m.pax_headers] for m in t.getmembers()]))`;
    return JSON.parse((await run('python3', ['-c', script, path])).stdout) as [
      string,
      string,
      string,
      Record<string, string>,
    ][];
  }

  it('writes ustar headers as documented: modes, owner 0/0, mtime 0 or SOURCE_DATE_EPOCH, no PAX, the entry order', async () => {
    const w = await workdir('rules', insecureConf(reg.host));
    const oci = join(w.dir, 'all.tar');
    expect(
      (await stowage(['pull', '-q', '--all', `${reg.host}/fixtures/multiarch:v1`, '-o', oci], { env: w.env }))
        .code,
    ).toBe(0);
    const docker = join(w.dir, 'docker.tar');
    expect(
      (
        await stowage(['pull', '-q', '-f', 'docker-archive', `${reg.host}/fixtures/multi:v1`, '-o', docker], {
          env: w.env,
        })
      ).code,
    ).toBe(0);
    for (const path of [oci, docker]) {
      for (const e of await listing(path)) {
        const kind = e.perms[0];
        expect(e.perms, e.name).toBe(
          kind === 'd' ? 'drwxr-xr-x' : kind === 'l' ? 'lrwxrwxrwx' : '-rw-r--r--',
        );
        expect(e.owner, e.name).toBe('0/0');
        expect(e.when, e.name).toBe('1970-01-01 00:00:00');
      }
      for (const [name, uname, gname, pax] of await pythonView(path)) {
        expect([uname, gname], name).toEqual(['', '']);
        expect(pax, name).toEqual({});
      }
    }
    // oci-archive order: oci-layout, index.json, blobs/, blobs/sha256/, then blobs by ascending digest.
    const names = (await listing(oci)).map((e) => e.name);
    expect(names.slice(0, 4)).toEqual(['oci-layout', 'index.json', 'blobs/', 'blobs/sha256/']);
    const blobs = names.slice(4);
    expect(blobs.every((n) => /^blobs\/sha256\/[0-9a-f]{64}$/.test(n))).toBe(true);
    expect(blobs).toEqual([...blobs].sort());
    // Two zero blocks at the end.
    const bytes = await readFile(oci);
    expect(bytes.subarray(bytes.length - 1024).every((b) => b === 0)).toBe(true);

    // SOURCE_DATE_EPOCH sets every mtime.
    const dated = join(w.dir, 'dated.tar');
    const r = await stowage(['pull', '-q', `${reg.host}/fixtures/small:v1`, '-o', dated], {
      env: { ...w.env, SOURCE_DATE_EPOCH: '1700000000' },
    });
    expect(r.code, r.stderr).toBe(0);
    for (const e of await listing(dated)) expect(e.when, e.name).toBe('2023-11-14 22:13:20');
  });

  it('gzips a docker-archive push deterministically: the documented header, and gzip and gunzip agree', async () => {
    const w = await workdir('gzip-header', insecureConf(reg.host));
    const docker = join(w.dir, 'd.tar');
    expect(
      // Another HOME: the push then has no memory of the manifest, and gzips (see push.test.ts).
      (
        await stowage(['pull', '-q', '-f', 'docker-archive', `${reg.host}/fixtures/small:v1`, '-o', docker], {
          env: (await workdir('gzip-header-pull', insecureConf(reg.host))).env,
        })
      ).code,
    ).toBe(0);
    const dest = `${reg.host}/gzip-header/small:v1`;
    expect((await stowage(['push', '-q', docker, dest], { env: w.env })).code).toBe(0);
    const manifest = JSON.parse(
      (await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dest}`])).stdout,
    );
    const config = JSON.parse(
      (await run('skopeo', ['inspect', '--config', '--tls-verify=false', `docker://${dest}`])).stdout,
    );
    for (const [i, layer] of (manifest.layers as { digest: string }[]).entries()) {
      const file = join(w.dir, `layer-${i}.gz`);
      const res = await fetch(`${reg.url}/v2/gzip-header/small/blobs/${layer.digest}`);
      await writeFile(file, Buffer.from(await res.arrayBuffer()));
      const head = (await readFile(file)).subarray(0, 10);
      // ID1 ID2, deflate, no flags (no name), mtime 0, XFL 4 (level 1, the fastest), OS 255 (unknown).
      expect([...head]).toEqual([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff]);
      await run('gzip', ['-t', file]);
      const { stdout } = await run('bash', ['-c', `gunzip -c "${file}" | sha256sum`]);
      expect(`sha256:${stdout.split(' ')[0]}`).toBe(config.rootfs.diff_ids[i]);
    }
  });
});
