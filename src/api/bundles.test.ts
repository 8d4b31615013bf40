/**
 * The bundle routes in process (`app.request()`): a real store and a real bundle runner, no socket.
 * Scopes, a bad base refused as a 400, the job's result, the history and the ranged download.
 */
import { createHash } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { inProcessEngine } from '../../test/harness/in-process.js';
import { storeImage } from '../../test/harness/stored-image.js';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import type { BundleRequest } from '../service/bundles.js';
import { runBundle } from '../service/bundles.js';
import { createMetrics } from '../service/metrics.js';
import { createApp } from './app.js';
import { tokenHash } from './auth.js';

const temp = tempDirs();
const READER = 'stw_reader-bundles-0123456789ab';
const OPERATOR = 'stw_operator-bundles-0123456789';

async function app() {
  const dir = await temp('stowage-bundles-api-');
  const { engine, store, jobs, events } = await inProcessEngine(dir, {
    maxQueued: 4,
    runners: (engine) => ({ bundle: (run) => runBundle(engine, run.job.request as BundleRequest, run) }),
  });
  await storeImage(store, {
    repository: '127.0.0.1:5000/team/app',
    tag: '1.0',
    layers: [Buffer.alloc(20_000, 3)],
    taken: '2026-01-01T00:00:00.000Z',
  });
  const a = createApp({
    engine,
    jobs,
    events,
    metrics: createMetrics(engine, jobs),
    tokens: [
      { name: 'reader', sha256: tokenHash(READER), scopes: ['read'] },
      { name: 'operator', sha256: tokenHash(OPERATOR), scopes: ['read', 'sync'] },
    ],
    logger: pino({ level: 'silent' }),
    version: 'test',
    ready: () => true,
    maxUpload: 1024,
    redact: (t) => t,
  });
  const req = (token: string, path: string, init: RequestInit = {}) =>
    a.request(path, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) } });
  return { req };
}

describe('POST /v1/bundles', () => {
  it('makes a bundle as a job, lists it, and serves its file with ranges', async () => {
    const { req } = await app();
    const post = (token: string, body: unknown) =>
      req(token, '/v1/bundles', {
        method: 'POST',
        body: JSON.stringify(body),
        headers: { 'content-type': 'application/json' },
      });
    expect((await post(READER, {})).status).toBe(403);
    expect((await post(OPERATOR, { since: '../etc/passwd' })).status).toBe(400);
    expect((await post(OPERATOR, { jobs: ['nope'] })).status).toBe(400);
    const started = await post(OPERATOR, { versions: 'newest' });
    expect(started.status).toBe(202);
    const { id } = (await started.json()) as { id: string };
    let job: {
      state: string;
      result?: { id: string; sha256: string; size: number };
      links: Record<string, string>;
    };
    for (;;) {
      job = (await (await req(READER, `/v1/jobs/${id}`)).json()) as typeof job;
      if (job.state !== 'queued' && job.state !== 'running') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(job.state).toBe('succeeded');
    const short = job.result!.id.slice(7, 19);
    expect(job.links.content).toBe(`/v1/bundles/${short}/content`);

    const list = (await (await req(READER, '/v1/bundles')).json()) as {
      bundles: { id: string; kind: string; links: Record<string, string> }[];
    };
    expect(list.bundles.map((b) => [b.id, b.kind, b.links.content])).toEqual([
      [job.result!.id, 'created', `/v1/bundles/${short}/content`],
    ]);
    const whole = await req(READER, `/v1/bundles/${short}/content`);
    expect(whole.status).toBe(200);
    const bytes = Buffer.from(await whole.arrayBuffer());
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(job.result!.sha256);
    const part = await req(READER, `/v1/bundles/${short}/content`, { headers: { range: 'bytes=512-1535' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 512-1535/${job.result!.size}`);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(bytes.subarray(512, 1536));
    expect((await req(READER, '/v1/bundles/0123456789ab/content')).status).toBe(404);
  });
});
