/**
 * Registries that misbehave in ways no real registry does on purpose: pagination that loops, bodies
 * that trickle, auth realms and redirects that lead elsewhere, redirect loops. A small proxy in front
 * of the real registry plays the part.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, isBlobGet, startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';

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
