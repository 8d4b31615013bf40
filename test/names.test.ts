/**
 * Archives other tools write and the names they expect: docker save 25+ by image id (no names
 * anywhere), a docker save 25+ tarball read as the OCI layout it also is, names recorded as skopeo
 * records them, one reference grammar for every command, platforms for single-platform images.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { dockerSave25, imageFromLayout } from './harness/docker-save.js';
import { run } from './harness/processes.js';

const h = harness();
const reg = h.registries.plain;
const small = `${reg.host}/fixtures/small:v1`;
const multi = `${reg.host}/fixtures/multi:v1`;

async function savedImages(dir: string) {
  const layout = join(dir, 'src');
  await run('skopeo', [
    'copy',
    '--quiet',
    '--src-tls-verify=false',
    `docker://${multi}`,
    `oci:${layout}:multi`,
  ]);
  const config = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci:${layout}:multi`])).stdout).config
    .digest as string;
  return { images: [await imageFromLayout(layout, 'multi', 'busybox:latest')], config };
}

describe('archives other tools write', () => {
  it('reads docker save 25+ of an image by id: index.json "manifests": null, "RepoTags": null', async () => {
    const w = await workdir('docker-save-id', insecureConf(reg.host));
    const { images, config } = await savedImages(w.dir);
    const byId = join(w.dir, 'by-id.tar');
    await dockerSave25(byId, images, { byId: true });

    const info = JSON.parse((await stowage(['inspect', byId], { env: w.env })).stdout);
    expect(info.format).toBe('docker-archive');
    expect(info.images).toHaveLength(1);
    expect(info.images[0].names).toEqual([]);
    expect((await stowage(['verify', byId], { env: w.env })).code).toBe(0);

    // Its image id survives into an OCI archive, and skopeo agrees on what it holds.
    const out = join(w.dir, 'out.tar');
    const r = await stowage(['pull', '-q', byId, '-o', out], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const ours = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${out}`])).stdout);
    expect(ours.config.digest).toBe(config);
    const theirs = JSON.parse(
      (await run('skopeo', ['inspect', '--config', `docker-archive:${byId}`])).stdout,
    );
    expect(theirs.rootfs.diff_ids).toEqual(
      JSON.parse((await run('skopeo', ['inspect', '--config', `oci-archive:${out}`])).stdout).rootfs.diff_ids,
    );

    // As an OCI layout it lists nothing, and says how to read it instead.
    const asOci = await stowage(['inspect', `oci-archive:${byId}`], { env: w.env });
    expect(asOci.code).toBe(6);
    expect(asOci.stderr).toContain(`docker-archive:${byId}`);
  });

  it('reads a docker save 25+ tarball as oci-archive:, as skopeo does, manifest digest intact', async () => {
    const w = await workdir('docker-save-oci', insecureConf(reg.host));
    const { images } = await savedImages(w.dir);
    const v25 = join(w.dir, 'v25.tar');
    const [digest] = await dockerSave25(v25, images);
    const info = JSON.parse((await stowage(['inspect', `oci-archive:${v25}`], { env: w.env })).stdout);
    expect(info.format).toBe('oci-archive');
    expect(info.images[0].digest).toBe(digest);
    const out = join(w.dir, 'out.tar');
    const r = await stowage(['pull', '-q', `oci-archive:${v25}:latest`, '-o', out], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const raw = (await run('skopeo', ['inspect', '--raw', `oci-archive:${v25}:latest`])).stdout;
    expect(JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${out}`])).stdout)).toEqual(
      JSON.parse(raw),
    );
  });
});

describe('names and references', () => {
  it('records NAME as skopeo does in oci-archive:FILE:NAME, and reads both conventions', async () => {
    const w = await workdir('ref-name', insecureConf(reg.host));
    const out = join(w.dir, 'c.tar');
    const r = await stowage(['copy', '-q', small, `oci-archive:${out}:team/app:2`], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const theirs = JSON.parse((await run('skopeo', ['inspect', `oci-archive:${out}:team/app:2`])).stdout);
    expect(theirs.Digest).toBe(h.fixtures.images.small!.digest);
    const index = JSON.parse((await run('tar', ['-xOf', out, 'index.json'])).stdout);
    expect(index.manifests[0].annotations['org.opencontainers.image.ref.name']).toBe('team/app:2');
    // Ours by that name; an archive of the older convention (ref.name the tag alone) by its full name.
    expect((await stowage(['inspect', `oci-archive:${out}:team/app:2`], { env: w.env })).code).toBe(0);
    const old = join(w.dir, 'old.tar');
    expect((await stowage(['pull', '-q', small, '-o', old], { env: w.env })).code).toBe(0);
    const byFull = await stowage(['inspect', `oci-archive:${old}:${small}`], { env: w.env });
    expect(byFull.code, byFull.stderr).toBe(0);
    expect(JSON.parse(byFull.stdout).images[0].digest).toBe(h.fixtures.images.small!.digest);
  });

  it('reads one reference grammar in every command: docker://, TRANSPORT:PATH and bare paths', async () => {
    const w = await workdir('grammar', insecureConf(reg.host));
    const i = await stowage(['inspect', `docker://${small}`], { env: w.env });
    expect(i.code, i.stderr).toBe(0);
    expect(JSON.parse(i.stdout).Digest).toBe(h.fixtures.images.small!.digest);
    const t = await stowage(['tags', `docker://${reg.host}/fixtures/small`], { env: w.env });
    expect(t.code, t.stderr).toBe(0);
    expect(JSON.parse(t.stdout).Tags).toContain('v1');

    const archive = join(w.dir, 'small.tar');
    expect((await stowage(['pull', '-q', small, '-o', archive], { env: w.env })).code).toBe(0);
    // A bare path as the source of pull and copy, as inspect, verify and push already read it.
    const again = join(w.dir, 'again.tar');
    const p = await stowage(['pull', '-q', archive, '-o', again], { env: w.env });
    expect(p.code, p.stderr).toBe(0);
    const c = await stowage(['copy', '-q', archive, `${reg.host}/grammar/small:v1`], { env: w.env });
    expect(c.code, c.stderr).toBe(0);
    const raw = (
      await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/grammar/small:v1`])
    ).stdout;
    expect(JSON.parse(raw)).toEqual(
      JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}`])).stdout),
    );
    // A bare path cannot say which format to write: the error says how.
    const d = await stowage(['copy', '-q', small, join(w.dir, 'dest.tar')], { env: w.env });
    expect(d.code).toBe(2);
    expect(d.stderr).toContain(`oci-archive:${join(w.dir, 'dest.tar')}`);
  });

  it('gives the platform of a single-platform image in results and the archive listing', async () => {
    const w = await workdir('platforms', insecureConf(reg.host));
    const out = join(w.dir, 'small.tar');
    const r = await stowage(['pull', '--json', small, '-o', out], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const config = JSON.parse((await run('skopeo', ['inspect', '--config', `oci-archive:${out}`])).stdout);
    const expected = `${config.os}/${config.architecture}${config.variant ? `/${config.variant}` : ''}`;
    expect(JSON.parse(r.stdout).images[0].platforms).toEqual([expected]);
    const store = join(w.dir, 'store');
    const conf = join(w.dir, 'stowage.toml');
    await import('node:fs/promises').then((fs) =>
      fs.writeFile(
        conf,
        `[store]\npath = "${store}"\n\n[[job]]\nname = "small"\nsource = "${reg.host}/fixtures/small"\ntags = ["v1"]\n`,
      ),
    );
    expect((await stowage(['sync', '-q', '--config', conf], { env: w.env })).code).toBe(0);
    const listed = JSON.parse(
      (await stowage(['archives', '--json', '--config', conf], { env: w.env })).stdout,
    );
    expect(JSON.stringify(listed)).toContain(expected);
    expect(await readFile(join(store, 'index.json'), 'utf8')).toContain(h.fixtures.images.small!.digest);
  });
});
