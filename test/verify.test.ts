/**
 * `stowage inspect ARCHIVE` and `stowage verify ARCHIVE`: listings that match what was pulled and what
 * skopeo reads, and verification that finds each kind of damage (a changed byte in a blob, a missing
 * blob, a config that disagrees with its layers, an archive changed after its .sha256 was written),
 * says which with its exit code, and passes intact archives from us, skopeo and podman.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';
import { damageEntry } from './harness/tools.js';

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** Writes JSON as a blob of an OCI layout; returns its descriptor fields. */
async function putBlob(layout: string, value: unknown): Promise<{ digest: string; size: number }> {
  const bytes = Buffer.from(JSON.stringify(value));
  const hex = sha256(bytes);
  await writeFile(join(layout, 'blobs', 'sha256', hex), bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
}

// biome-ignore lint/suspicious/noExplicitAny: test data of known shape
async function readJson(path: string): Promise<any> {
  return JSON.parse(await readFile(path, 'utf8'));
}

describe('inspect and verify archives', () => {
  const h = harness();
  const reg = h.registries.plain;
  const small = `${reg.host}/fixtures/small:v1`;
  const multi = `${reg.host}/fixtures/multi:v1`;
  const multiarch = `${reg.host}/fixtures/multiarch:v1`;

  it('lists the images, names, platforms and digests of an archive, as text and JSON', async () => {
    const w = await workdir('inspect-archive', insecureConf(reg.host));
    const out = join(w.dir, 'two.tar');
    const pulled = await stowage(['pull', '-q', '--json', '--all', small, multiarch, '-o', out], {
      env: w.env,
    });
    expect(pulled.code, pulled.stderr).toBe(0);
    const result = JSON.parse(pulled.stdout);

    const r = await stowage(['inspect', '--json', out], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.format).toBe('oci-archive');
    expect(info.fileSize).toBe(result.size);
    expect(info.images.map((i: { digest: string }) => i.digest)).toEqual(
      result.images.map((i: { digest: string }) => i.digest),
    );
    expect(info.images[0].names).toContain(small);
    // The multi-arch image keeps its index; its children are listed with their platforms.
    const blob = async (digest: string) =>
      JSON.parse((await run('tar', ['-xOf', out, `blobs/sha256/${digest.slice(7)}`])).stdout);
    const index = await blob(h.fixtures.images.multiarch!.digest);
    const idx = info.images[1];
    expect(idx.digest).toBe(h.fixtures.images.multiarch!.digest);
    expect(idx.manifests.map((m: { digest: string }) => m.digest)).toEqual(
      index.manifests.map((m: { digest: string }) => m.digest),
    );
    expect(idx.manifests.map((m: { platform: string }) => m.platform).sort()).toEqual([
      'linux/amd64',
      'linux/arm64/v8',
    ]);
    const smallManifest = await blob(h.fixtures.images.small!.digest);
    expect(info.images[0].manifests[0]).toMatchObject({
      digest: h.fixtures.images.small!.digest,
      config: smallManifest.config.digest,
      layers: smallManifest.layers.length,
      present: true,
    });

    // JSON is the default, as for an image in a registry; the listing for people names the same things.
    const plain = await stowage(['inspect', out], { env: w.env });
    expect(JSON.parse(plain.stdout)).toEqual(info);
    const text = await stowage(['inspect', '--text', out], { env: w.env });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain(`@0  ${small}`);
    expect(text.stdout).toContain(`index ${h.fixtures.images.multiarch!.digest}, 2 manifests`);
    expect(text.stdout).toContain(`image id ${smallManifest.config.digest}`);

    // One image by name, and its exact documents.
    const one = await stowage(['inspect', '--json', `oci-archive:${out}:${multiarch}`], { env: w.env });
    expect(JSON.parse(one.stdout).images.map((i: { index: number }) => i.index)).toEqual([1]);
    const raw = await stowage(['inspect', '--raw', `oci-archive:${out}:@1`], { env: w.env });
    expect(`sha256:${sha256(raw.stdout)}`).toBe(h.fixtures.images.multiarch!.digest);
    const config = await stowage(['inspect', '--config', '--platform', 'linux/arm64', `${out}`], {
      env: w.env,
    });
    expect(config.code).not.toBe(0);
    expect(config.stderr).toMatch(/holds 2 images; name one/);
    const armConfig = await stowage(
      ['inspect', '--config', '--platform', 'linux/arm64', `oci-archive:${out}:@1`],
      { env: w.env },
    );
    expect(armConfig.code, armConfig.stderr).toBe(0);
    expect(JSON.parse(armConfig.stdout).architecture).toBe('arm64');

    // A docker-archive lists its RepoTags and the image id podman and docker show.
    const d = join(w.dir, 'd.tar');
    expect((await stowage(['pull', '-q', '-f', 'docker-archive', multi, '-o', d], { env: w.env })).code).toBe(
      0,
    );
    const dinfo = JSON.parse((await stowage(['inspect', '--json', d], { env: w.env })).stdout);
    const manifestJson = JSON.parse((await run('tar', ['-xOf', d, 'manifest.json'])).stdout);
    expect(dinfo.format).toBe('docker-archive');
    expect(dinfo.images[0].names).toEqual([multi]);
    expect(dinfo.images[0].manifests[0].config).toBe(`sha256:${manifestJson[0].Config.replace('.json', '')}`);
  });

  it('passes intact archives in every format, ours and the peers', async () => {
    const w = await workdir('verify-ok', insecureConf(reg.host));
    for (const format of ['oci-archive', 'docker-archive', 'oci', 'dir']) {
      const out = join(w.dir, `ours-${format}`);
      const refs = format === 'dir' ? [multi] : [multi, small];
      expect((await stowage(['pull', '-q', '-f', format, ...refs, '-o', out], { env: w.env })).code).toBe(0);
      const r = await stowage(['verify', '--json', `${format}:${out}`], { env: w.env });
      expect(r.code, `${format}: ${r.stdout}${r.stderr}`).toBe(0);
      const report = JSON.parse(r.stdout);
      expect(report).toMatchObject({ ok: true, format, problems: [] });
      expect(report.checksum.status).toBe(format.endsWith('archive') ? 'ok' : 'not-applicable');
      if (format.endsWith('archive')) expect(report.checksum.sha256).toBe(sha256(await readFile(out)));
    }
    // skopeo's archives have no .sha256: verified, and said so; --sha256 or --require-checksum decide.
    const s = join(w.dir, 's.tar');
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${multi}`,
      `oci-archive:${s}`,
    ]);
    const r = await stowage(['verify', s], { env: w.env });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`no ${s}.sha256 to compare with`);
    expect((await stowage(['verify', '--require-checksum', s], { env: w.env })).code).toBe(10);
    const good = sha256(await readFile(s));
    expect((await stowage(['verify', '--require-checksum', '--sha256', good, s], { env: w.env })).code).toBe(
      0,
    );
    const sd = join(w.dir, 's-d.tar');
    await run('skopeo', [
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${multi}`,
      `docker-archive:${sd}`,
    ]);
    const rd = await stowage(['verify', `docker-archive:${sd}`], { env: w.env });
    expect(rd.code, rd.stdout + rd.stderr).toBe(0);
  });

  it('finds a changed byte, a missing blob, a wrong diff_id and a stale .sha256, each with its exit code', async () => {
    const w = await workdir('verify-bad', insecureConf(reg.host));

    // A byte changed inside a layer of an oci-archive: the blob is named, exit 11.
    const a = join(w.dir, 'a.tar');
    expect((await stowage(['pull', '-q', multi, '-o', a], { env: w.env })).code).toBe(0);
    const manifest = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${a}`])).stdout);
    const layer = manifest.layers[1].digest as string;
    await damageEntry(a, `blobs/sha256/${layer.slice(7)}`);
    const bad = await stowage(['verify', '--json', a], { env: w.env });
    expect(bad.code).toBe(11);
    const report = JSON.parse(bad.stdout);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual([
      {
        kind: 'blob',
        message: expect.stringMatching(new RegExp(`^layer ${layer}: .*the archive is damaged$`)),
      },
      { kind: 'checksum', message: expect.stringContaining('the file changed after it was written') },
    ]);
    expect(report.checksum.status).toBe('mismatch');

    // The .sha256 beside an otherwise intact archive no longer matches: exit 10.
    const b = join(w.dir, 'b.tar');
    expect((await stowage(['pull', '-q', small, '-o', b], { env: w.env })).code).toBe(0);
    await writeFile(`${b}.sha256`, `${'0'.repeat(64)}  b.tar\n`);
    const stale = await stowage(['verify', b], { env: w.env });
    expect(stale.code).toBe(10);
    expect(stale.stdout).toContain('the file changed after it was written');

    // A layout with a blob deleted: exit 11, the missing blob named.
    const l = join(w.dir, 'layout');
    expect((await stowage(['pull', '-q', '-f', 'oci', multi, '-o', l], { env: w.env })).code).toBe(0);
    await rm(join(l, 'blobs', 'sha256', layer.slice(7)));
    const missing = await stowage(['verify', `oci:${l}`], { env: w.env });
    expect(missing.code).toBe(11);
    expect(missing.stdout).toMatch(new RegExp(`${layer} is missing from the archive`));

    // A config whose diff_id does not match its layer, every digest consistent: exit 12.
    const c = join(w.dir, 'layout2');
    expect((await stowage(['pull', '-q', '-f', 'oci', multi, '-o', c], { env: w.env })).code).toBe(0);
    const idx = await readJson(join(c, 'index.json'));
    const m = await readJson(join(c, 'blobs', 'sha256', idx.manifests[0].digest.slice(7)));
    const config = await readJson(join(c, 'blobs', 'sha256', m.config.digest.slice(7)));
    config.rootfs.diff_ids[0] = `sha256:${'1'.repeat(64)}`;
    m.config = { ...m.config, ...(await putBlob(c, config)) };
    idx.manifests[0] = { ...idx.manifests[0], ...(await putBlob(c, m)) };
    await writeFile(join(c, 'index.json'), JSON.stringify(idx));
    const inconsistent = await stowage(['verify', '--json', c], { env: w.env });
    expect(inconsistent.code).toBe(12);
    expect(JSON.parse(inconsistent.stdout).problems).toEqual([
      {
        kind: 'consistency',
        message: expect.stringMatching(
          /layer 0 .* decompresses to sha256:[0-9a-f]{64}, but the config's diff_id is sha256:1{64}/,
        ),
      },
    ]);

    // The same image in a registry: a docker-archive pull checks diff_ids and writes nothing.
    const badRef = `${reg.host}/verify/bad-diff-id:v1`;
    await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${c}`, `docker://${badRef}`]);
    const dOut = join(w.dir, 'bad-d.tar');
    const pulled = await stowage(['pull', '-q', '-f', 'docker-archive', badRef, '-o', dOut], { env: w.env });
    expect(pulled.code).toBe(7);
    expect(pulled.stderr).toMatch(/does not match the expected sha256:1{64}; the image config's diff_id/);
    expect(await readdir(w.dir)).not.toContain('bad-d.tar');

    // An index whose other platform was left out: a note, not a failure.
    const p = join(w.dir, 'layout3');
    expect(
      (await stowage(['pull', '-q', '-f', 'oci', '--all', multiarch, '-o', p], { env: w.env })).code,
    ).toBe(0);
    const top = await readJson(join(p, 'blobs', 'sha256', h.fixtures.images.multiarch!.digest.slice(7)));
    const arm = top.manifests.find(
      (d: { platform: { architecture: string } }) => d.platform.architecture === 'arm64',
    );
    await rm(join(p, 'blobs', 'sha256', arm.digest.slice(7)));
    const partial = await stowage(['verify', p], { env: w.env });
    expect(partial.code, partial.stdout).toBe(0);
    expect(partial.stdout).toContain(
      `names manifest ${arm.digest} (linux/arm64/v8), which the archive does not hold`,
    );

    // Not an archive at all: exit 6 with the path named; a registry reference is refused by name.
    const junk = join(w.dir, 'junk.tar');
    await writeFile(junk, 'not a tar');
    const notTar = await stowage(['verify', junk], { env: w.env });
    expect(notTar.code).toBe(6);
    expect(notTar.stderr).toContain(junk);
    const ref = await stowage(['verify', 'busybox'], { env: w.env });
    expect(ref.code).toBe(5);
    expect(ref.stderr).toContain('busybox is not an archive file');
  });
});
