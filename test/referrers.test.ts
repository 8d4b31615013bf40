/**
 * What is attached to an image travels with it, registry to registry: an SBOM that names the image as
 * its subject (found through the referrers tag schema, as docker-registry 2.8 has no referrers API, or
 * through the API served by a small proxy), a cosign-style signature of that SBOM and one of the image
 * (sha256-HEX.sig tags), every digest intact, checked with skopeo on the destination.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { MediaType } from '../src/image/mediatypes.js';
import { ArtifactWriter, digestOf, tagFor } from './harness/artifacts.js';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';

const h = harness();
const plain = h.registries.plain;
const artifacts = new ArtifactWriter(plain.host);
const client = artifacts.client;
const putBlob = artifacts.putBlob.bind(artifacts);
const putManifest = artifacts.putManifest.bind(artifacts);
const putCosignSignature = (repo: string, signed: string, tag: string) =>
  artifacts.putCosignSignature(repo, { signed, identity: repo, tag, signature: 'MEUCIQDfakefakefake' });

interface Signed {
  repo: string;
  image: string;
  sbom: Awaited<ReturnType<typeof putManifest>>;
  sbomSig: Awaited<ReturnType<typeof putManifest>>;
  imageSig: Awaited<ReturnType<typeof putManifest>>;
}

/** The small fixture under a new repository, with an SBOM (subject: the image), its signature and the image's. */
async function signedImage(name: string, opts: { tagSchema: boolean }): Promise<Signed> {
  const repo = `referrers-${name}/app`;
  await run('skopeo', [
    'copy',
    '--quiet',
    '--src-tls-verify=false',
    '--dest-tls-verify=false',
    `docker://${plain.host}/fixtures/small:v1`,
    `docker://${plain.host}/${repo}:1`,
  ]);
  const head = (await client.headManifest(repo, '1'))!;
  const empty = await putBlob(repo, Buffer.from('{}'), 'application/vnd.oci.empty.v1+json');
  const spdx = await putBlob(
    repo,
    Buffer.from('{"spdxVersion":"SPDX-2.3","name":"small"}'),
    'application/spdx+json',
  );
  const sbom = await putManifest(repo, {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType: 'application/spdx+json',
    config: empty,
    layers: [spdx],
    subject: { mediaType: head.mediaType, digest: head.digest, size: head.size },
    annotations: { 'org.opencontainers.image.created': '2026-01-01T00:00:00Z' },
  });
  if (opts.tagSchema) {
    const { bytes: _, ...entry } = sbom;
    await client.putManifest(
      repo,
      tagFor(head.digest),
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.OciIndex,
          manifests: [{ ...entry, artifactType: 'application/spdx+json' }],
        }),
      ),
      MediaType.OciIndex,
    );
  }
  const sbomSig = await putCosignSignature(repo, sbom.digest, tagFor(sbom.digest, '.sig'));
  const imageSig = await putCosignSignature(repo, head.digest, tagFor(head.digest, '.sig'));
  return { repo, image: head.digest, sbom, sbomSig, imageSig };
}

async function rawDigest(ref: string): Promise<string | undefined> {
  const r = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]).catch(
    () => undefined,
  );
  return r ? digestOf(Buffer.from(r.stdout)) : undefined;
}

let env: NodeJS.ProcessEnv;
beforeAll(async () => {
  ({ env } = await workdir('referrers', insecureConf(plain.host)));
});

