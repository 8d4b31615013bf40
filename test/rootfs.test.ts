/**
 * Export, import and flatten against the real tools: our exported root filesystem equals what umoci
 * unpacks from the same image; imported and flattened images load in podman with their config, push
 * to the real registries and come back with the same digest; hostile rootfs tarballs are handled
 * without anything reaching the host's filesystem.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { cp, lstat, readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { startFaultProxy } from './harness/fault-proxy.js';
import { buildImage, Layout } from './harness/fixtures.js';
import { run } from './harness/processes.js';
import { flipByte, podmanFlags } from './harness/tools.js';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

interface Item {
  type: string;
  mode: number;
  link?: string;
  sha256?: string;
}

/** A tarball's final state as a file list: hard links resolved to their target's content. */
async function tarState(path: string): Promise<{
  items: Map<string, Item>;
  order: string[];
  owners: Map<string, string>;
  pax: Map<string, Record<string, string>>;
}> {
  const items = new Map<string, Item>();
  const owners = new Map<string, string>();
  const pax = new Map<string, Record<string, string>>();
  const order: string[] = [];
  const extract = tar.extract();
  const reading = pipeline(createReadStream(path), extract);
  for await (const entry of extract) {
    const h = entry.header;
    const name = h.name.replace(/^\.\//, '').replace(/\/$/, '');
    order.push(name);
    owners.set(name, `${h.uid}:${h.gid}`);
    if (h.pax) pax.set(name, h.pax as Record<string, string>);
    const hash = createHash('sha256');
    for await (const c of entry) hash.update(c as Buffer);
    const mode = (h.mode ?? 0) & 0o7777;
    if (h.type === 'file') items.set(name, { type: 'file', mode, sha256: hash.digest('hex') });
    else if (h.type === 'link') {
      const target = items.get(h.linkname!.replace(/^\.\//, ''));
      items.set(name, { ...target!, mode });
    } else if (h.type === 'symlink') items.set(name, { type: 'symlink', mode: 0, link: h.linkname! });
    else if (h.type === 'directory') items.set(name, { type: 'directory', mode });
    else items.set(name, { type: h.type, mode });
  }
  await reading;
  return { items, order, owners, pax };
}

/** A directory tree's state, as tarState reports a tarball's. */
async function treeState(root: string): Promise<Map<string, Item>> {
  const items = new Map<string, Item>();
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = await lstat(p);
      const mode = st.mode & 0o7777;
      if (st.isSymbolicLink()) items.set(r, { type: 'symlink', mode: 0, link: await readlink(p) });
      else if (st.isDirectory()) {
        items.set(r, { type: 'directory', mode });
        await walk(r);
      } else if (st.isFile()) items.set(r, { type: 'file', mode, sha256: sha256(await readFile(p)) });
      else items.set(r, { type: 'other', mode });
    }
  };
  await walk('');
  return items;
}

describe('export', () => {
  const h = harness();
  const reg = h.registries.plain;
  const layout = h.fixtures.layoutDir;

  it('equals what umoci unpacks, whiteouts, opaque directories and links included', async () => {
    const w = await workdir('export-umoci', insecureConf(reg.host));
    for (const name of ['multi', 'small']) {
      const out = join(w.dir, `${name}.tar`);
      const r = await stowage(['export', `oci:${layout}:${name}`, '-o', out], { env: w.env });
      expect(r.code, r.stderr).toBe(0);
      const bundle = join(w.dir, `bundle-${name}`);
      await run('umoci', ['unpack', '--rootless', '--image', `${layout}:${name}`, bundle]);
      const ours = (await tarState(out)).items;
      const theirs = await treeState(join(bundle, 'rootfs'));
      expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
      for (const [k, v] of theirs) expect(ours.get(k), k).toEqual(v);
      if (name === 'multi') {
        // The fixture's whiteout, opaque directory and links, as a container sees them.
        expect(ours.has('a/gone')).toBe(false);
        expect(ours.has('opq/old')).toBe(false);
        expect(ours.get('opq/new')?.sha256).toBe(sha256('new\n'));
        expect(ours.get('a/hard')?.sha256).toBe(sha256('keep\n'));
        expect(ours.get('a/link')).toEqual({ type: 'symlink', mode: 0, link: 'keep' });
      }
    }
  });

  it('applies replacements, whiteouts and links the way umoci does, through symlinked parents too', async () => {
    const w = await workdir('export-edge', insecureConf(reg.host));
    const dir = join(w.dir, 'layout');
    const l = new Layout(dir);
    await l.init();
    const f = (name: string, text: string, mode?: number) =>
      ({ type: 'file', name, content: Buffer.from(text), ...(mode ? { mode } : {}) }) as const;
    const img = await buildImage(l, {
      architecture: 'amd64',
      layers: [
        [
          { type: 'directory', name: 'd1' },
          f('d1/f1', 'one'),
          { type: 'directory', name: 'd1/sub' },
          f('d1/sub/deep', 'deep'),
          f('x', 'x0'),
          { type: 'directory', name: 'y' },
          f('y/inner', 'in'),
          f('t', 'target-old'),
          { type: 'link', name: 'tl', target: 't' },
          f('m', 'setuid', 0o4755),
          { type: 'directory', name: 'private', mode: 0o700 },
          f('imp/a/b', 'implied parents'),
          f('imp/c', 'stays'),
        ],
        [
          f('.wh.d1', ''),
          { type: 'directory', name: 'd1' },
          f('d1/f2', 'two'),
          f('y', 'now a file'),
          { type: 'directory', name: 'x' },
          f('x/z', 'z'),
          f('t', 'target-new'),
          f('imp/.wh.a', ''),
        ],
        [{ type: 'symlink', name: 's', target: 'd1' }],
        [f('s/via', 'through the link'), { type: 'link', name: 'tl2', target: 'tl' }],
      ],
    });
    await writeFile(
      join(dir, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...img.manifest,
            annotations: { 'org.opencontainers.image.ref.name': 'edge' },
          },
        ],
      }),
    );
    const out = join(w.dir, 'edge.tar');
    const r = await stowage(['export', `oci:${dir}:edge`, '-o', out], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const bundle = join(w.dir, 'bundle');
    await run('umoci', ['unpack', '--rootless', '--image', `${dir}:edge`, bundle]);
    const { items: ours, order } = await tarState(out);
    const theirs = await treeState(join(bundle, 'rootfs'));
    expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
    for (const [k, v] of theirs) expect(ours.get(k), k).toEqual(v);
    expect(ours.has('d1/f1')).toBe(false);
    expect(ours.get('d1/via')?.sha256).toBe(sha256('through the link'));
    expect(ours.get('tl')?.sha256).toBe(sha256('target-old'));
    expect(ours.get('tl2')?.sha256).toBe(sha256('target-old'));
    expect(ours.get('t')?.sha256).toBe(sha256('target-new'));
    expect(ours.get('m')?.mode).toBe(0o4755);
    expect(ours.has('imp/a')).toBe(false);
    // Every parent comes before what is beneath it; each path once.
    expect(new Set(order).size).toBe(order.length);
    for (const [i, p] of order.entries()) {
      const parent = p.split('/').slice(0, -1).join('/');
      if (parent) expect(order.indexOf(parent), p).toBeLessThan(i);
    }
  });
});

