/**
 * The routes in process, with `app.request()`: a real store on a temporary directory, an in-memory job
 * manager whose runners are fakes, no socket and no registry. Seconds, not minutes, to check a change
 * to the API's rules (tokens and scopes, health, the error shapes, what a response may show).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { parseStowageConfig } from '../config/stowage.js';
import { Context } from '../registry/context.js';
import { JobManager } from '../service/jobs.js';
import { createMetrics } from '../service/metrics.js';
import { type Engine, pathRedactor } from '../service/operations.js';
import { Store } from '../store/store.js';
import { createApp } from './app.js';
import { tokenHash } from './auth.js';

const temp = tempDirs();
const TOKENS = { reader: 'stw_reader-in-process-0123456789', pusher: 'stw_pusher-in-process-0123456789' };

async function app(opts: { ready?: boolean } = {}) {
  const dir = await temp('stowage-app-');
  const conf = join(dir, 'registries.conf');
  await writeFile(conf, '');
  const store = await Store.open(join(dir, 'store'));
  const config = parseStowageConfig(
    `[store]\npath = "${join(dir, 'store')}"\n`,
    join(dir, 'stowage.toml'),
    {},
  );
  const ctx = await Context.create({ registriesConf: conf, env: {} });
  const engine: Engine = {
    ctx,
    store,
    config,
    tmpDir: join(dir, 'state', 'tmp'),
    cacheDir: join(dir, 'state', 'cache'),
    counters: { bytesPulled: 0, bytesPushed: 0, blobCacheHits: 0, blobCacheMisses: 0 },
  };
  const never = async () => {
    throw new Error('no job runs in these tests');
  };
  const jobs = new JobManager({
    concurrency: 1,
    maxQueued: 1,
    keep: 10,
    runners: { pull: never, push: never, sync: never },
  });
  const redact = pathRedactor({ store: join(dir, 'store'), state: join(dir, 'state') });
  const a = createApp({
    engine,
    jobs,
    metrics: createMetrics(engine, jobs),
    tokens: [
      { name: 'reader', sha256: tokenHash(TOKENS.reader), scopes: ['read'] },
      { name: 'pusher', sha256: tokenHash(TOKENS.pusher), scopes: ['read', 'push'] },
    ],
    logger: pino({ level: 'silent' }),
    version: 'test',
    ready: () => opts.ready ?? true,
    maxUpload: 1024 * 1024,
    redact,
  });
  return { a, dir };
}

const as = (role: keyof typeof TOKENS, init: RequestInit = {}): RequestInit => ({
  ...init,
  headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${TOKENS[role]}` },
});

describe('the API in process', () => {
  it('answers health anonymously, readiness as the server says, and nothing else without a token', async () => {
    const { a } = await app({ ready: false });
    expect((await a.request('/healthz')).status).toBe(200);
    expect((await a.request('/readyz')).status).toBe(503);
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

  it('lists no archives in an empty store, and 404s an unknown one and an unknown route', async () => {
    const { a } = await app();
    expect(await (await a.request('/v1/archives', as('reader'))).json()).toMatchObject({ archives: [] });
    expect((await a.request('/v1/archives/nope', as('reader'))).status).toBe(404);
    const none = await a.request('/v1/nothing-here', as('reader'));
    expect(none.status).toBe(404);
    expect(((await none.json()) as { error: { message: string } }).error.message).toContain('/openapi.json');
  });
});
