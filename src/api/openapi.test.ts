/**
 * The API as a contract: the OpenAPI document the service serves is openapi.json at the repository root
 * (committed), the typed client's types are generated from it (src/api-client/openapi.ts), and both fail
 * here when they drift: `UPDATE_OPENAPI=1 npx vitest run src/api/openapi.test.ts` writes them anew.
 * The document names every operation, types every job by its kind, and documents the headers and the
 * statuses the routes answer. The typed client is then used against the app, in process.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { inProcessEngine } from '../../test/harness/in-process.js';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { stowageClient } from '../api-client/client.js';
import { generateTypes, type OpenApiDocument } from '../api-client/generate.js';
import { createMetrics } from '../service/metrics.js';
import { createApp } from './app.js';
import { tokenHash } from './auth.js';

const ROOT = join(import.meta.dirname, '../..');
const temp = tempDirs();
const TOKEN = 'stw_openapi-test-token-0123456789';
const UPDATE = process.env.UPDATE_OPENAPI === '1';

async function app() {
  const { engine, jobs, events } = await inProcessEngine(await temp('stowage-openapi-'), { maxQueued: 5 });
  const version = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')).version as string;
  return createApp({
    engine,
    jobs,
    events,
    metrics: createMetrics(engine, jobs),
    tokens: [{ name: 'admin', sha256: tokenHash(TOKEN), scopes: ['admin'] }],
    logger: pino({ level: 'silent' }),
    version,
    ready: () => true,
    maxUpload: 1024,
  });
}

async function served(): Promise<OpenApiDocument & Record<string, unknown>> {
  const res = await (await app()).request('/openapi.json', { headers: { authorization: `Bearer ${TOKEN}` } });
  expect(res.status).toBe(200);
  return (await res.json()) as OpenApiDocument & Record<string, unknown>;
}

describe('the OpenAPI contract', () => {
  it('is openapi.json, committed, and the typed client is generated from it', async () => {
    const doc = await served();
    const text = `${JSON.stringify(doc, null, 2)}\n`;
    const types = generateTypes(doc);
    if (UPDATE) {
      await writeFile(join(ROOT, 'openapi.json'), text);
      await writeFile(join(ROOT, 'src/api-client/openapi.ts'), types);
    }
    expect(
      await readFile(join(ROOT, 'openapi.json'), 'utf8'),
      'run UPDATE_OPENAPI=1 to refresh openapi.json',
    ).toBe(text);
    expect(
      await readFile(join(ROOT, 'src/api-client/openapi.ts'), 'utf8'),
      'regenerate the client types',
    ).toBe(types);
  });

  it('names every operation, types every job by kind, and documents dates, headers and statuses', async () => {
    const doc = (await served()) as unknown as {
      servers: { url: string }[];
      paths: Record<
        string,
        Record<
          string,
          {
            operationId?: string;
            tags?: string[];
            parameters?: { name: string; in: string }[];
            responses: Record<string, { headers?: Record<string, unknown> }>;
          }
        >
      >;
      components: {
        schemas: Record<
          string,
          { properties?: Record<string, { format?: string }>; oneOf?: unknown[]; anyOf?: unknown[] }
        >;
      };
    };
    // The address that served it first (relative), then the default one.
    expect(doc.servers.map((x) => x.url)).toEqual(['/', 'http://127.0.0.1:8080']);
    const ops = Object.entries(doc.paths).flatMap(([path, item]) =>
      Object.entries(item).map(([m, op]) => ({ path, m, op })),
    );
    expect(ops.length).toBeGreaterThanOrEqual(18);
    const ids = ops.map((o) => o.op.operationId);
    expect(ids.every((id) => typeof id === 'string' && /^[a-z][A-Za-z]+$/.test(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ops.every((o) => (o.op.tags ?? []).length === 1)).toBe(true);
    // Jobs are typed by kind: their requests and results are not "unknown".
    for (const name of [
      'PullJob',
      'PushJob',
      'SyncJob',
      'PullJobRequest',
      'PullJobResult',
      'SyncJobResult',
    ]) {
      expect(doc.components.schemas[name], name).toBeDefined();
    }
    expect(doc.components.schemas.PullJob!.properties!.createdAt!.format).toBe('date-time');
    const content = doc.paths['/v1/archives/{id}/content']!.get!;
    expect(
      content
        .parameters!.filter((p) => p.in === 'header')
        .map((p) => p.name)
        .sort(),
    ).toEqual(['if-none-match', 'if-range', 'range']);
    expect(Object.keys(content.responses['200']!.headers!)).toEqual(
      expect.arrayContaining(['ETag', 'Accept-Ranges', 'X-Content-Sha256']),
    );
    expect(Object.keys(content.responses['206']!.headers!)).toContain('Content-Range');
    expect(doc.paths['/v1/jobs/{id}/events']!.get!.parameters!.map((p) => p.name)).toContain('last-event-id');
    for (const route of ['/v1/pulls', '/v1/pushes', '/v1/syncs']) {
      expect(Object.keys(doc.paths[route]!.post!.responses)).toEqual(
        expect.arrayContaining(['202', '429', '502']),
      );
    }
    expect(Object.keys(doc.paths['/v1/archives']!.post!.responses)).toEqual(
      expect.arrayContaining(['413', '422']),
    );
  });

  it('is what the typed client speaks: answers and errors come back typed', async () => {
    const a = await app();
    const api = stowageClient({
      baseUrl: 'http://stowage.test',
      token: TOKEN,
      fetch: (req) => Promise.resolve(a.request(req)),
    });
    const listed = await api.GET('/v1/jobs', { params: { query: { kind: 'pull' } } });
    expect(listed.response.status).toBe(200);
    expect(listed.data?.jobs).toEqual([]);
    const refused = await api.POST('/v1/pulls', { body: { ref: 'not a reference!' } });
    expect(refused.response.status).toBe(400);
    expect(refused.error?.error.code).toBe('INVALID_REFERENCE');
    const ready = await api.GET('/readyz');
    expect(ready.data?.mode.jobs).toBe('in-process');
    const missing = await api.GET('/v1/archives/{id}', { params: { path: { id: 'nope' } } });
    expect(missing.response.status).toBe(404);
  });
});
