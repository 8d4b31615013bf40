/**
 * Registries that misbehave in ways no real registry does on purpose: pagination that loops, bodies
 * that trickle, auth realms and redirects that lead elsewhere, redirect loops. A small proxy in front
 * of the real registry plays the part.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import { createServer, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, isBlobGet, startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';
import { api, type RunningService, serviceDir, startService } from './harness/service.js';

const isBlobPath = (path: string) => /\/blobs\/sha256:/.test(path);

const h = harness();
const plain = h.registries.plain;
const proxies: FaultProxy[] = [];
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

async function proxy(opts: Parameters<typeof startFaultProxy>[0]): Promise<FaultProxy> {
  const p = await startFaultProxy(opts);
  proxies.push(p);
  return p;
}

/** The blobs of an oci-archive, each checked against its name (the names inside differ by host). */
async function blobsOf(archive: string): Promise<string[]> {
  const dir = await mkdtemp(`${archive}-x-`);
  await run('tar', ['-xf', archive, '-C', dir]);
  const names = (await readdir(join(dir, 'blobs/sha256'))).sort();
  for (const n of names) {
    expect(
      createHash('sha256')
        .update(await readFile(join(dir, 'blobs/sha256', n)))
        .digest('hex'),
    ).toBe(n);
  }
  return names;
}

function tagPage(res: ServerResponse, name: string, tags: string[], next?: string): void {
  res.writeHead(200, {
    'content-type': 'application/json',
    ...(next ? { link: `<${next}>; rel="next"` } : {}),
  });
  res.end(JSON.stringify({ name, tags }));
}