describe('attachments carried registry to registry', () => {
  it('carries an SBOM found by the tag schema, its signature and the image’s, digests intact', async () => {
    const s = await signedImage('tag-schema', { tagSchema: true });
    const dest = 'referrers-dest-a/app';
    const r = await stowage(['copy', `${plain.host}/${s.repo}:1`, `${plain.host}/${dest}:1`], { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`application/spdx+json ${s.sbom.digest}`);
    expect(await rawDigest(`${plain.host}/${dest}:1`)).toBe(s.image);
    // The SBOM by digest, and listed in the destination's tag schema (docker-registry has no API).
    expect(await rawDigest(`${plain.host}/${dest}@${s.sbom.digest}`)).toBe(s.sbom.digest);
    const index = JSON.parse(
      (
        await run('skopeo', [
          'inspect',
          '--raw',
          '--tls-verify=false',
          `docker://${plain.host}/${dest}:${tagFor(s.image)}`,
        ])
      ).stdout,
    );
    expect(index.manifests.map((m: { digest: string }) => m.digest)).toEqual([s.sbom.digest]);
    expect(index.manifests[0].artifactType).toBe('application/spdx+json');
    // cosign's signatures, of the image and (one level down) of the SBOM, under their tags.
    expect(await rawDigest(`${plain.host}/${dest}:${tagFor(s.image, '.sig')}`)).toBe(s.imageSig.digest);
    expect(await rawDigest(`${plain.host}/${dest}:${tagFor(s.sbom.digest, '.sig')}`)).toBe(s.sbomSig.digest);
  });

  it('carries none with --remove-signatures, and only the types asked for with --referrer-type', async () => {
    const s = await signedImage('filters', { tagSchema: true });
    const none = 'referrers-dest-none/app';
    const r1 = await stowage(
      ['copy', '--remove-signatures', `${plain.host}/${s.repo}:1`, `${plain.host}/${none}:1`],
      { env },
    );
    expect(r1.code, r1.stderr).toBe(0);
    expect(await rawDigest(`${plain.host}/${none}:1`)).toBe(s.image);
    expect(await rawDigest(`${plain.host}/${none}@${s.sbom.digest}`)).toBeUndefined();
    expect(await rawDigest(`${plain.host}/${none}:${tagFor(s.image, '.sig')}`)).toBeUndefined();
    const some = 'referrers-dest-some/app';
    const r2 = await stowage(
      [
        'copy',
        '--referrer-type',
        'application/spdx+json',
        `${plain.host}/${s.repo}:1`,
        `${plain.host}/${some}:1`,
      ],
      { env },
    );
    expect(r2.code, r2.stderr).toBe(0);
    expect(await rawDigest(`${plain.host}/${some}@${s.sbom.digest}`)).toBe(s.sbom.digest);
    // What is attached to a carried attachment comes with it; the image's own signature does not.
    expect(await rawDigest(`${plain.host}/${some}:${tagFor(s.sbom.digest, '.sig')}`)).toBe(s.sbomSig.digest);
    expect(await rawDigest(`${plain.host}/${some}:${tagFor(s.image, '.sig')}`)).toBeUndefined();
  });

  it('finds referrers through the referrers API, and leaves the listing to a destination that has one', async () => {
    const s = await signedImage('api', { tagSchema: false });
    const listing = (digest: string) =>
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests:
          digest === s.image
            ? [
                {
                  mediaType: MediaType.OciManifest,
                  digest: s.sbom.digest,
                  size: s.sbom.size,
                  artifactType: 'application/spdx+json',
                },
              ]
            : [],
      });
    // The source: the real registry, with the referrers API answered by the proxy.
    const source: FaultProxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) => {
        const m = /^\/v2\/.+\/referrers\/(sha256:[0-9a-f]{64})/.exec(req.url ?? '');
        if (!m) return undefined;
        return {
          kind: 'respond',
          handle: (_req, res) => {
            res.writeHead(200, { 'content-type': MediaType.OciIndex });
            res.end(listing(m[1]!));
          },
        };
      },
    });
    // A destination that says it indexes subjects (OCI-Subject on manifest PUTs), as a registry with
    // the referrers API does.
    const indexing: FaultProxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) =>
        req.method === 'PUT' && /\/manifests\//.test(req.url ?? '')
          ? { kind: 'headers', headers: { 'oci-subject': s.image } }
          : undefined,
    });
    try {
      const { env } = await workdir('referrers-api', insecureConf(plain.host, source.host, indexing.host));
      const viaApi = 'referrers-dest-api/app';
      const r = await stowage(['copy', `${source.host}/${s.repo}:1`, `${plain.host}/${viaApi}:1`], { env });
      expect(r.code, r.stderr).toBe(0);
      expect(source.seen.some((q) => q.path.includes(`/referrers/${s.image}`))).toBe(true);
      expect(await rawDigest(`${plain.host}/${viaApi}@${s.sbom.digest}`)).toBe(s.sbom.digest);
      // docker-registry answers no OCI-Subject: the tag schema lists the SBOM.
      expect(await rawDigest(`${plain.host}/${viaApi}:${tagFor(s.image)}`)).toBeDefined();
      const toIndexing = 'referrers-dest-indexing/app';
      const r2 = await stowage(['copy', `${source.host}/${s.repo}:1`, `${indexing.host}/${toIndexing}:1`], {
        env,
      });
      expect(r2.code, r2.stderr).toBe(0);
      expect(await rawDigest(`${plain.host}/${toIndexing}@${s.sbom.digest}`)).toBe(s.sbom.digest);
      expect(await rawDigest(`${plain.host}/${toIndexing}:${tagFor(s.image)}`)).toBeUndefined();
    } finally {
      await source.close();
      await indexing.close();
    }
  });

  it('goes to a sync mirror with the image, and stays behind with referrers = false', async () => {
    const s = await signedImage('sync', { tagSchema: true });
    const w = await workdir('referrers-sync', insecureConf(plain.host));
    const config = join(w.dir, 'stowage.toml');
    const job = (name: string, mirror: string, extra: string) =>
      `[[job]]\nname = "${name}"\nsource = "${plain.host}/${s.repo}"\ntags = ["1"]\narchive = false\nmirror = "${plain.host}/${mirror}"\n${extra}`;
    await writeFile(
      config,
      `[store]\npath = "${join(w.dir, 'store')}"\n\n${job('with', 'referrers-sync-with/app', '')}\n${job('without', 'referrers-sync-without/app', 'referrers = false\n')}`,
    );
    const r = await stowage(['sync', '--json', '--config', config], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    expect(await rawDigest(`${plain.host}/referrers-sync-with/app:1`)).toBe(s.image);
    expect(await rawDigest(`${plain.host}/referrers-sync-with/app@${s.sbom.digest}`)).toBe(s.sbom.digest);
    expect(await rawDigest(`${plain.host}/referrers-sync-with/app:${tagFor(s.sbom.digest, '.sig')}`)).toBe(
      s.sbomSig.digest,
    );
    expect(await rawDigest(`${plain.host}/referrers-sync-without/app:1`)).toBe(s.image);
    expect(await rawDigest(`${plain.host}/referrers-sync-without/app@${s.sbom.digest}`)).toBeUndefined();
  });

  it('travel into an oci-archive and an OCI layout, reproducibly, verified, and back out to a registry', async () => {
    const s = await signedImage('archive', { tagSchema: true });
    const w = await workdir('referrers-archive', insecureConf(plain.host));
    const tar = join(w.dir, 'signed.tar');
    const r1 = await stowage(['pull', '-q', `${plain.host}/${s.repo}:1`, '-o', tar], { env: w.env });
    expect(r1.code, r1.stderr).toBe(0);
    const sum1 = await readFile(`${tar}.sha256`, 'utf8');
    expect(
      (await stowage(['pull', '-q', '-j', '1', `${plain.host}/${s.repo}:1`, '-o', tar], { env: w.env })).code,
    ).toBe(0);
    expect(await readFile(`${tar}.sha256`, 'utf8')).toBe(sum1);
    const listed = JSON.parse((await run('tar', ['-xOf', tar, 'index.json'])).stdout) as {
      manifests: { digest: string; artifactType?: string; annotations?: Record<string, string> }[];
    };
    expect(listed.manifests[0]!.digest).toBe(s.image);
    const attached = listed.manifests.slice(1);
    expect(attached.map((m) => m.digest)).toEqual(
      [s.sbom.digest, s.sbomSig.digest, s.imageSig.digest].sort(),
    );
    expect(attached.find((m) => m.digest === s.imageSig.digest)?.annotations).toEqual({
      'org.opencontainers.image.ref.name': tagFor(s.image, '.sig'),
    });
    expect(attached.find((m) => m.digest === s.sbom.digest)?.artifactType).toBe('application/spdx+json');
    // The archive is one image to those who read it, and its attachments verify.
    const verified = await stowage(['verify', '--json', tar], { env: w.env });
    expect(verified.code, verified.stdout).toBe(0);
    expect(JSON.parse(verified.stdout).manifests).toBe(4);
    const inspected = JSON.parse((await stowage(['inspect', tar], { env: w.env })).stdout);
    expect(inspected.images.length).toBe(1);
    // Back out: the registry gets the image and everything attached, digests intact.
    const back = 'referrers-from-archive/app';
    const pushed = await stowage(['push', tar, `${plain.host}/${back}:1`], { env: w.env });
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(await rawDigest(`${plain.host}/${back}:1`)).toBe(s.image);
    expect(await rawDigest(`${plain.host}/${back}@${s.sbom.digest}`)).toBe(s.sbom.digest);
    expect(await rawDigest(`${plain.host}/${back}:${tagFor(s.image, '.sig')}`)).toBe(s.imageSig.digest);
    expect(await rawDigest(`${plain.host}/${back}:${tagFor(s.sbom.digest, '.sig')}`)).toBe(s.sbomSig.digest);
    // An OCI layout holds them the same way.
    const layout = join(w.dir, 'layout');
    expect(
      (await stowage(['copy', `${plain.host}/${s.repo}:1`, `oci:${layout}:1`], { env: w.env })).code,
    ).toBe(0);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    expect(index.manifests.length).toBe(4);
  });

  it('are kept in the store with the version a sync stores, and exported with it, digests intact', async () => {
    const s = await signedImage('store', { tagSchema: true });
    const w = await workdir('referrers-store', insecureConf(plain.host));
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${join(w.dir, 'store')}"\n\n[[job]]\nname = "app"\nsource = "${plain.host}/${s.repo}"\ntags = ["1"]\n`,
    );
    const synced = await stowage(['sync', '-q', '--config', config], { env: w.env });
    expect(synced.code, synced.stderr).toBe(0);
    const out = join(w.dir, 'export.tar');
    const exported = await stowage(
      ['archives', 'export', '--config', config, `${plain.host}/${s.repo}:1`, '-o', out],
      {
        env: w.env,
      },
    );
    expect(exported.code, exported.stderr).toBe(0);
    const listed = JSON.parse((await run('tar', ['-xOf', out, 'index.json'])).stdout) as {
      manifests: { digest: string }[];
    };
    expect(listed.manifests.map((m) => m.digest)).toEqual([
      s.image,
      ...[s.sbom.digest, s.sbomSig.digest, s.imageSig.digest].sort(),
    ]);
    const check = await stowage(['verify', out], { env: w.env });
    expect(check.code, check.stdout).toBe(0);
  });

  it('says once what a docker-archive cannot hold, and leaves attachments out with --remove-signatures', async () => {
    const s = await signedImage('formats', { tagSchema: true });
    const w = await workdir('referrers-formats', insecureConf(plain.host));
    const docker = await stowage(
      ['pull', '-f', 'docker-archive', `${plain.host}/${s.repo}:1`, '-o', join(w.dir, 'd.tar')],
      {
        env: w.env,
      },
    );
    expect(docker.code, docker.stderr).toBe(0);
    expect(docker.stderr.match(/^note: /gm)).toHaveLength(1);
    expect(docker.stderr).toContain(
      '2 attachments (signatures, attestations, SBOMs) this format cannot hold',
    );
    const bare = join(w.dir, 'bare.tar');
    const r = await stowage(['pull', '-q', '--remove-signatures', `${plain.host}/${s.repo}:1`, '-o', bare], {
      env: w.env,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const listed = JSON.parse((await run('tar', ['-xOf', bare, 'index.json'])).stdout) as {
      manifests: unknown[];
    };
    expect(listed.manifests).toHaveLength(1);
  });

  it('are listed by inspect --referrers, from the registry and from an archive alike', async () => {
    const s = await signedImage('inspect', { tagSchema: true });
    const w = await workdir('referrers-inspect', insecureConf(plain.host));
    const expected = [
      { digest: s.sbom.digest, artifactType: 'application/spdx+json', subject: s.image },
      { digest: s.imageSig.digest, tag: tagFor(s.image, '.sig'), subject: s.image },
      { digest: s.sbomSig.digest, tag: tagFor(s.sbom.digest, '.sig'), subject: s.sbom.digest },
    ];
    const fromRegistry = await stowage(['inspect', '--referrers', `${plain.host}/${s.repo}:1`], {
      env: w.env,
    });
    expect(fromRegistry.code, fromRegistry.stderr).toBe(0);
    const listed = JSON.parse(fromRegistry.stdout);
    expect(listed.Digest).toBe(s.image);
    expect(listed.Referrers).toEqual(expected.map((e) => expect.objectContaining(e)));
    const tar = join(w.dir, 'x.tar');
    expect((await stowage(['pull', '-q', `${plain.host}/${s.repo}:1`, '-o', tar], { env: w.env })).code).toBe(
      0,
    );
    const fromArchive = JSON.parse((await stowage(['inspect', '--referrers', tar], { env: w.env })).stdout);
    expect(fromArchive.Referrers.map((r: { digest: string }) => r.digest).sort()).toEqual(
      expected.map((e) => e.digest).sort(),
    );
  });
});
