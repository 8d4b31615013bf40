/**
 * Air-gap bundles end to end (issue 36), against the real docker-registry, skopeo and openssl: a store
 * holding 20 tags of an image family (a shared base layer, one layer of each tag's own, a cosign
 * signature on one) makes a full bundle; two new versions sharing the base make a delta holding only
 * their new blobs; both go into an empty far-side store and an empty registry, every version arriving
 * byte for byte. The delta alone, a damaged byte, a missing part and a bad signature are refused with
 * nothing written; an import killed midway shows nothing and the next one completes it.
 */
import { spawn } from 'node:child_process';
import { copyFile, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ArtifactWriter, digestOf, makeKeyPair, opensslSign, tagFor } from './harness/artifacts.js';
import { BIN, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';
import { buildTaggedRepo, pushTags, type TaggedRepo } from './harness/tagged-repo.js';
import { damageEntry } from './harness/tools.js';

const h = harness();
const plain = h.registries.plain;
const SOURCE = `${plain.host}/bundle/app`;
let repo: TaggedRepo;
let w: Awaited<ReturnType<typeof workdir>>;
let env: NodeJS.ProcessEnv;
let signatureDigest: string;

const sha256 = async (path: string) => digestOf(await readFile(path)).slice(7);
const far = (name: string) => ({ ...env, STOWAGE_STORE: join(w.dir, name) });

async function ok(args: string[], e = env): Promise<string> {
  const r = await stowage(args, { env: e });
  expect(r.code, `stowage ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

async function versions(
  e: NodeJS.ProcessEnv,
): Promise<{ id: string; tag: string; taken: string; digest: string }[]> {
  const list = JSON.parse(await ok(['archives', '--json'], e)) as {
    id: string;
    tag: string;
    taken: string;
    descriptor: { digest: string };
  }[];
  return list.map((v) => ({ id: v.id, tag: v.tag, taken: v.taken, digest: v.descriptor.digest }));
}

async function registryDigest(ref: string): Promise<string | undefined> {
  const r = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]).catch(
    () => undefined,
  );
  return r ? digestOf(Buffer.from(r.stdout)) : undefined;
}

beforeAll(async () => {
  repo = await buildTaggedRepo(join(h.dir, 'bundle-layout'), {
    count: 22,
    baseKiB: 512,
    ownKiB: 64,
    seed: 'bundle',
  });
  await pushTags(repo.layout, repo.tags.slice(0, 20), SOURCE);
  // A cosign signature on the first tag: it travels with its version.
  const artifacts = new ArtifactWriter(plain.host);
  const signed = repo.digests.get('1.0.0')!;
  signatureDigest = (
    await artifacts.putCosignSignature('bundle/app', {
      signed,
      identity: `${SOURCE}:1.0.0`,
      tag: tagFor(signed, '.sig'),
      signature: 'c2lnbmF0dXJl',
    })
  ).digest;
  w = await workdir('bundle', insecureConf(plain.host));
  env = { ...w.env, STOWAGE_STORE: join(w.dir, 'store') };
  await writeFile(
    join(w.dir, 'stowage.toml'),
    `[[job]]\nname = "family"\nsource = "${SOURCE}"\nexclude = ["^sha256-"]\n`,
  );
  env.STOWAGE_CONFIG = join(w.dir, 'stowage.toml');
  await ok(['sync']);
}, 180_000);

describe('stowage bundle', () => {
  let full: string;
  let delta: string;

  it('makes a full bundle skopeo reads, reproducibly, with its checksum and a signature openssl verifies', async () => {
    full = join(w.dir, 'full.tar');
    const keys = await makeKeyPair(w.dir, 'bundle');
    const made = JSON.parse(
      await ok([
        'bundle',
        'create',
        'family',
        '-o',
        full,
        '--sign-by-sigstore-private-key',
        keys.key,
        '--json',
      ]),
    );
    expect(made.versions).toBe(20);
    expect(made.bases).toEqual([]);
    expect((await readFile(`${full}.sha256`, 'utf8')).split(' ')[0]).toBe(await sha256(full));
    // The same store and arguments: the same bytes (and one record in the history).
    const again = join(w.dir, 'full-again.tar');
    expect(JSON.parse(await ok(['bundle', 'create', 'family', '-o', again, '--json'])).id).toBe(made.id);
    expect(await sha256(again)).toBe(await sha256(full));
    const history = JSON.parse(await ok(['bundle', 'list', '--json']));
    expect(history.map((r: { id: string }) => r.id)).toEqual([made.id]);

    // skopeo reads it as an oci-archive: the tag's manifest, digest intact.
    const inspected = JSON.parse(
      (await run('skopeo', ['inspect', `oci-archive:${full}:${SOURCE}:1.7.0`])).stdout,
    );
    expect(inspected.Digest).toBe(repo.digests.get('1.7.0'));
    // The signature is of the bundle manifest, in the bytes openssl checks.
    const manifest = (await run('tar', ['-xOf', full, 'stowage-bundle.json'])).stdout;
    await writeFile(join(w.dir, 'manifest.json'), manifest);
    await writeFile(
      join(w.dir, 'manifest.sig'),
      Buffer.from(await readFile(`${full}.sig`, 'utf8'), 'base64'),
    );
    await run('openssl', [
      'dgst',
      '-sha256',
      '-verify',
      keys.pub,
      '-signature',
      join(w.dir, 'manifest.sig'),
      join(w.dir, 'manifest.json'),
    ]);
    expect(digestOf(Buffer.from(manifest))).toBe(made.id);

    const shown = JSON.parse(await ok(['bundle', 'inspect', full, '--json']));
    expect(shown.signed).toBe(true);
    expect(shown.versions.find((v: { tag: string }) => v.tag === '1.0.0').attachments).toBe(1);
  });

  it('makes a delta of two new versions holding only their new blobs', async () => {
    await pushTags(repo.layout, repo.tags.slice(20), SOURCE);
    await ok(['sync']);
    delta = join(w.dir, 'delta.tar');
    const made = JSON.parse(await ok(['bundle', 'create', '--since', full, '-o', delta, '--json']));
    expect(made.versions).toBe(2);
    const shown = JSON.parse(await ok(['bundle', 'inspect', delta, '--json']));
    expect(shown.versions.map((v: { tag: string }) => v.tag).sort()).toEqual(['1.20.0', '1.21.0']);
    expect(shown.bases).toEqual([JSON.parse(await ok(['bundle', 'inspect', full, '--json'])).id]);
    // Inside: each new tag's config and own layer (and its manifest); the shared base is assumed.
    const manifest = JSON.parse((await run('tar', ['-xOf', delta, 'stowage-bundle.json'])).stdout);
    const inside = new Set(manifest.blobs.map((b: { digest: string }) => b.digest));
    for (const tag of ['1.20.0', '1.21.0']) expect(inside.has(repo.digests.get(tag))).toBe(true);
    expect(manifest.assumes).toHaveLength(1);
    expect(inside.has(manifest.assumes[0].digest)).toBe(false);
    expect(manifest.blobs).toHaveLength(6);
    // By id and by time too: the same delta.
    const byId = join(w.dir, 'delta-by-id.tar');
    await ok(['bundle', 'create', '--since', shown.bases[0].slice(7, 19), '-o', byId]);
    expect(await sha256(byId)).toBe(await sha256(delta));
    const text = await ok(['bundle', 'list']);
    expect(text).toContain(shown.id.slice(7, 19));
  });

  it('refuses the delta alone, naming its base, and writes nothing', async () => {
    const e = far('lonely');
    const r = await stowage(['bundle', 'import', delta], { env: e });
    expect(r.code).not.toBe(0);
    const base = JSON.parse(await ok(['bundle', 'inspect', full, '--json'])).id.slice(7, 19);
    expect(r.stderr).toContain(base);
    expect(r.stderr).toMatch(/import that first/);
    expect(await versions(e)).toEqual([]);
    const reg = await stowage(['bundle', 'import', delta, '--to', `${plain.host}/lonely`], { env });
    expect(reg.code).not.toBe(0);
    expect(reg.stderr).toContain(base);
    expect(await registryDigest(`${plain.host}/lonely/bundle/app:1.20.0`)).toBeUndefined();
  });

  it('imports the full bundle then the delta into an empty store, every version byte for byte, twice over', async () => {
    const e = far('far-store');
    await ok(['bundle', 'import', full, delta], e);
    const here = await versions(env);
    expect(await versions(e)).toEqual(here);
    for (const v of [here[0]!, here[20]!, here[21]!]) {
      const a = join(w.dir, `near-${v.id}.tar`);
      const b = join(w.dir, `far-${v.id}.tar`);
      await ok(['archives', 'export', v.id, '-o', a]);
      await ok(['archives', 'export', v.id, '-o', b], e);
      expect(await sha256(b)).toBe(await sha256(a));
    }
    // The signature came along with its version.
    const first = JSON.parse(await ok(['archives', '--json'], e)).find(
      (v: { tag: string }) => v.tag === '1.0.0',
    );
    expect(first.referrers[0].descriptor.digest).toBe(signatureDigest);
    // Twice: nothing changes.
    const again = JSON.parse(await ok(['bundle', 'import', full, delta, '--json'], e));
    expect(again.map((r: { present: number; written: number }) => [r.present, r.written])).toEqual([
      [20, 0],
      [2, 0],
    ]);
    expect(await versions(e)).toEqual(here);
    const history = JSON.parse(await ok(['bundle', 'list', '--json'], e));
    expect(history.map((r: { kind: string }) => r.kind)).toEqual(['imported', 'imported']);
  });

  it('imports both into an empty registry, digests and signature intact', async () => {
    const prefix = `${plain.host}/far`;
    await ok(['bundle', 'import', full, delta, '--to', prefix]);
    for (const tag of repo.tags)
      expect(await registryDigest(`${prefix}/bundle/app:${tag}`)).toBe(repo.digests.get(tag));
    const signed = repo.digests.get('1.0.0')!;
    expect(await registryDigest(`${prefix}/bundle/app:${tagFor(signed, '.sig')}`)).toBe(signatureDigest);
  });

  it('refuses a damaged byte, with and without its checksum file, and names a missing part', async () => {
    const damaged = join(w.dir, 'damaged.tar');
    await copyFile(full, damaged);
    await copyFile(`${full}.sha256`, `${damaged}.sha256`);
    const manifest = JSON.parse((await run('tar', ['-xOf', full, 'stowage-bundle.json'])).stdout);
    const layer = manifest.blobs.reduce((a: { size: number }, b: { size: number }) =>
      b.size > a.size ? b : a,
    );
    await damageEntry(damaged, `blobs/sha256/${layer.digest.slice(7)}`);
    const e = far('damaged');
    const r = await stowage(['bundle', 'import', damaged], { env: e });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/damaged/);
    await rm(`${damaged}.sha256`);
    const bare = await stowage(['bundle', 'import', damaged], { env: e });
    expect(bare.code).not.toBe(0);
    expect(bare.stderr).toContain(layer.digest);
    expect(await versions(e)).toEqual([]);

    // Split for media: parts of 1 MiB, each with its checksum, joined in order on import.
    const split = join(w.dir, 'split', 'family.tar');
    await run('mkdir', ['-p', join(w.dir, 'split')]);
    const made = JSON.parse(
      await ok(['bundle', 'create', 'family', '--versions', 'all', '-o', split, '--split', '1MiB', '--json']),
    );
    const parts = (await readdir(join(w.dir, 'split'))).filter((f) => /-of-\d+$/.test(f)).sort();
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) await run('sha256sum', ['-c', `${p}.sha256`], { cwd: join(w.dir, 'split') });
    const s = far('from-parts');
    await ok(['bundle', 'import', split], s);
    expect((await versions(s)).length).toBe(made.versions);
    const second = join(w.dir, 'split', parts[1]!);
    await rm(second);
    const gap = await stowage(['bundle', 'import', split], { env: far('gap') });
    expect(gap.code).not.toBe(0);
    expect(gap.stderr).toContain(parts[1]);
  });

  it('judges the signature by the trust policy when one is given', async () => {
    const keys = await makeKeyPair(w.dir, 'policy');
    const signed = join(w.dir, 'signed.tar');
    await ok(['bundle', 'create', 'family', '-o', signed, '--sign-by-sigstore-private-key', keys.key]);
    const policy = (key: string) =>
      JSON.stringify({
        default: [{ type: 'reject' }],
        transports: { 'oci-archive': { '': [{ type: 'sigstoreSigned', keyPath: key }] } },
      });
    await writeFile(join(w.dir, 'good.json'), policy(keys.pub));
    const other = await makeKeyPair(w.dir, 'other');
    await writeFile(join(w.dir, 'bad.json'), policy(other.pub));
    const refused = await stowage(['bundle', 'import', signed, '--policy', join(w.dir, 'bad.json')], {
      env: far('bad-sig'),
    });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/does not verify/);
    expect(await versions(far('bad-sig'))).toEqual([]);
    const out = JSON.parse(
      await ok(['bundle', 'import', signed, '--policy', join(w.dir, 'good.json'), '--json'], far('good-sig')),
    );
    expect(out[0].checked).toContain('signature');
    // The openssl-made signature of the same manifest is as good as stowage's own.
    const manifest = Buffer.from((await run('tar', ['-xOf', signed, 'stowage-bundle.json'])).stdout);
    await writeFile(`${signed}.sig`, await opensslSign(w.dir, keys.key, manifest));
    await ok(['bundle', 'import', signed, '--policy', join(w.dir, 'good.json')], far('openssl-sig'));
  });

  it('leaves nothing visible when killed midway, and the next import completes it', async () => {
    const e = far('killed');
    const child = spawn(process.execPath, [BIN, 'bundle', 'import', full, '--jobs', '1'], {
      env: e,
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const blobs = join(w.dir, 'killed', 'blobs', 'sha256');
    for (;;) {
      const n = (await readdir(blobs).catch(() => [])).filter((f) => !f.startsWith('.')).length;
      if (n >= 1) break;
      await new Promise((r) => setTimeout(r, 2));
    }
    child.kill('SIGKILL');
    expect(await exited).toBeNull();
    expect(await versions(e)).toEqual([]);
    const done = JSON.parse(await ok(['bundle', 'import', full, '--json'], e));
    expect(done[0].written).toBeLessThan(done[0].blobs);
    expect((await versions(e)).length).toBe(20);
    expect((await stat(join(w.dir, 'killed', 'index.json'))).size).toBeGreaterThan(0);
  });
});