describe('pagination that does not advance', () => {
  it('stops a listing whose next link points back at a page already read, with an error', async () => {
    const p = await proxy({
      upstream: plain.url,
      fault: (req) =>
        req.url?.includes('/tags/list')
          ? {
              kind: 'respond',
              handle: (_req, res) =>
                tagPage(res, 'fixtures/small', ['v1'], '/v2/fixtures/small/tags/list?n=1000'),
            }
          : undefined,
    });
    const w = await workdir('page-loop', insecureConf(p.host));
    const r = await stowage(['tags', `${p.host}/fixtures/small`], { env: w.env });
    expect(r.code).toBe(8);
    expect(r.stderr).toContain('points back at a page already read');
    expect(r.stdout).toBe('');
    // Two requests: the first page and its repeat; not thousands.
    expect(p.seen.filter((s) => s.path.includes('/tags/list')).length).toBeLessThanOrEqual(3);
  });

  it('pulls an image from a repository of 50,000 tags with 8 requests at most before its blobs', async () => {
    // The repository lists 50,000 tags, 1,000 a page; a pull that listed them would ask 50 pages.
    let pages = 0;
    const p = await proxy({
      upstream: plain.url,
      fault: (req) => {
        if (!req.url?.includes('/tags/list')) return undefined;
        pages++;
        const last = new URL(req.url, 'http://x').searchParams.get('last');
        const page = last ? (Number(last.slice(4)) + 1) / 1000 : 0;
        const tags = Array.from(
          { length: 1000 },
          (_, i) => `tag-${String(page * 1000 + i).padStart(6, '0')}`,
        );
        const next = page < 49 ? `/v2/fixtures/small/tags/list?n=1000&last=${tags.at(-1)}` : undefined;
        return { kind: 'respond', handle: (_req, res) => tagPage(res, 'fixtures/small', tags, next) };
      },
    });
    const w = await workdir('many-tags', insecureConf(p.host));
    const r = await stowage(['pull', '-q', `${p.host}/fixtures/small:v1`, '-o', join(w.dir, 'small.tar')], {
      env: w.env,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(pages).toBe(0);
    const firstBlob = p.seen.findIndex((s) => isBlobPath(s.path));
    expect(firstBlob).toBeGreaterThan(0);
    expect(firstBlob, p.seen.map((s) => `${s.method} ${s.path}`).join('\n')).toBeLessThanOrEqual(8);
  });

  it('stops a listing whose cursor goes backwards, and inspect and sync fail the same way', async () => {
    let n = 0;
    const p = await proxy({
      upstream: plain.url,
      fault: (req) => {
        if (!req.url?.includes('/tags/list')) return undefined;
        n++;
        // Each page repeats the tags already sent and points to an earlier cursor.
        return {
          kind: 'respond',
          handle: (_req, res) =>
            tagPage(res, 'fixtures/small', ['v1'], `/v2/fixtures/small/tags/list?n=1&last=a${1000 - n}`),
        };
      },
    });
    const w = await workdir('page-back', insecureConf(p.host));
    const r = await stowage(['tags', `${p.host}/fixtures/small`], { env: w.env });
    expect(r.code).toBe(8);
    expect(r.stderr).toContain('does not move forward');
    const i = await stowage(['inspect', `${p.host}/fixtures/small:v1`], { env: w.env });
    expect(i.code).toBe(8);
    expect(i.stderr).toContain('does not move forward');
  });

  it('follows real pagination over several pages and lists each tag once', async () => {
    // The real registry ignores ?n=; the proxy pages its full list two at a time, and sends one tag
    // twice across pages (a registry listing while tags are pushed does that).
    const p = await proxy({
      upstream: plain.url,
      fault: (req) => {
        if (!req.url?.includes('/tags/list')) return undefined;
        const url = new URL(req.url, 'http://x');
        const last = url.searchParams.get('last') ?? '';
        const all = ['a1', 'b2', 'c3', 'd4', 'e5'];
        const rest = all.filter((t) => t > last);
        const page = rest.slice(0, 2);
        if (last) page.unshift(last);
        const more = rest.length > 2 ? `/v2/fixtures/small/tags/list?n=2&last=${page.at(-1)}` : undefined;
        return { kind: 'respond', handle: (_req, res) => tagPage(res, 'fixtures/small', page, more) };
      },
    });
    const w = await workdir('page-real', insecureConf(p.host));
    const r = await stowage(['tags', `${p.host}/fixtures/small`], { env: w.env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).Tags).toEqual(['a1', 'b2', 'c3', 'd4', 'e5']);
    expect(p.seen.filter((s) => s.path.includes('/tags/list')).length).toBe(3);
  });
});

describe('a blob that trickles', () => {
  it('cuts a stalled download and resumes it with Range, the archive intact', async () => {
    const w0 = await workdir('trickle-direct', insecureConf(plain.host));
    const direct = join(w0.dir, 'direct.tar');
    expect(
      (await stowage(['pull', '-q', `${plain.host}/fixtures/multi:v1`, '-o', direct], { env: w0.env })).code,
    ).toBe(0);
    let trickled = 0;
    const p = await proxy({
      upstream: plain.url,
      // The first GET of each blob trickles (a few bytes every 200 ms); its resumption does not.
      fault: (req, n) => {
        if (!isBlobGet(req) || n !== 1 || req.headers.range) return undefined;
        trickled++;
        return { kind: 'trickle', bytes: 3, everyMs: 200 };
      },
    });
    const w = await workdir('trickle', insecureConf(p.host));
    const out = join(w.dir, 'out.tar');
    const r = await stowage(
      [
        'pull',
        '-q',
        '--low-speed-limit',
        '1000',
        '--low-speed-time',
        '1',
        `${p.host}/fixtures/multi:v1`,
        '-o',
        out,
      ],
      { env: w.env },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(trickled).toBeGreaterThan(0);
    const resumed = p.seen.filter((s) => /^bytes=[1-9]\d*-$/.test(String(s.headers.range ?? '')));
    expect(resumed.length).toBeGreaterThan(0);
    expect(await blobsOf(out)).toEqual(await blobsOf(direct));
  });

  it('fails after the retries when every attempt trickles, naming the blob and the setting', async () => {
    const p = await proxy({
      upstream: plain.url,
      fault: (req) => (isBlobGet(req) ? { kind: 'trickle', bytes: 1, everyMs: 300 } : undefined),
    });
    const w = await workdir('trickle-fail', insecureConf(p.host));
    const out = join(w.dir, 'out.tar');
    const r = await stowage(
      [
        'pull',
        '-q',
        '--retry-times',
        '1',
        '--low-speed-limit',
        '1000',
        '--low-speed-time',
        '1',
        `${p.host}/fixtures/small:v1`,
        '-o',
        out,
      ],
      { env: w.env },
    );
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/blob sha256:[0-9a-f]{64} .*transfer stalled/);
    expect(r.stderr).toContain('low-speed-limit');
  });
});

describe('hosts a registry sends the client to', () => {
  const running: RunningService[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((s) => s.stop('SIGKILL')));
  });

  /** A token service on another loopback address, counting what reaches it. */
  async function tokenService(): Promise<{ host: string; hits: () => number; close: () => Promise<void> }> {
    let hits = 0;
    const server = createServer((_req, res) => {
      hits++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: 'foreign-token', expires_in: 300 }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.2', r));
    const port = (server.address() as { port: number }).port;
    return {
      host: `127.0.0.2:${port}`,
      hits: () => hits,
      close: () => new Promise((r) => server.close(() => r())),
    };
  }

  async function serve(name: string, conf: string, toml: string): Promise<RunningService> {
    const d = await serviceDir(name, conf, toml);
    const s = await startService(d);
    running.push(s);
    return s;
  }

  it('the service refuses a token realm outside its allow-lists, and reaches it once listed in auth-hosts', async () => {
    const tokens = await tokenService();
    try {
      // The registry (through the proxy) names a realm on a host nobody allowed.
      const p = await proxy({
        upstream: plain.url,
        fault: (req) =>
          req.url === '/v2/' && !req.headers.authorization
            ? {
                kind: 'status',
                status: 401,
                headers: {
                  'www-authenticate': `Bearer realm="http://${tokens.host}/token",service="x"`,
                },
              }
            : undefined,
      });
      const conf = insecureConf(p.host);
      const refused = await serve('svc-realm', conf, `allow-registries = ["${p.host}"]\n`);
      const r = await api(refused, 'reader', `/v1/tags?repository=${p.host}/fixtures/small`);
      expect(r.status).toBe(403);
      const body = (await r.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('BLOCKED');
      expect(body.error.message).toContain(tokens.host);
      expect(body.error.message).toContain('auth-hosts');
      expect(tokens.hits()).toBe(0);

      const allowed = await serve(
        'svc-realm-ok',
        conf,
        `allow-registries = ["${p.host}"]\nauth-hosts = ["127.0.0.2"]\n`,
      );
      const ok = await api(allowed, 'reader', `/v1/tags?repository=${p.host}/fixtures/small`);
      expect(ok.status).toBe(200);
      expect(tokens.hits()).toBeGreaterThan(0);
      // The token went only to the registry, never a credential to the realm's host beyond the ask.
      expect(p.seen.some((s) => s.headers.authorization === 'Bearer foreign-token')).toBe(true);
    } finally {
      await tokens.close();
    }
  });

  it('the service refuses a blob redirect outside its allow-lists, and follows one in redirect-hosts', async () => {
    const cdn = await proxy({ upstream: plain.url, listenHost: '127.0.0.3' });
    const p = await proxy({
      upstream: plain.url,
      fault: (req) => (isBlobGet(req) ? { kind: 'redirect', location: `${cdn.url}${req.url}` } : undefined),
    });
    const conf = insecureConf(p.host, cdn.host);
    const ref = `${p.host}/fixtures/small:v1`;
    const refused = await serve('svc-redirect', conf, `allow-registries = ["${p.host}"]\n`);
    const r = await api(refused, 'reader', `/v1/inspect?ref=${ref}`);
    expect(r.status).toBe(403);
    const body = (await r.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('BLOCKED');
    expect(body.error.message).toContain('redirect-hosts');
    expect(cdn.seen).toEqual([]);

    const allowed = await serve(
      'svc-redirect-ok',
      conf,
      `allow-registries = ["${p.host}"]\nredirect-hosts = ["127.0.0.3"]\n`,
    );
    expect((await api(allowed, 'reader', `/v1/inspect?ref=${ref}`)).status).toBe(200);
    expect(cdn.seen.some((s) => isBlobPath(s.path))).toBe(true);
    // Credentials stay with the registry: nothing the client sent the storage host carries any.
    expect(cdn.seen.every((s) => s.headers.authorization === undefined)).toBe(true);
  });

  it('ends a redirect loop with what the registry did, in stowage words', async () => {
    const p = await proxy({
      upstream: plain.url,
      fault: (req) =>
        isBlobGet(req)
          ? {
              kind: 'respond',
              handle: (r, res) => {
                // Back and forth between two paths.
                const next = r.url?.endsWith('?b') ? r.url.slice(0, -2) : `${r.url}?b`;
                res.writeHead(302, { location: next });
                res.end();
              },
            }
          : undefined,
    });
    const w = await workdir('redirect-loop', insecureConf(p.host));
    const r = await stowage(['pull', '-q', `${p.host}/fixtures/small:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(8);
    expect(r.stderr).toContain('redirects');
    expect(r.stderr).toContain('in a loop');
    expect(r.stderr).not.toContain('Agent');
    expect(await readdir(w.dir)).toEqual(['home', 'registries.conf']);
  });
});