/** A tarball made with tar-stream (a third-party writer), entries as given: hostile ones included. */
async function makeTar(
  path: string,
  entries: {
    name: string;
    type?: tar.Header['type'];
    content?: string;
    linkname?: string;
    mode?: number;
    devmajor?: number;
    devminor?: number;
    uid?: number;
    gid?: number;
    pax?: Record<string, string>;
  }[],
): Promise<void> {
  const pack = tar.pack();
  const { createWriteStream } = await import('node:fs');
  const writing = pipeline(pack, createWriteStream(path));
  for (const e of entries) {
    const { content, ...header } = e;
    pack.entry(
      { type: 'file', mode: 0o644, mtime: new Date(1_700_000_000_000), uid: 0, gid: 0, ...header },
      content ?? '',
    );
  }
  pack.finalize();
  await writing;
}

async function skopeoDigest(ref: string): Promise<string> {
  const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', '--raw', ref]);
  return `sha256:${sha256(stdout)}`;
}

describe('export from any transport', () => {
  const h = harness();
  const reg = h.registries.plain;

  it('gives the same bytes from a registry, an oci-archive, a docker-archive and a layout; --platform picks from an index', async () => {
    const w = await workdir('export-any', insecureConf(reg.host));
    const multi = `${reg.host}/fixtures/multi:v1`;
    const docker = join(w.dir, 'multi-docker.tar');
    expect(
      (await stowage(['pull', '-q', '-f', 'docker-archive', multi, '-o', docker], { env: w.env })).code,
    ).toBe(0);
    const sums: string[] = [];
    for (const [i, ref] of [
      multi,
      `docker-archive:${docker}`,
      `oci:${h.fixtures.layoutDir}:multi`,
    ].entries()) {
      const out = join(w.dir, `rootfs-${i}.tar`);
      const r = await stowage(['export', ref, '-o', out], { env: w.env });
      expect(r.code, r.stderr).toBe(0);
      const sum = sha256(await readFile(out));
      expect(await readFile(`${out}.sha256`, 'utf8')).toBe(`${sum}  rootfs-${i}.tar\n`);
      sums.push(sum);
    }
    expect(new Set(sums).size).toBe(1);
    // Standard output gives the same bytes.
    const piped = await run(
      'sh',
      ['-c', `node "${join(import.meta.dirname, '../bin/stowage.js')}" export -q ${multi} -o - | sha256sum`],
      { env: w.env },
    );
    expect(piped.stdout.split(' ')[0]).toBe(sums[0]);
    // A reader that stops early: a clear error, and the spool (in TMPDIR for stdout) is gone.
    const cut = await run(
      'bash',
      [
        '-c',
        `node "${join(import.meta.dirname, '../bin/stowage.js')}" export ${multi} -o - 2>"${join(w.dir, 'err')}" | head -c 1000 >/dev/null; echo \${PIPESTATUS[0]}`,
      ],
      { env: { ...w.env, TMPDIR: w.dir } },
    );
    expect(cut.stdout.trim()).toBe('9');
    expect(await readFile(join(w.dir, 'err'), 'utf8')).toContain(
      'standard output closed before the root filesystem was written',
    );
    expect((await readdir(w.dir)).filter((n) => n.startsWith('.stowage'))).toEqual([]);
    // Multi-arch: the chosen platform's files.
    const arm = join(w.dir, 'arm.tar');
    const r = await stowage(
      ['export', '--platform', 'linux/arm64', `${reg.host}/fixtures/multiarch:v1`, '-o', arm],
      { env: w.env },
    );
    expect(r.code, r.stderr).toBe(0);
    expect((await tarState(arm)).items.get('etc/arch')?.sha256).toBe(sha256('arm64\n'));
  });

  it('streams the large fixture with flat memory, spooling registry layers once', async () => {
    const w = await workdir('export-large', insecureConf(reg.host));
    // The same runtime's peak for a small image is the baseline (it differs between Node versions).
    const small = await stowage(
      ['export', '-q', `${reg.host}/fixtures/small:v1`, '-o', join(w.dir, 'small.tar')],
      {
        env: w.env,
        measureRss: true,
      },
    );
    expect(small.code).toBe(0);
    const out = join(w.dir, 'large.tar');
    const r = await stowage(['export', '--json', `${reg.host}/fixtures/large:v1`, '-o', out], {
      env: w.env,
      measureRss: true,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).contentBytes).toBeGreaterThanOrEqual(h.fixtures.largeLayerBytes);
    expect((await stat(out)).size).toBeGreaterThan(h.fixtures.largeLayerBytes);
    // Holding half the layer in memory would already break this bound.
    expect(r.maxRss!).toBeLessThan(small.maxRss! + h.fixtures.largeLayerBytes / 2);
    // The spool directory is gone; the checksum file checks.
    expect((await readdir(w.dir)).filter((n) => n.startsWith('.stowage'))).toEqual([]);
    expect((await run('sha256sum', ['-c', 'large.tar.sha256'], { cwd: w.dir })).stdout).toContain('OK');
  });

  it('fetches each layer from the registry once, for both passes', async () => {
    const proxy = await startFaultProxy({ upstream: reg.url });
    try {
      const w = await workdir('export-once', insecureConf(proxy.host));
      const r = await stowage(
        ['export', '-q', `${proxy.host}/fixtures/multi:v1`, '-o', join(w.dir, 'x.tar')],
        {
          env: w.env,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      const blobGets = proxy.seen
        .filter((s) => s.method === 'GET' && s.path.includes('/blobs/'))
        .map((s) => s.path);
      // Three layers and the config, each once.
      expect(blobGets).toHaveLength(4);
      expect(new Set(blobGets).size).toBe(4);
    } finally {
      await proxy.close();
    }
  });

  it('refuses a layer whose bytes do not match its digest, leaving nothing at the path', async () => {
    const w = await workdir('export-corrupt', insecureConf(reg.host));
    const copy = join(w.dir, 'layout');
    await cp(h.fixtures.layoutDir, copy, { recursive: true });
    const manifest = JSON.parse(
      await readFile(join(copy, 'blobs', 'sha256', h.fixtures.images.small!.digest.slice(7)), 'utf8'),
    );
    const layer = join(copy, 'blobs', 'sha256', manifest.layers[0].digest.slice(7));
    await flipByte(layer, Math.floor((await stat(layer)).size / 2));
    const out = join(w.dir, 'small.tar');
    const r = await stowage(['export', `oci:${copy}:small`, '-o', out], { env: w.env });
    // The digest mismatch, by its exit code and message, not any failure.
    expect(r.code).toBe(7);
    expect(r.stderr).toContain(
      `layer 1 (${manifest.layers[0].digest}) of oci:${copy}:small: content digest sha256:`,
    );
    expect(r.stderr).toContain(`does not match the expected ${manifest.layers[0].digest}`);
    expect((await readdir(w.dir)).filter((n) => n.startsWith('small') || n.startsWith('.small'))).toEqual([]);
  });
});

describe('import', () => {
  const h = harness();
  const reg = h.registries.plain;

  it('makes a one-layer image podman loads with the changes; the same input gives the same digest; push and pull keep it', async () => {
    const w = await workdir('import', insecureConf(reg.host));
    const rootfs = join(w.dir, 'rootfs.tar');
    await makeTar(rootfs, [
      { name: 'bin', type: 'directory', mode: 0o755 },
      { name: 'bin/tool', content: '#!/bin/sh\necho hi\n', mode: 0o755 },
      { name: 'etc', type: 'directory', mode: 0o755 },
      { name: 'etc/motd', content: 'welcome\n' },
    ]);
    const changes = [
      '--change',
      'CMD ["/bin/tool", "--serve"]',
      '--change',
      'ENV APP_MODE=production GREETING="hello world"',
      '-c',
      'EXPOSE 8080 53/udp',
      '-c',
      'LABEL org.example.team=platform',
      '-c',
      'USER 1000:1000',
      '-c',
      'WORKDIR /srv',
      '-c',
      'VOLUME ["/data"]',
      '-c',
      'STOPSIGNAL SIGINT',
      '-m',
      'imported for the test',
    ];
    const a = join(w.dir, 'a.tar');
    const b = join(w.dir, 'b.tar');
    const ra = await stowage(['import', '--json', rootfs, 'team/tool:1.0', '-o', a, ...changes], {
      env: w.env,
    });
    expect(ra.code, ra.stderr).toBe(0);
    const rb = await stowage(['import', '--json', rootfs, 'team/tool:1.0', '-o', b, ...changes], {
      env: { ...w.env, TZ: 'Asia/Tokyo' },
    });
    expect(rb.code, rb.stderr).toBe(0);
    const ja = JSON.parse(ra.stdout);
    expect(JSON.parse(rb.stdout).digest).toBe(ja.digest);
    expect(await readFile(a)).toEqual(await readFile(b));
    // Another creation time is another image.
    const rc = await stowage(
      ['import', '--json', rootfs, 'team/tool:1.0', '-o', join(w.dir, 'c.tar'), ...changes],
      {
        env: { ...w.env, SOURCE_DATE_EPOCH: '1700000000' },
      },
    );
    expect(JSON.parse(rc.stdout).digest).not.toBe(ja.digest);

    const root = join(w.dir, 'podman');
    const loaded = await run('podman', [...podmanFlags(root), 'load', '-i', a]);
    expect(loaded.stdout).toContain('docker.io/team/tool:1.0');
    const [info] = JSON.parse(
      (await run('podman', [...podmanFlags(root), 'image', 'inspect', 'docker.io/team/tool:1.0'])).stdout,
    );
    expect(info.Config.Cmd).toEqual(['/bin/tool', '--serve']);
    expect(info.Config.Env).toEqual(['APP_MODE=production', 'GREETING=hello world']);
    expect(Object.keys(info.Config.ExposedPorts).sort()).toEqual(['53/udp', '8080/tcp']);
    expect(info.Config.Labels).toEqual({ 'org.example.team': 'platform' });
    expect(info.Config.User).toBe('1000:1000');
    expect(info.Config.WorkingDir).toBe('/srv');
    expect(Object.keys(info.Config.Volumes)).toEqual(['/data']);
    expect(info.Config.StopSignal).toBe('SIGINT');
    expect(info.RootFS.Layers).toEqual([ja.layer.diffId]);
    const history = JSON.parse(
      (await run('podman', [...podmanFlags(root), 'history', '--format', 'json', 'docker.io/team/tool:1.0']))
        .stdout,
    );
    expect(history[0].comment).toBe('imported for the test');
    // Pushed straight to a registry: the same digest as in the archive; pulled back: the same again.
    const target = `${reg.host}/imported/tool:1.0`;
    const rp = await stowage(['import', '-q', rootfs, target, ...changes], { env: w.env });
    expect(rp.code, rp.stderr).toBe(0);
    expect(await skopeoDigest(`docker://${target}`)).toBe(ja.digest);
    const back = join(w.dir, 'back.tar');
    expect((await stowage(['pull', '-q', target, '-o', back], { env: w.env })).code).toBe(0);
    expect(await skopeoDigest(`oci-archive:${back}`)).toBe(ja.digest);
    // A docker-archive and a Docker schema 2 manifest on request.
    const d = join(w.dir, 'd.tar');
    const rd = await stowage(
      [
        'import',
        '--json',
        '--manifest-format',
        'docker',
        rootfs,
        'team/tool:1.0',
        '-f',
        'docker-archive',
        '-o',
        d,
      ],
      { env: w.env },
    );
    expect(rd.code, rd.stderr).toBe(0);
    expect(JSON.parse(rd.stdout).mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    const loadedD = await run('podman', [...podmanFlags(join(w.dir, 'podman-d')), 'load', '-i', d]);
    expect(loadedD.stdout).toContain('docker.io/team/tool:1.0');
  });

  it('keeps owners, modes, times and extended attributes from the tarball through import and export', async () => {
    const w = await workdir('import-owners', insecureConf(reg.host));
    const rootfs = join(w.dir, 'rootfs.tar');
    await makeTar(rootfs, [
      { name: 'home', type: 'directory', mode: 0o755 },
      { name: 'home/app', type: 'directory', mode: 0o750, uid: 1000, gid: 1000 },
      { name: 'home/app/run', content: 'x', mode: 0o4750, uid: 1000, gid: 50 },
      // tar-stream's PAX records: an extended attribute, as a file capability would be kept.
      { name: 'ping', content: 'p', mode: 0o755, pax: { 'SCHILY.xattr.user.note': 'kept' } },
    ]);
    const image = join(w.dir, 'image');
    const r = await stowage(['import', '-q', rootfs, 'owners:1', '-f', 'oci', '-o', image], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const out = join(w.dir, 'rootfs-again.tar');
    const e = await stowage(['export', `oci:${image}:docker.io/library/owners:1`, '-o', out], { env: w.env });
    expect(e.code, e.stderr).toBe(0);
    const { items, owners, pax } = await tarState(out);
    expect(owners.get('home/app')).toBe('1000:1000');
    expect(owners.get('home/app/run')).toBe('1000:50');
    expect(items.get('home/app')?.mode).toBe(0o750);
    expect(items.get('home/app/run')?.mode).toBe(0o4750);
    expect(pax.get('ping')?.['SCHILY.xattr.user.note']).toBe('kept');
    // Times from the tarball, read by GNU tar.
    const listing = await run('tar', ['-tvf', out, 'ping'], { env: { TZ: 'UTC', PATH: process.env.PATH } });
    expect(listing.stdout).toContain('2023-11-14 22:13');
  });

  it('handles a hostile rootfs without touching the host: ".." refused, absolute symlinks and devices kept as entries', async () => {
    const w = await workdir('import-hostile', insecureConf(reg.host));
    const before = (await readdir(w.dir)).sort();
    for (const [name, entries] of [
      ['dotdot', [{ name: '../../escaped', content: 'x' }]],
      [
        'hardlink',
        [
          { name: 'ok', content: 'x' },
          { name: 'link', type: 'link', linkname: '../../etc/passwd' },
        ],
      ],
    ] as const) {
      const input = join(w.dir, `${name}.tar`);
      await makeTar(input, [...entries]);
      const out = join(w.dir, `${name}-image.tar`);
      const r = await stowage(['import', input, 'hostile:1', '-o', out], { env: w.env });
      expect(r.code, name).toBe(6);
      expect(r.stderr).toContain('climbs out of the root filesystem');
      expect(r.stderr).toContain(`${name}.tar`);
      await expect(stat(out)).rejects.toThrow();
    }
    // An empty input is not a root filesystem; a short NAME does not silently mean Docker Hub.
    await writeFile(join(w.dir, 'empty.tar'), '');
    const empty = await stowage(['import', join(w.dir, 'empty.tar'), 'x:1', '-o', join(w.dir, 'e.tar')], {
      env: w.env,
    });
    expect(empty.code).toBe(6);
    expect(empty.stderr).toContain('empty.tar: not a valid tar stream (it is empty)');
    const short = await stowage(['import', join(w.dir, 'empty.tar'), 'team/tool:1'], { env: w.env });
    expect(short.code).toBe(2);
    expect(short.stderr).toContain('"team/tool:1" names no registry');
    expect((await readdir(w.dir)).sort()).toEqual(
      [...before, 'dotdot.tar', 'empty.tar', 'hardlink.tar'].sort(),
    );
    await expect(stat(join(w.dir, '..', 'escaped'))).rejects.toThrow();

    // Absolute names and links, devices, FIFOs: valid in a root filesystem, kept as entries only.
    const input = join(w.dir, 'devices.tar');
    await makeTar(input, [
      { name: '/abs/file', content: 'absolute name' },
      { name: 'etc', type: 'directory' },
      { name: 'etc/passwd-link', type: 'symlink', linkname: '/etc/passwd' },
      { name: 'dev', type: 'directory' },
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660 },
      { name: 'run/fifo', type: 'fifo', mode: 0o600 },
      { name: 'a/b/../c', content: 'inside' },
    ]);
    const out = join(w.dir, 'devices-image.tar');
    const r = await stowage(['import', '--json', input, 'devices:1', '-o', out, '-f', 'oci'], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    // Read the layer back with a third-party reader.
    const layerDigest = JSON.parse(r.stdout).layer.digest as string;
    const layer = join(out, 'blobs', 'sha256', layerDigest.slice(7));
    const extract = tar.extract();
    const reading = pipeline(createReadStream(layer), (await import('node:zlib')).createGunzip(), extract);
    const seen: Record<string, string> = {};
    for await (const e of extract) {
      const hd = e.header;
      seen[hd.name] =
        `${hd.type}${hd.linkname ? `->${hd.linkname}` : ''}${hd.type.endsWith('device') ? ` ${hd.devmajor},${hd.devminor}` : ''}`;
      e.resume();
    }
    await reading;
    expect(seen).toEqual({
      'abs/file': 'file',
      'etc/': 'directory',
      'etc/passwd-link': 'symlink->/etc/passwd',
      'dev/': 'directory',
      'dev/null': 'character-device 1,3',
      'dev/sda': 'block-device 8,0',
      'run/fifo': 'fifo',
      'a/c': 'file',
    });
  });
});

describe('flatten', () => {
  const h = harness();
  const reg = h.registries.plain;

  it("squashes a registry image to one layer with the source's config and root filesystem, reproducibly", async () => {
    const w = await workdir('flatten', insecureConf(reg.host));
    const src = `${reg.host}/fixtures/multi:v1`;
    const dest = `${reg.host}/flat/multi:v1`;
    const r = await stowage(['flatten', '--json', src, dest], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.sourceLayers).toBe(3);
    expect(await skopeoDigest(`docker://${dest}`)).toBe(result.digest);
    // Flattened again, to an archive: the same image.
    const archive = join(w.dir, 'flat.tar');
    const r2 = await stowage(['flatten', '--json', src, `oci-archive:${archive}`], { env: w.env });
    expect(r2.code, r2.stderr).toBe(0);
    expect(JSON.parse(r2.stdout).digest).toBe(result.digest);
    // One layer; the config of the source.
    const inspected = JSON.parse(
      (await run('skopeo', ['inspect', '--tls-verify=false', `docker://${dest}`])).stdout,
    );
    expect(inspected.Layers).toHaveLength(1);
    const cfg = JSON.parse(
      (await run('skopeo', ['inspect', '--tls-verify=false', '--config', `docker://${dest}`])).stdout,
    );
    const srcCfg = JSON.parse(
      (await run('skopeo', ['inspect', '--tls-verify=false', '--config', `docker://${src}`])).stdout,
    );
    expect(cfg.config).toEqual(srcCfg.config);
    expect(cfg.created).toBe(srcCfg.created);
    expect(cfg.history).toHaveLength(1);
    // The same root filesystem as the source.
    const a = join(w.dir, 'src.tar');
    const b = join(w.dir, 'flat-rootfs.tar');
    expect((await stowage(['export', src, '-o', a], { env: w.env })).code).toBe(0);
    expect((await stowage(['export', dest, '-o', b], { env: w.env })).code).toBe(0);
    expect((await tarState(b)).items).toEqual((await tarState(a)).items);
    // podman loads it with the source's command.
    const root = join(w.dir, 'podman');
    await run('podman', [...podmanFlags(root), 'load', '-i', archive]);
    const [info] = JSON.parse(
      (await run('podman', [...podmanFlags(root), 'image', 'inspect', `${reg.host}/fixtures/multi:v1`]))
        .stdout,
    );
    expect(info.Config.Cmd).toEqual(srcCfg.config.Cmd);
    expect(info.RootFS.Layers).toHaveLength(1);
  });
});
