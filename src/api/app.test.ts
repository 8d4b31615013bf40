/**
 * The routes in process, with `app.request()`: a real store on a temporary directory, an in-memory job
 * manager whose runners are fakes, no socket and no registry. Seconds, not minutes, to check a change
 * to the API's rules (tokens and scopes, health, the error shapes, what a response may show).
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { AMD64, FakeSource } from '../../test/harness/fake-source.js';
import { inProcessEngine } from '../../test/harness/in-process.js';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { copy } from '../engine/fan-out.js';
import type { ImageSource } from '../engine/source.js';
import { sha256Digest } from '../image/digest.js';
import { MediaType } from '../image/mediatypes.js';
import { pathRedactor } from '../service/engine.js';
import { createMetrics } from '../service/metrics.js';
import type { Store } from '../store/store.js';
import { StoreDestination } from '../transports/store/destination.js';
import { createApp } from './app.js';
import { tokenHash } from './auth.js';

const temp = tempDirs();
const TOKENS = {
  reader: 'stw_reader-in-process-0123456789',
  pusher: 'stw_pusher-in-process-0123456789',
  puller: 'stw_puller-in-process-0123456789',
};

async function app(opts: { ready?: boolean; policy?: string } = {}) {
  const dir = await temp('stowage-app-');
  const { engine, store, jobs, events } = await inProcessEngine(dir, { policy: opts.policy });
  const redact = pathRedactor({ store: join(dir, 'store'), state: join(dir, 'state'), policy: opts.policy });
  engine.redact = redact;
  const a = createApp({
    engine,
    jobs,
    events,
    metrics: createMetrics(engine, jobs),
    tokens: [
      { name: 'reader', sha256: tokenHash(TOKENS.reader), scopes: ['read'] },
      { name: 'pusher', sha256: tokenHash(TOKENS.pusher), scopes: ['read', 'push'] },
      { name: 'puller', sha256: tokenHash(TOKENS.puller), scopes: ['read', 'pull'] },
    ],
    logger: pino({ level: 'silent' }),
    version: 'test',
    ready: () => opts.ready ?? true,
    maxUpload: 1024 * 1024,
    redact,
  });
  return { a, dir, store, events };
}

/** One small image put into the store by the engine, from a source in memory. */
async function storeImage(store: Store): Promise<string> {
  const blobs = new Map<string, Buffer>();
  const put = (bytes: Buffer, mediaType: string) => {
    const digest = sha256Digest(bytes);
    blobs.set(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const config = put(Buffer.from('{"os":"linux","architecture":"amd64"}'), MediaType.OciConfig);
  const layer = put(Buffer.alloc(3000, 1), MediaType.OciLayerGzip);
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [layer] }),
  );
  const source: ImageSource = {
    description: 'memory',
    getManifest: async () => ({
      bytes: manifest,
      digest: sha256Digest(manifest),
      mediaType: MediaType.OciManifest,
    }),
    getBlob: async (d) => [blobs.get(d.digest)!] as unknown as AsyncIterable<Uint8Array>,
    close: async () => {},
  };
  return storeVersion(store, source, 'latest');
}

/** The image `reference` of `source` stored by the engine as 127.0.0.1:5000/team/app:1.0; its version id. */
async function storeVersion(store: Store, source: ImageSource, reference: string): Promise<string> {
  const labels = [{ repository: '127.0.0.1:5000/team/app', tag: '1.0', source: 'memory' }];
  const r = await copy(
    [{ source, reference, names: { repoTags: [], annotations: {} }, label: 'app' }],
    new StoreDestination(store, { labels }),
    { platforms: [AMD64] },
    { concurrency: 2 },
  );
  return r.committed![0]!.id;
}

