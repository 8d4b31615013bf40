import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import {
  type Fault,
  type FaultProxy,
  isBlobGet,
  isManifestGet,
  startFaultProxy,
} from './harness/fault-proxy.js';
import { collectOutput, run } from './harness/processes.js';

const h = harness();
const plain = h.registries.plain;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const proxies: FaultProxy[] = [];
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

async function directPull(name: string): Promise<Buffer> {
  const w = await workdir(`direct-${name}`, insecureConf(plain.host));
  const out = join(w.dir, 'direct.tar');
  const r = await stowage(['pull', '-q', `${plain.host}/fixtures/${name}:v1`, '-o', out], { env: w.env });
  expect(r.code).toBe(0);
  return readFile(out);
}

describe('bad input and registry faults', () => {
  it('reports an unknown image and leaves nothing behind', async () => {
    const w = await workdir('unknown', insecureConf(plain.host));
    const r = await stowage(['pull', `${plain.host}/fixtures/nope:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(`${plain.host}/fixtures/nope:v1 not found`);
    expect(await readdir(w.dir)).toEqual(['home', 'registries.conf']);
    const tag = await stowage(['pull', `${plain.host}/fixtures/small:v9`, '-o', join(w.dir, 'y.tar')], {
      env: w.env,
    });
    expect(tag.code).toBe(5);
  });

  it('rejects invalid references and output paths before any request', async () => {
    const w = await workdir('invalid', insecureConf(plain.host));
    let r = await stowage(['pull', `${plain.host}/Fixtures/UPPER:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('lowercase');
    r = await stowage(['pull', `${plain.host}/fixtures/small:v1`, '-o', join(w.dir, 'no/such/dir/x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('does not exist');
    r = await stowage(
      ['pull', `${plain.host}/fixtures/small:v1`, '-o', join(w.dir, 'x.tar'), '--platform', 'linux'],
      { env: w.env },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('os/arch');
  });

  it('refuses a registry that registries.conf blocks', async () => {
    const conf = `${insecureConf(plain.host)}\n[[registry]]\nprefix = "${plain.host}/fixtures/multi"\nlocation = "${plain.host}/fixtures/multi"\nblocked = true\n`;
    const w = await workdir('blocked', conf);
    const r = await stowage(['pull', `${plain.host}/fixtures/multi:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/is blocked by registries.conf/);
    expect(await readdir(w.dir)).toEqual(['home', 'registries.conf']);
    // the same registry's other repositories are still allowed (longest prefix wins)
    const ok = await stowage(['pull', '-q', `${plain.host}/fixtures/small:v1`, '-o', join(w.dir, 'y.tar')], {
      env: w.env,
    });
    expect(ok.code).toBe(0);
  });

  it('rewrites a prefix to another location from registries.conf', async () => {
    const conf = `[[registry]]\nprefix = "mirror.test/team"\nlocation = "${plain.host}/fixtures"\ninsecure = true\n`;
    const w = await workdir('rewrite', conf);
    const r = await stowage(['pull', '--json', 'mirror.test/team/small:v1', '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.reference).toBe('mirror.test/team/small:v1');
    expect(result.source).toBe(`${plain.host}/fixtures/small`);
    expect(result.digest).toBe(h.fixtures.images.small!.digest);
  });

  it('fails with a digest mismatch when a proxy corrupts a layer, leaving nothing partial', async () => {
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) => (isBlobGet(req) ? { kind: 'corrupt' } : undefined),
    });
    proxies.push(proxy);
    const w = await workdir('corrupt', insecureConf(proxy.host));
    const r = await stowage(['pull', `${proxy.host}/fixtures/multi:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(
      /content digest sha256:[0-9a-f]{64} does not match the expected sha256:[0-9a-f]{64}/,
    );
    expect(await readdir(w.dir)).toEqual(['home', 'registries.conf']);
  });

  it('lays a docker-archive out from the sizes gzip trailers foretell; a registry that ignores Range, or a wrong trailer, means writing in order, with the same bytes', async () => {
    const { stdout } = await run('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${plain.host}/fixtures/multi:v1`,
    ]);
    const layers: string[] = JSON.parse(stdout).layers.map((l: { digest: string }) => l.digest);
    expect(layers.length).toBeGreaterThan(1);
    const isLayerGet = (req: IncomingMessage) => isBlobGet(req) && layers.some((d) => req.url?.endsWith(d));
    // A trailer 512 bytes off: a plausible size (whole tar blocks), and a wrong one.
    const wrongTrailer = (b: Buffer) => {
      const out = Buffer.from(b);
      out.writeUInt32LE(out.readUInt32LE(out.length - 4) + 512, out.length - 4);
      return out;
    };
    const cases = {
      'laid out': undefined,
      'in order (Range ignored)': { kind: 'ignore-range' },
      'in order (wrong trailer)': { kind: 'rewrite-range', rewrite: wrongTrailer },
    } satisfies Record<string, Fault | undefined>;
    const outputs: Record<string, { bytes: Buffer; ranged: number; whole: number }> = {};
    for (const [name, fault] of Object.entries(cases)) {
      const proxy = await startFaultProxy({
        upstream: plain.url,
        fault: (req) => (isLayerGet(req) ? fault : undefined),
      });
      proxies.push(proxy);
      // One name for every case (the archive records it), whichever proxy serves it.
      const conf = `[[registry]]\nprefix = "layout.test"\nlocation = "${proxy.host}"\ninsecure = true\n`;
      const w = await workdir('layout-docker', conf);
      const out = join(w.dir, 'd.tar');
      const r = await stowage(
        ['pull', '-q', '-f', 'docker-archive', 'layout.test/fixtures/multi:v1', '-o', out],
        {
          env: w.env,
        },
      );
      expect(r.code, r.stderr).toBe(0);
      await run('sha256sum', ['-c', 'd.tar.sha256'], { cwd: w.dir });
      // Nothing but the archive and its checksum: no spool, no temporary file.
      expect((await readdir(w.dir)).sort()).toEqual(['d.tar', 'd.tar.sha256', 'home', 'registries.conf']);
      const gets = proxy.seen.filter((q) => q.method === 'GET' && layers.some((d) => q.path.endsWith(d)));
      outputs[name] = {
        bytes: await readFile(out),
        ranged: gets.filter((q) => q.headers.range).length,
        whole: gets.filter((q) => !q.headers.range).length,
      };
    }
    // Laid out: one range request and one download per layer.
    expect(outputs['laid out']).toMatchObject({ ranged: layers.length, whole: layers.length });
    // Range ignored: the full answer to the range request is not read; each layer downloads once.
    expect(outputs['in order (Range ignored)']).toMatchObject({ whole: layers.length });
    // A wrong trailer is found out by the byte count and costs the downloads done so far, once.
    expect(outputs['in order (wrong trailer)']!.whole).toBeGreaterThan(layers.length);
    for (const o of Object.values(outputs)) expect(sha256(o.bytes)).toBe(sha256(outputs['laid out']!.bytes));
    // And it is the archive skopeo reads, diff_ids and all.
    const w = await workdir('layout-docker-check');
    await writeFile(join(w.dir, 'd.tar'), outputs['laid out']!.bytes);
    const inspected = JSON.parse(
      (await run('skopeo', ['inspect', `docker-archive:${join(w.dir, 'd.tar')}`])).stdout,
    );
    expect(inspected.Layers).toHaveLength(layers.length);
  });

  it('resumes a layer when the connection drops mid-body, with a correct result', async () => {
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req, n) =>
        isBlobGet(req) && n === 1 && !req.headers.range ? { kind: 'drop', afterBytes: 100_000 } : undefined,
    });
    proxies.push(proxy);
    const w = await workdir('drop', insecureConf(proxy.host));
    const out = join(w.dir, 'x.tar');
    const r = await stowage(['pull', '-q', `${proxy.host}/fixtures/multi:v1`, '-o', out], { env: w.env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // the resumed requests asked for the rest of the blob
    expect(proxy.seen.some((s) => isBlobPath(s.path) && /^bytes=100000-/.test(String(s.headers.range)))).toBe(
      true,
    );
    // Every blob is intact (its bytes hash to its name) and the set is the one a direct pull writes.
    const direct = await directPull('multi');
    const blobsOf = async (archive: string) => {
      const dir = await mkdtemp(join(w.dir, 'x-'));
      await run('tar', ['-xf', archive, '-C', dir]);
      const names = (await readdir(join(dir, 'blobs/sha256'))).sort();
      for (const n of names) expect(sha256(await readFile(join(dir, 'blobs/sha256', n)))).toBe(n);
      return names;
    };
    const directPath = join(w.dir, 'direct.tar');
    await writeFile(directPath, direct);
    expect(await blobsOf(out)).toEqual(await blobsOf(directPath));
    expect((await readFile(out)).length).toBe(direct.length);
  });

  it('gives up clearly when the connection keeps dropping, leaving nothing behind', async () => {
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) => (isBlobGet(req) ? { kind: 'drop', afterBytes: 0 } : undefined),
    });
    proxies.push(proxy);
    const w = await workdir('drop-always', insecureConf(proxy.host));
    const r = await stowage(
      ['pull', '--retry-times', '1', `${proxy.host}/fixtures/multi:v1`, '-o', join(w.dir, 'x.tar')],
      {
        env: w.env,
      },
    );
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(
      /blob sha256:[0-9a-f]{64} of 127\.0\.0\.1:\d+\/fixtures\/multi: transfer failed/,
    );
    expect(await readdir(w.dir)).toEqual(['home', 'registries.conf']);
  });

  it('cleans up when interrupted mid-pull', async () => {
    const w = await workdir('sigint', insecureConf(plain.host));
    const out = join(w.dir, 'large.tar');
    const child = spawn(
      process.execPath,
      [BIN, 'pull', '-q', '-j', '1', `${plain.host}/fixtures/large:v1`, '-o', out],
      {
        env: w.env,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const done = collectOutput(child);
    // Interrupt once the partial file exists and has data in it; a download that never starts fails.
    let flowing = false;
    for (let i = 0; i < 2000 && !flowing; i++) {
      const partial = (await readdir(w.dir)).find((f) => f.endsWith('.partial'));
      flowing = !!partial && ((await stat(join(w.dir, partial)).catch(() => undefined))?.size ?? 0) > 0;
      if (!flowing) await new Promise((r) => setTimeout(r, 5));
    }
    expect(flowing).toBe(true);
    child.kill('SIGINT');
    const { code, stderr } = await done;
    expect(code).toBe(130);
    expect(stderr).toContain('aborted');
    expect(await readdir(w.dir)).toEqual(['home', 'registries.conf']);
  });

  it('waits out 429 and 503 answers (Retry-After honoured) and succeeds', async () => {
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req, n) => {
        if (isManifestGet(req) && n === 1)
          return { kind: 'status', status: 429, headers: { 'retry-after': '1' } };
        if (isBlobGet(req) && n === 1) return { kind: 'status', status: 503 };
        return undefined;
      },
    });
    proxies.push(proxy);
    const w = await workdir('429', insecureConf(proxy.host));
    const r = await stowage(['pull', '-q', `${proxy.host}/fixtures/small:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // The image's manifest: asked twice (the 429, then its retry). Looking for attachments asks others.
    const manifestGets = proxy.seen.filter((s) => s.method === 'GET' && s.path.endsWith('/manifests/v1'));
    expect(manifestGets.length).toBe(2);
    // The retry came no sooner than the 429's Retry-After asked (a lower bound: a slow machine only
    // makes it later; 50 ms off for the two processes' clocks and timer rounding, far from an unpaced retry).
    expect(manifestGets[1]!.at - manifestGets[0]!.at).toBeGreaterThanOrEqual(950);
  });

  it('refuses to wait out a Retry-After over the cap: the run ends at once, asking nothing more', async () => {
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) =>
        isManifestGet(req) ? { kind: 'status', status: 429, headers: { 'retry-after': '3600' } } : undefined,
    });
    proxies.push(proxy);
    const w = await workdir('429-long', insecureConf(proxy.host));
    const r = await stowage(['pull', '-q', `${proxy.host}/fixtures/small:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(8);
    expect(r.stderr).toContain('asks to wait 3600 s');
    expect(proxy.seen.filter((s) => s.method === 'GET' && s.path.includes('/manifests/'))).toHaveLength(1);
  });

  it('keeps to [registries."HOST"] concurrency and requests-per-second', async () => {
    const proxy = await startFaultProxy({ upstream: plain.url });
    proxies.push(proxy);
    const w = await workdir('limits', insecureConf(proxy.host));
    const config = join(w.dir, 'stowage.toml');
    const write = (limits: string) =>
      writeFile(
        config,
        `[store]\npath = "${join(w.dir, `store-${Math.random()}`)}"\n\n[registries."${proxy.host}"]\n${limits}\n\n[[job]]\nname = "m"\nsource = "${proxy.host}/fixtures/multiarch"\ntags = ["v1"]\n`,
      );
    // Without a limit, blobs go several at once (so the count below can tell).
    await write('concurrency = 8');
    expect((await stowage(['sync', '-q', '--config', config], { env: w.env })).code).toBe(0);
    expect(proxy.maxInFlight).toBeGreaterThan(1);
    const one = await startFaultProxy({ upstream: plain.url });
    proxies.push(one);
    await writeFile(w.conf, insecureConf(one.host));
    await writeFile(
      config,
      `[store]\npath = "${join(w.dir, 'store-one')}"\n\n[registries."${one.host}"]\nconcurrency = 1\nrequests-per-second = 10\n\n[[job]]\nname = "m"\nsource = "${one.host}/fixtures/multiarch"\ntags = ["v1"]\n`,
    );
    const r = await stowage(['sync', '-q', '--config', config], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    expect(one.seen.length).toBeGreaterThan(5);
    expect(one.maxInFlight).toBe(1);
    // The ten-a-second slots are counted against a clock the test moves (src/registry/pacer.test.ts):
    // arrival times at a proxy on a loaded machine say nothing reliable about when requests were sent.
  });

  it('honours RateLimit-Remaining: 0 on a successful answer: waits out a short window, stops on a long one', async () => {
    const limited = (reset: string) =>
      startFaultProxy({
        upstream: plain.url,
        fault: (req, n) =>
          isManifestGet(req) && n === 1
            ? { kind: 'headers', headers: { 'ratelimit-remaining': '0;w=21600', 'ratelimit-reset': reset } }
            : undefined,
      });
    // A window of hours: no further request is sent, and the error says why.
    const long = await limited('7200');
    proxies.push(long);
    const w = await workdir('ratelimit', insecureConf(long.host));
    const out = join(w.dir, 'x.tar');
    const r = await stowage(['pull', '-q', `${long.host}/fixtures/small:v1`, '-o', out], { env: w.env });
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/rate limit is used up for \d+ s more/);
    const afterLimit = long.seen.slice(
      long.seen.findIndex((x) => x.method === 'GET' && x.path.includes('/manifests/')) + 1,
    );
    expect(afterLimit).toEqual([]);
    await expect(stat(out)).rejects.toThrow();
    // A window of a second: the pull waits for it and completes.
    const short = await limited('1');
    proxies.push(short);
    const w2 = await workdir('ratelimit-short', insecureConf(short.host));
    const ok = await stowage(['pull', '-q', `${short.host}/fixtures/small:v1`, '-o', join(w2.dir, 'x.tar')], {
      env: w2.env,
    });
    expect(ok.code, ok.stderr).toBe(0);
    expect(short.seen.filter((x) => isBlobPath(x.path)).length).toBeGreaterThan(0);
  });

  it('does not forward Authorization when a blob redirects to another host', async () => {
    const basic = h.registries.basic;
    const auth = `Basic ${Buffer.from(`${h.user}:${h.password}`).toString('base64')}`;
    // The redirect target (another loopback address) holds its own access to the blobs, like a signed URL.
    const storage = await startFaultProxy({
      upstream: basic.url,
      listenHost: '127.0.0.2',
      upstreamHeaders: { authorization: auth },
    });
    proxies.push(storage);
    const front = await startFaultProxy({
      upstream: basic.url,
      fault: (req) =>
        isBlobGet(req) ? { kind: 'redirect', location: `${storage.url}${req.url}` } : undefined,
    });
    proxies.push(front);
    const w = await workdir('redirect', insecureConf(front.host));
    const r = await stowage(
      [
        'pull',
        '-q',
        '--creds',
        `${h.user}:${h.password}`,
        `${front.host}/fixtures/small:v1`,
        '-o',
        join(w.dir, 'x.tar'),
      ],
      {
        env: w.env,
      },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(front.seen.some((s) => isBlobPath(s.path) && s.headers.authorization)).toBe(true);
    const blobRequests = storage.seen.filter((s) => isBlobPath(s.path));
    expect(blobRequests.length).toBeGreaterThan(0);
    expect(blobRequests.every((s) => s.headers.authorization === undefined)).toBe(true);
  });

  it('reports an unreachable registry', async () => {
    const w = await workdir('unreachable', insecureConf('127.0.0.1:9'));
    const r = await stowage(['pull', '--retry-times', '1', '127.0.0.1:9/x/y:z', '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/cannot reach registry 127\.0\.0\.1:9/);
  });

  it('rejects a v1 registries.conf with a conversion hint', async () => {
    const w = await workdir('v1conf', '[registries.search]\nregistries = ["docker.io"]\n');
    const r = await stowage(['pull', `${plain.host}/fixtures/small:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/version 1 format.*convert/);
    await writeFile(w.conf, '[[registry]]\nlocation = 5\n');
    const r2 = await stowage(['pull', `${plain.host}/fixtures/small:v1`, '-o', join(w.dir, 'x.tar')], {
      env: w.env,
    });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('registry.0.location');
  });
});

function isBlobPath(p: string): boolean {
  return /\/blobs\/sha256:/.test(p);
}
