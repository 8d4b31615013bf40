/**
 * The registry served from the store, in process (app.request()): routes, names, auth and the spec's
 * status codes and headers. The real clients (skopeo, podman) pull from it in test/registry-serve.test.ts.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiToken } from '../api/auth.js';
import { tokenHash } from '../api/auth.js';
import type { Env } from '../api/shared.js';
import { MediaType } from '../image/mediatypes.js';
import { Store } from '../store/store.js';
import type { StoredVersion } from '../store/version.js';
import { registryApi } from './app.js';
import { servedName, storedName, versionTag } from './names.js';
import { RegistryTokens } from './tokens.js';

const REPO = '127.0.0.1:5000/team/app';
const SERVED = '127.0.0.1_5000/team/app';
const READER = 'stw_reader';
const WRITER = 'stw_writer_only';
const TOKENS: ApiToken[] = [
  { name: 'reader', sha256: tokenHash(READER), scopes: ['read'] },
  { name: 'writer', sha256: tokenHash(WRITER), scopes: ['push'] },
];

function doc(value: unknown, mediaType: string) {
  const bytes = Buffer.from(JSON.stringify(value));
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  return { descriptor: { mediaType, digest, size: bytes.length }, bytes };
}

let dir: string;
let store: Store;
const layer = Buffer.from('0123456789abcdef'.repeat(64));
const layerDigest = `sha256:${createHash('sha256').update(layer).digest('hex')}`;
let v1: StoredVersion;
let v2: StoredVersion;
let manifest2: ReturnType<typeof doc>;
let sbom: ReturnType<typeof doc>;
let sig: ReturnType<typeof doc>;

function image(label: string) {
  const config = doc({ architecture: 'amd64', os: 'linux', label }, MediaType.OciConfig);
  const manifest = doc(
    {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: config.descriptor,
      layers: [{ mediaType: MediaType.OciLayerGzip, digest: layerDigest, size: layer.length }],
    },
    MediaType.OciManifest,
  );
  return { config, manifest };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-distribution-'));
  store = await Store.open(join(dir, 'store'));
  await store.putBlob({ mediaType: MediaType.OciLayerGzip, digest: layerDigest, size: layer.length }, [
    layer,
  ]);
  const one = image('one');
  const two = image('two');
  manifest2 = two.manifest;
  for (const d of [one.config, one.manifest, two.config, two.manifest])
    await store.putDocument(d.descriptor, d.bytes);
  sbom = doc(
    {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      artifactType: 'application/spdx+json',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: layerDigest, size: 2 },
      layers: [],
      subject: two.manifest.descriptor,
      annotations: { 'org.example': 'sbom' },
    },
    MediaType.OciManifest,
  );
  sig = doc(
    {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: layerDigest, size: 2 },
      layers: [],
    },
    MediaType.OciManifest,
  );
  await store.putDocument(sbom.descriptor, sbom.bytes);
  await store.putDocument(sig.descriptor, sig.bytes);
  const base = { repository: REPO, tag: '1.4', source: `${REPO}:1.4`, platforms: ['linux/amd64'] };
  v1 = await store.addVersion({
    ...base,
    descriptor: one.manifest.descriptor,
    taken: '2026-03-01T00:00:00Z',
  });
  v2 = await store.addVersion({
    ...base,
    descriptor: two.manifest.descriptor,
    taken: '2026-04-01T00:00:00Z',
    referrers: [
      { descriptor: { ...sbom.descriptor, artifactType: 'application/spdx+json' } },
      { descriptor: sig.descriptor, tag: `${two.manifest.descriptor.digest.replace(':', '-')}.sig` },
    ],
  });
  for (const t of ['a', 'b', 'c']) {
    await store.addVersion({
      ...base,
      tag: t,
      descriptor: one.manifest.descriptor,
      taken: '2026-03-01T00:00:00Z',
    });
  }
  await store.addVersion({
    ...base,
    repository: 'docker.io/library/alpine',
    descriptor: one.manifest.descriptor,
    taken: '2026-03-01T00:00:00Z',
  });
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function gateway(opts: { anonymousPull?: boolean; key?: string } = {}) {
  const app = new Hono<Env>();
  app.route(
    '/',
    registryApi({
      store,
      rules: {
        tokens: TOKENS,
        registryTokens: new RegistryTokens(Buffer.from(opts.key ?? 'k'.repeat(64))),
        anonymousPull: opts.anonymousPull ?? false,
      },
    }),
  );
  return app;
}

const basic = (password: string) => `Basic ${Buffer.from(`anyone:${password}`).toString('base64')}`;

/** A bearer token from the token endpoint, as a client logs in and asks for a scope. */
async function bearer(app: Hono<Env>, scope: string, password = READER): Promise<string> {
  const res = await app.request(`/auth/token?service=stowage&scope=${encodeURIComponent(scope)}`, {
    headers: { authorization: basic(password) },
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { token: string; access_token: string; expires_in: number };
  expect(body.access_token).toBe(body.token);
  expect(body.expires_in).toBeGreaterThan(0);
  return body.token;
}

describe('names', () => {
  it("spells a host's port HOST_PORT and reads it back", () => {
    expect(servedName(REPO)).toBe(SERVED);
    expect(storedName(SERVED)).toBe(REPO);
    expect(servedName('docker.io/library/alpine')).toBe('docker.io/library/alpine');
    expect(storedName('docker.io/library/alpine')).toBe('docker.io/library/alpine');
    expect(versionTag('1.4', 'abcdefabcdef')).toBe('1.4--abcdefabcdef');
    expect(versionTag('x'.repeat(120), 'abcdefabcdef')).toBeUndefined();
  });
});

describe('auth', () => {
  it('challenges with the token endpoint, and lets a token from it in', async () => {
    const app = gateway();
    const res = await app.request('http://gw.test:8080/v2/');
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(
      'Bearer realm="http://gw.test:8080/auth/token",service="stowage"',
    );
    expect(((await res.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('UNAUTHORIZED');
    const token = await bearer(app, '');
    const base = await app.request('/v2/', { headers: { authorization: `Bearer ${token}` } });
    expect(base.status).toBe(200);
    expect(base.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  });

  it('asks for the repository scope, grants pull only, and sends a token for another repository back', async () => {
    const app = gateway();
    const path = `/v2/${SERVED}/manifests/1.4`;
    const bare = await app.request(path);
    expect(bare.headers.get('www-authenticate')).toContain(`scope="repository:${SERVED}:pull"`);
    const other = await bearer(app, 'repository:other/repo:pull');
    const refused = await app.request(path, { headers: { authorization: `Bearer ${other}` } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
    const pushAsked = await bearer(app, `repository:${SERVED}:pull,push`);
    const claims = JSON.parse(Buffer.from(pushAsked.split('.')[0]!, 'base64url').toString()) as {
      access: { actions: string[] }[];
    };
    expect(claims.access).toEqual([{ type: 'repository', name: SERVED, actions: ['pull'] }]);
    expect((await app.request(path, { headers: { authorization: `Bearer ${pushAsked}` } })).status).toBe(200);
  });

  it('takes an API token as Basic password or bearer; refuses a token without read and a foreign bearer', async () => {
    const app = gateway();
    const path = `/v2/${SERVED}/tags/list`;
    expect((await app.request(path, { headers: { authorization: basic(READER) } })).status).toBe(200);
    expect((await app.request(path, { headers: { authorization: `Bearer ${READER}` } })).status).toBe(200);
    const writer = await app.request(path, { headers: { authorization: basic(WRITER) } });
    expect(writer.status).toBe(403);
    expect(((await writer.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('DENIED');
    expect((await app.request(path, { headers: { authorization: basic('stw_wrong') } })).status).toBe(401);
    const elsewhere = await bearer(gateway({ key: 'other'.repeat(13) }), `repository:${SERVED}:pull`);
    expect((await app.request(path, { headers: { authorization: `Bearer ${elsewhere}` } })).status).toBe(401);
    const badLogin = await app.request('/auth/token', { headers: { authorization: basic('stw_wrong') } });
    expect(badLogin.status).toBe(401);
  });

  it('opens pulls to anyone only where anonymous-pull is set', async () => {
    expect((await gateway().request(`/v2/${SERVED}/tags/list`)).status).toBe(401);
    const open = gateway({ anonymousPull: true });
    expect((await open.request(`/v2/${SERVED}/tags/list`)).status).toBe(200);
    expect((await open.request('/auth/token?scope=repository:x/y:pull')).status).toBe(200);
  });
});

describe('content', () => {
  const app = () => gateway({ anonymousPull: true });

  it('serves the newest version by tag, every version by digest, an older one by TAG--ID', async () => {
    const byTag = await app().request(`/v2/${SERVED}/manifests/1.4`, {
      headers: { accept: MediaType.OciManifest },
    });
    expect(byTag.status).toBe(200);
    expect(byTag.headers.get('content-type')).toBe(MediaType.OciManifest);
    expect(byTag.headers.get('docker-content-digest')).toBe(v2.descriptor.digest);
    const bytes = Buffer.from(await byTag.arrayBuffer());
    expect(byTag.headers.get('content-length')).toBe(String(bytes.length));
    expect(`sha256:${createHash('sha256').update(bytes).digest('hex')}`).toBe(v2.descriptor.digest);
    const old = await app().request(`/v2/${SERVED}/manifests/${versionTag('1.4', v1.id)}`);
    expect(old.headers.get('docker-content-digest')).toBe(v1.descriptor.digest);
    const byDigest = await app().request(`/v2/${SERVED}/manifests/${v1.descriptor.digest}`, {
      method: 'HEAD',
    });
    expect(byDigest.status).toBe(200);
    expect(byDigest.headers.get('docker-content-digest')).toBe(v1.descriptor.digest);
    expect(await byDigest.text()).toBe('');
    // A version id of another tag, or one that is not there: unknown.
    expect((await app().request(`/v2/${SERVED}/manifests/a--${v1.id}`)).status).toBe(404);
    const missing = await app().request(`/v2/${SERVED}/manifests/9.9`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe(
      'MANIFEST_UNKNOWN',
    );
    // A layer's digest is not a manifest.
    expect((await app().request(`/v2/${SERVED}/manifests/${layerDigest}`)).status).toBe(404);
  });

  it('refuses a manifest type the Accept header leaves out', async () => {
    const res = await app().request(`/v2/${SERVED}/manifests/1.4`, {
      headers: { accept: MediaType.DockerManifest },
    });
    expect(res.status).toBe(404);
    const any = await app().request(`/v2/${SERVED}/manifests/1.4`, { headers: { accept: '*/*' } });
    expect(any.status).toBe(200);
  });

  it('serves blobs whole and by Range, 416 outside them', async () => {
    const whole = await app().request(`/v2/${SERVED}/blobs/${layerDigest}`);
    expect(whole.status).toBe(200);
    expect(Buffer.from(await whole.arrayBuffer()).equals(layer)).toBe(true);
    expect(whole.headers.get('docker-content-digest')).toBe(layerDigest);
    const part = await app().request(`/v2/${SERVED}/blobs/${layerDigest}`, {
      headers: { range: 'bytes=10-19' },
    });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-19/${layer.length}`);
    expect(await part.text()).toBe(layer.subarray(10, 20).toString());
    const past = await app().request(`/v2/${SERVED}/blobs/${layerDigest}`, {
      headers: { range: `bytes=${layer.length}-` },
    });
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${layer.length}`);
    const head = await app().request(`/v2/${SERVED}/blobs/${layerDigest}`, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe(String(layer.length));
    const unknown = await app().request(`/v2/${SERVED}/blobs/sha256:${'0'.repeat(64)}`);
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('BLOB_UNKNOWN');
    expect((await app().request(`/v2/${SERVED}/blobs/md5:abc`)).status).toBe(400);
  });

  it('lists tags and the catalog a page at a time, with Link', async () => {
    const all = await app().request(`/v2/${SERVED}/tags/list`);
    expect(await all.json()).toEqual({ name: SERVED, tags: ['1.4', 'a', 'b', 'c'] });
    const first = await app().request(`/v2/${SERVED}/tags/list?n=2`);
    expect(await first.json()).toEqual({ name: SERVED, tags: ['1.4', 'a'] });
    expect(first.headers.get('link')).toBe(`</v2/${SERVED}/tags/list?n=2&last=a>; rel="next"`);
    const next = await app().request(`/v2/${SERVED}/tags/list?n=2&last=a`);
    expect(await next.json()).toEqual({ name: SERVED, tags: ['b', 'c'] });
    expect(next.headers.get('link')).toBeNull();
    expect((await app().request(`/v2/${SERVED}/tags/list?n=x`)).status).toBe(400);
    const catalog = await app().request('/v2/_catalog');
    expect(await catalog.json()).toEqual({
      repositories: ['127.0.0.1_5000/team/app', 'docker.io/library/alpine'],
    });
    const page = await app().request('/v2/_catalog?n=1');
    expect(page.headers.get('link')).toBe(
      `</v2/_catalog?n=1&last=${encodeURIComponent(SERVED)}>; rel="next"`,
    );
    const unknown = await app().request('/v2/nobody/here/tags/list');
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('NAME_UNKNOWN');
    expect((await app().request('/v2/Not:A/name/tags/list')).status).toBe(400);
  });

  it('answers referrers, filtered by artifactType, and cosign tags', async () => {
    const res = await app().request(`/v2/${SERVED}/referrers/${manifest2.descriptor.digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(MediaType.OciIndex);
    const index = (await res.json()) as {
      manifests: { digest: string; artifactType?: string; annotations?: object }[];
    };
    expect(index.manifests.map((m) => m.digest)).toEqual([sbom.descriptor.digest, sig.descriptor.digest]);
    expect(index.manifests[0]).toMatchObject({
      artifactType: 'application/spdx+json',
      annotations: { 'org.example': 'sbom' },
    });
    const filtered = await app().request(
      `/v2/${SERVED}/referrers/${manifest2.descriptor.digest}?artifactType=application/spdx+json`,
    );
    expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
    expect(((await filtered.json()) as { manifests: unknown[] }).manifests).toHaveLength(1);
    // Nothing refers to it, or the repository holds nothing: an empty index, as the spec says, not a 404.
    const empty = await app().request(`/v2/nobody/here/referrers/${v1.descriptor.digest}`);
    expect(empty.status).toBe(200);
    expect(await empty.json()).toEqual({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] });
    const none = await app().request(`/v2/${SERVED}/referrers/${v1.descriptor.digest}`);
    expect(((await none.json()) as { manifests: unknown[] }).manifests).toEqual([]);
    const cosignTag = `${manifest2.descriptor.digest.replace(':', '-')}.sig`;
    const tagged = await app().request(`/v2/${SERVED}/manifests/${cosignTag}`);
    expect(tagged.headers.get('docker-content-digest')).toBe(sig.descriptor.digest);
  });

  it('answers pushes, mounts and deletes 405 UNSUPPORTED, before asking who is there', async () => {
    for (const [method, path] of [
      ['POST', `/v2/${SERVED}/blobs/uploads/`],
      ['POST', `/v2/${SERVED}/blobs/uploads/?mount=${layerDigest}&from=x/y`],
      ['PUT', `/v2/${SERVED}/manifests/1.5`],
      ['DELETE', `/v2/${SERVED}/manifests/${v1.descriptor.digest}`],
      ['DELETE', `/v2/${SERVED}/blobs/${layerDigest}`],
    ] as const) {
      const res = await gateway().request(path, { method });
      expect(res.status, `${method} ${path}`).toBe(405);
      expect(((await res.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('UNSUPPORTED');
    }
  });
});