const as = (role: keyof typeof TOKENS, init: RequestInit = {}): RequestInit => ({
  ...init,
  headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${TOKENS[role]}` },
});

describe('the API in process', () => {
  it('answers health anonymously, readiness as the server says, and nothing else without a token', async () => {
    const { a } = await app({ ready: false });
    expect((await a.request('/healthz')).status).toBe(200);
    const notReady = await a.request('/readyz');
    expect(notReady.status).toBe(503);
    // The mode is said either way: a local store and jobs in this process, without [store.s3].
    expect(await notReady.json()).toEqual({
      status: 'not ready',
      mode: { store: 'local', jobs: 'in-process' },
    });
    const res = await a.request('/v1/jobs');
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toContain('Bearer');
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');
    expect((await a.request('/v1/jobs', as('reader'))).status).toBe(200);
  });

  it('refuses a scope the token lacks with 403, naming it', async () => {
    const { a } = await app();
    const res = await a.request(
      '/v1/pushes',
      as('reader', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ archive: 'x', destination: '127.0.0.1:5000/x/y' }),
      }),
    );
    expect(res.status).toBe(403);
    expect(JSON.stringify(await res.json())).toContain('push');
  });

  it('says what to send for a body that is not JSON (415) and which field is wrong (400)', async () => {
    const { a } = await app();
    const text = await a.request(
      '/v1/pushes',
      as('pusher', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' }),
    );
    expect(text.status).toBe(415);
    expect(((await text.json()) as { error: { message: string } }).error.message).toContain(
      'content-type: application/json',
    );
    const bad = await a.request(
      '/v1/pushes',
      as('pusher', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"archive": 5}',
      }),
    );
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('archive');
  });

  it('answers 422 for an upload that is not an archive, naming no server path, leaving no spool', async () => {
    const { a, dir } = await app();
    const res = await a.request(
      '/v1/archives?name=127.0.0.1:5000/x/y:1',
      as('pusher', {
        method: 'POST',
        headers: { 'content-type': 'application/x-tar' },
        body: Buffer.alloc(4096, 7),
      }),
    );
    const body = await res.text();
    expect(res.status, body).toBe(422);
    expect(JSON.parse(body).error.code).toBe('INVALID_ARCHIVE');
    expect(body).not.toContain(dir);
    expect(body).toContain('the uploaded archive');
  });

  it('pages the archives with ?limit= and ?after=, a Link header to the next page, and filters', async () => {
    const { a, store } = await app();
    const base = {
      repository: '127.0.0.1:5000/team/app',
      descriptor: { mediaType: MediaType.OciManifest, digest: `sha256:${'a'.repeat(64)}`, size: 10 },
      source: 'memory',
      taken: '2026-12-01T00:00:00.000Z',
      platforms: [],
    };
    await store.update(() =>
      Array.from({ length: 7 }, (_, i) => ({ ...base, id: `v${i}`, tag: i < 5 ? `t${i}` : 't0' })),
    );
    const seen: string[] = [];
    let url: string | undefined = '/v1/archives?limit=3';
    let pages = 0;
    while (url) {
      const res = await a.request(url, as('reader'));
      expect(res.status).toBe(200);
      const body = (await res.json()) as { archives: { id: string; latest: boolean }[]; next?: string };
      seen.push(...body.archives.map((x) => `${x.id}${x.latest ? '*' : ''}`));
      const link = res.headers.get('link');
      expect(Boolean(link)).toBe(body.next !== undefined);
      url = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : undefined;
      pages++;
    }
    expect(pages).toBe(3);
    // t0's newest is v6: the earlier v0 and v5 are not.
    expect(seen).toEqual(['v0', 'v1*', 'v2*', 'v3*', 'v4*', 'v5', 'v6*']);
    const t0 = (await (await a.request('/v1/archives?tag=t0&latest=false', as('reader'))).json()) as {
      archives: { id: string }[];
    };
    expect(t0.archives.map((x) => x.id)).toEqual(['v0', 'v5']);
    expect((await a.request('/v1/archives?limit=0', as('reader'))).status).toBe(400);
    const gone = await a.request('/v1/archives?after=nope', as('reader'));
    expect(gone.status).toBe(400);
    expect(await gone.text()).toContain('start again from the first page');
  });

  it('lists no archives in an empty store, and 404s an unknown one and an unknown route', async () => {
    const { a } = await app();
    expect(await (await a.request('/v1/archives', as('reader'))).json()).toMatchObject({ archives: [] });
    expect((await a.request('/v1/archives/nope', as('reader'))).status).toBe(404);
    const none = await a.request('/v1/nothing-here', as('reader'));
    expect(none.status).toBe(404);
    const said = ((await none.json()) as { error: { message: string } }).error.message;
    // It points to the document and says what opens it (a token of read scope, or a console session).
    expect(said).toContain('GET /openapi.json (with an API token of read scope)');
    expect(said).toContain('/ui/api');
  });

  it('tells a token that is not valid from none, and documents every resource in one OpenAPI document', async () => {
    const { a } = await app();
    const bad = await a.request('/v1/jobs', { headers: { authorization: 'Bearer stw_not-a-token-at-all' } });
    expect(bad.status).toBe(401);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toBe(
      'the API token is not valid',
    );
    expect((await a.request('/openapi.json')).status).toBe(401);
    const doc = (await (await a.request('/openapi.json', as('reader'))).json()) as {
      paths: Record<string, unknown>;
    };
    for (const path of [
      '/healthz',
      '/v1/pulls',
      '/v1/jobs/{id}/events',
      '/v1/archives/{id}/content',
      '/v1/tags',
    ])
      expect(Object.keys(doc.paths)).toContain(path);
  });

  it('downloads a stored version whole, by range, and conditionally (ETag, If-Range, 304, 416)', async () => {
    const { a, store } = await app();
    const id = await storeImage(store);
    const url = `/v1/archives/${id}/content`;
    const whole = await a.request(url, as('reader'));
    expect(whole.status).toBe(200);
    const bytes = Buffer.from(await whole.arrayBuffer());
    const etag = whole.headers.get('etag')!;
    expect(etag).toBe(`"sha256:${sha256Digest(bytes).slice(7)}"`);
    expect(Number(whole.headers.get('content-length'))).toBe(bytes.length);
    const part = await a.request(url, as('reader', { headers: { range: 'bytes=512-1535' } }));
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 512-1535/${bytes.length}`);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(bytes.subarray(512, 1536));
    const stale = await a.request(
      url,
      as('reader', { headers: { range: 'bytes=0-9', 'if-range': '"sha256:old"' } }),
    );
    expect(stale.status).toBe(200);
    expect((await stale.arrayBuffer()).byteLength).toBe(bytes.length);
    expect((await a.request(url, as('reader', { headers: { 'if-none-match': etag } }))).status).toBe(304);
    const past = await a.request(url, as('reader', { headers: { range: `bytes=${bytes.length}-` } }));
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${bytes.length}`);
  });

  it('lists what a stored version keeps attached to it', async () => {
    const { a, store } = await app();
    const src = new FakeSource();
    const image = src.image('1.0', [src.blob('layer')]);
    const sbom = src.attach(image, 'application/spdx+json', '{}');
    const res = await a.request(`/v1/archives/${await storeVersion(store, src, '1.0')}`, as('reader'));
    expect(res.status).toBe(200);
    expect(((await res.json()) as { referrers: unknown }).referrers).toEqual([
      { digest: sbom.digest, artifactType: 'application/spdx+json', size: sbom.size },
    ]);
  });

  it('checks the compression a push asks for before making a job: 400 naming the range or the choices', async () => {
    const { a, store } = await app();
    const src = new FakeSource();
    src.image('1.0', [src.blob('layer')]);
    const archive = await storeVersion(store, src, '1.0');
    const push = (body: object) =>
      a.request(
        '/v1/pushes',
        as('pusher', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ archive, destination: '127.0.0.1:5000/team/app:1.0', ...body }),
        }),
      );
    const level = await push({ compress: 'gzip', compressLevel: 12 });
    expect(level.status).toBe(400);
    expect(((await level.json()) as { error: { message: string } }).error.message).toContain('use 1-9');
    const format = await push({ compress: 'brotli' });
    expect(format.status).toBe(400);
    expect(((await format.json()) as { error: { message: string } }).error.message).toContain('compress');
    const none = await push({ compress: 'none', compressLevel: 3 });
    expect(none.status).toBe(400);
  });

  it('answers 403 to a pull the trust policy rejects outright, before any job', async () => {
    const dir = await temp('stowage-policy-');
    const policy = join(dir, 'policy.json');
    await writeFile(
      policy,
      JSON.stringify({
        default: [{ type: 'insecureAcceptAnything' }],
        transports: { docker: { '127.0.0.1:5000/untrusted': [{ type: 'reject' }] } },
      }),
    );
    const { a, events } = await app({ policy });
    const pull = (ref: string) =>
      a.request(
        '/v1/pulls',
        as('puller', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ ref }),
        }),
      );
    const refused = await pull('127.0.0.1:5000/untrusted/app:1');
    expect(refused.status).toBe(403);
    const body = (await refused.json()) as { error: { code: string; message: string } };
    expect(body.error.code, body.error.message).toBe('POLICY_REJECTED');
    expect(body.error.message).toContain('127.0.0.1:5000/untrusted/app:1');
    expect(body.error.message).not.toContain(dir);
    // Other systems hear of the refusal: an event, its reason without the policy's path.
    await events.flushed();
    const listed = await a.request('/v1/events?type=signature', as('reader'));
    const { events: got } = (await listed.json()) as {
      events: { type: string; subject: string; source: string; data: { reason: string; where: string } }[];
    };
    expect(got.map((e) => [e.type, e.subject, e.source, e.data.where])).toEqual([
      ['io.stowage.signature.refused', '127.0.0.1:5000/untrusted/app:1', '/stowage/api', 'pull'],
    ]);
    expect(got[0]!.data.reason).not.toContain(dir);
  });

  it('names the trusted key that verifies a signature a version keeps', async () => {
    const dir = await temp('stowage-signer-');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const policy = join(dir, 'policy.json');
    const keyData = Buffer.from(publicKey.export({ type: 'spki', format: 'pem' }).toString()).toString(
      'base64',
    );
    await writeFile(
      policy,
      JSON.stringify({
        default: [{ type: 'sigstoreSigned', keyData, signedIdentity: { type: 'matchRepository' } }],
      }),
    );
    const { a, store } = await app({ policy });
    const src = new FakeSource();
    const image = src.image('1.0', [src.blob('layer')]);
    // A cosign signature of the image: its payload signed with the key, under sha256-HEX.sig.
    const payload = Buffer.from(
      JSON.stringify({
        critical: {
          identity: { 'docker-reference': '127.0.0.1:5000/team/app' },
          image: { 'docker-manifest-digest': image.digest },
          type: 'cosign container image signature',
        },
        optional: null,
      }),
    );
    const layer = src.blob(payload, 'application/vnd.dev.cosign.simplesigning.v1+json');
    const config = src.blob('{}', 'application/vnd.oci.empty.v1+json');
    const signature = sign('sha256', payload, privateKey).toString('base64');
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config,
        layers: [{ ...layer, annotations: { 'dev.cosignproject.cosign/signature': signature } }],
      }),
    );
    const sigDigest = sha256Digest(manifest);
    src.docs.set(sigDigest, { bytes: manifest, mediaType: MediaType.OciManifest });
    src.attached.set(image.digest, [
      {
        descriptor: { mediaType: MediaType.OciManifest, digest: sigDigest, size: manifest.length },
        tag: `${image.digest.replace(':', '-')}.sig`,
      },
    ]);
    const res = await a.request(`/v1/archives/${await storeVersion(store, src, '1.0')}`, as('reader'));
    const body = (await res.json()) as { referrers: { digest: string; signer?: string }[] };
    expect(body.referrers).toEqual([expect.objectContaining({ digest: sigDigest, signer: 'keyData 1' })]);
  });
});

describe('events and webhooks', () => {
  it('lists events after a seq and by type, streams new ones, and shows webhooks and their deliveries', async () => {
    const { a, events } = await app();
    events.publish({
      type: 'io.stowage.version.stored',
      source: '/stowage/jobs/a',
      subject: 'r:1',
      data: {},
    });
    events.publish({ type: 'io.stowage.sync.failed', source: '/stowage/jobs/a', subject: 'a', data: {} });
    await events.flushed();
    const list = async (q: string) =>
      (
        (await (await a.request(`/v1/events${q}`, as('reader'))).json()) as {
          events: { seq: number; type: string }[];
        }
      ).events;
    expect((await list('')).map((e) => e.seq)).toEqual([1, 2]);
    expect((await list('?after=1')).map((e) => e.type)).toEqual(['io.stowage.sync.failed']);
    expect((await list('?type=version')).map((e) => e.seq)).toEqual([1]);
    expect((await a.request('/v1/events')).status).toBe(401);

    // The stream: new events only (none before it opened), the seq as the SSE id, the type as its name.
    const res = await a.request('/v1/events/stream?type=version', as('reader'));
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const reader = res.body!.getReader();
    events.publish({ type: 'io.stowage.sync.finished', source: '/stowage/jobs/b', data: {} });
    events.publish({
      type: 'io.stowage.version.stored',
      source: '/stowage/jobs/b',
      subject: 'r:2',
      data: {},
    });
    let text = '';
    while (!text.includes('id: 4\n')) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text).toMatch(/event: io\.stowage\.version\.stored\ndata: \{.*"subject":"r:2".*\}\nid: 4\n/);
    expect(text).not.toContain('r:1');
    expect(text).not.toContain('sync.finished');

    const hooks = (await (await a.request('/v1/webhooks', as('reader'))).json()) as { webhooks: unknown[] };
    expect(hooks.webhooks).toEqual([]);
    const none = await a.request('/v1/webhooks/nope/deliveries', as('reader'));
    expect(none.status).toBe(404);
    expect(((await none.json()) as { error: { message: string } }).error.message).toContain(
      'no webhook "nope"',
    );
    const retry = await a.request('/v1/webhooks/nope/deliveries/1/retry', as('reader', { method: 'POST' }));
    expect(retry.status).toBe(403);
  });
});
