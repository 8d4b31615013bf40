/**
 * Service benchmark, in one run: requests per second of GET /v1/archives (20 stored versions) and of
 * GET /healthz (the floor: no token, no store) from a separate load process, and the download of the
 * large fixture's archive (streamed from the store) against curl of the same file from a plain file
 * server (python3 -m http.server), alternating. Prints numbers and the service's peak RSS; asserts only
 * that every download has the recorded sha256.
 *
 *   npm run bench                        # 450 MiB archive, 5 rounds, 5 s of load per route
 *   BENCH_ROUNDS=9 BENCH_MIB=300,100,50 npm run bench
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenHash } from '../../src/api/auth.js';
import { freePort, run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { buildTaggedRepo, pushTags } from '../harness/tagged-repo.js';
import { pushBenchImage } from './fixture.js';
import { median } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const LAYERS_MIB = (process.env.BENCH_MIB ?? '300,100,50').split(',').map(Number);
const LOAD_SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? 5);
const TOKEN = 'stw_bench-token-0123456789abcdef';

let dir: string;
const children: ChildProcess[] = [];
let registry: string;
let service: ChildProcess;
let url: string;

async function waitFor(u: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (
      await fetch(u).then(
        (r) => r.ok,
        () => false,
      )
    )
      return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${u} did not answer`);
}

const auth = { authorization: `Bearer ${TOKEN}` };

async function apiJson(path: string, init: RequestInit = {}): Promise<Record<string, unknown>> {
  const res = await fetch(`${url}${path}`, {
    ...init,
    headers: { ...auth, 'content-type': 'application/json', ...init.headers },
  });
  return (await res.json()) as Record<string, unknown>;
}

async function pullAndWait(refs: string[]): Promise<{ id: string; sha256: string; size: number }[]> {
  const job = await apiJson('/v1/pulls', { method: 'POST', body: JSON.stringify({ refs }) });
  for (;;) {
    const j = await apiJson(`/v1/jobs/${job.id}`);
    if (j.state === 'succeeded')
      return (j.result as { archives: { id: string; sha256: string; size: number }[] }).archives;
    if (j.state === 'failed' || j.state === 'canceled') throw new Error(JSON.stringify(j));
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-service-'));
  const started = await startRegistry({ mode: 'plain', dir: join(dir, 'reg') });
  children.push(started.child);
  registry = started.registry.host;
  await pushBenchImage(join(dir, 'layout'), LAYERS_MIB, `${registry}/bench/big:v1`);
  const repo = await buildTaggedRepo(join(dir, 'tagged'), {
    count: 20,
    baseKiB: 512,
    ownKiB: 16,
    seed: 'svc-bench',
  });
  await pushTags(repo.layout, repo.tags, `${registry}/bench/app`);

  const conf = join(dir, 'registries.conf');
  await writeFile(conf, `[[registry]]\nlocation = "${registry}"\ninsecure = true\n`);
  const config = join(dir, 'stowage.toml');
  await writeFile(
    config,
    `[store]\npath = "${join(dir, 'store')}"\n[server]\nstate = "${join(dir, 'state')}"\n[[server.token]]\nname = "bench"\nsha256 = "${tokenHash(TOKEN)}"\nscopes = ["admin"]\n`,
  );
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  service = spawn(
    process.execPath,
    [BIN, 'serve', '--config', config, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'],
    {
      env: { ...process.env, HOME: join(dir, 'home'), CONTAINERS_REGISTRIES_CONF: conf },
      stdio: 'ignore',
    },
  );
  children.push(service);
  await waitFor(`${url}/readyz`);
}, 600_000);

afterAll(async () => {
  for (const c of children) await stopProcess(c);
  await rm(dir, { recursive: true, force: true });
});

/** Requests per second from a separate process: 16 keep-alive connections for LOAD_SECONDS. */
async function load(path: string, headers: Record<string, string>): Promise<{ rps: number; errors: number }> {
  const script = `
    const { Pool } = require(${JSON.stringify(resolve(import.meta.dirname, '../../node_modules/undici'))});
    const pool = new Pool(process.argv[1], { connections: 16, pipelining: 1 });
    const headers = JSON.parse(process.argv[3]);
    const until = Date.now() + Number(process.argv[4]) * 1000;
    let ok = 0, errors = 0;
    const worker = async () => {
      while (Date.now() < until) {
        try {
          const r = await pool.request({ path: process.argv[2], method: 'GET', headers });
          await r.body.dump();
          if (r.statusCode === 200) ok++; else errors++;
        } catch { errors++; }
      }
    };
    const start = Date.now();
    Promise.all(Array.from({ length: 64 }, worker)).then(async () => {
      const s = (Date.now() - start) / 1000;
      await pool.close();
      process.stdout.write(JSON.stringify({ rps: ok / s, errors }));
    });`;
  const r = await run(process.execPath, [
    '-e',
    script,
    url,
    path,
    JSON.stringify(headers),
    String(LOAD_SECONDS),
  ]);
  return JSON.parse(r.stdout) as { rps: number; errors: number };
}

/** curl's time for one download, and the sha256 of what arrived. */
async function curl(u: string, headers: string[], out: string): Promise<{ seconds: number; sha256: string }> {
  const r = await run('curl', [
    '-sS',
    '-o',
    out,
    '-w',
    '%{time_total}',
    ...headers.flatMap((h) => ['-H', h]),
    u,
  ]);
  const h = createHash('sha256');
  for await (const c of createReadStream(out)) h.update(c);
  await rm(out);
  return { seconds: Number(r.stdout), sha256: h.digest('hex') };
}

async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)![1]) * 1024;
}

describe('service benchmark', () => {
  it('archive listing requests/second, and download against a plain file server', async () => {
    const [big] = await pullAndWait([`${registry}/bench/big:v1`]);
    const tags = await pullAndWait(Array.from({ length: 20 }, (_, i) => `${registry}/bench/app:1.${i}.0`));
    expect(tags).toHaveLength(20);

    const listing = await load('/v1/archives', auth);
    const health = await load('/healthz', {});
    expect(listing.errors).toBe(0);

    // The same archive as a file, served by a plain file server.
    const files = join(dir, 'files');
    await run('mkdir', ['-p', files]);
    await run(
      process.execPath,
      [BIN, 'archives', 'export', big!.id, '-o', join(files, 'big.tar'), '-q', '--store', join(dir, 'store')],
      {
        env: { ...process.env, HOME: join(dir, 'home') },
      },
    );
    const fsPort = await freePort();
    const fileServer = spawn('python3', ['-m', 'http.server', '--bind', '127.0.0.1', String(fsPort)], {
      cwd: files,
      stdio: 'ignore',
    });
    children.push(fileServer);
    await waitFor(`http://127.0.0.1:${fsPort}/`);

    // Each server's bytes are checked once; the timed downloads go to /dev/null, so neither waits on a disk.
    const out = join(dir, 'download.tar');
    const bigUrl = `${url}/v1/archives/${big!.id}/content`;
    const bearer = ['-H', `Authorization: Bearer ${TOKEN}`];
    expect((await curl(bigUrl, [`Authorization: Bearer ${TOKEN}`], out)).sha256).toBe(big!.sha256);
    expect((await curl(`http://127.0.0.1:${fsPort}/big.tar`, [], out)).sha256).toBe(big!.sha256);
    const timed = async (args: string[]) => {
      const r = await run('curl', [
        '-sS',
        '-o',
        '/dev/null',
        '-w',
        '%{time_total} %{size_download}',
        ...args,
      ]);
      const [t, n] = r.stdout.split(' ').map(Number);
      return { seconds: t!, bytes: n! };
    };
    const times: Record<string, number[]> = {
      stowage: [],
      'python3 http.server': [],
      'stowage, last half by Range': [],
    };
    const half = Math.floor(big!.size / 2);
    for (let i = 0; i < ROUNDS; i++) {
      const a = await timed([...bearer, bigUrl]);
      expect(a.bytes).toBe(big!.size);
      times.stowage!.push(a.seconds);
      const b = await timed([`http://127.0.0.1:${fsPort}/big.tar`]);
      expect(b.bytes).toBe(big!.size);
      times['python3 http.server']!.push(b.seconds);
      const c = await timed([...bearer, '-H', `Range: bytes=${half}-`, bigUrl]);
      expect(c.bytes).toBe(big!.size - half);
      times['stowage, last half by Range']!.push(c.seconds);
    }
    const rss = await peakRss(service.pid!);
    const mib = big!.size / 1024 / 1024;
    const lines = [
      `service benchmark: archive of ${mib.toFixed(0)} MiB, ${ROUNDS} rounds; load ${LOAD_SECONDS} s, 16 connections, 64 in flight`,
      `  GET /v1/archives (21 versions): ${listing.rps.toFixed(0)} requests/s`,
      `  GET /healthz (floor):           ${health.rps.toFixed(0)} requests/s`,
    ];
    for (const [name, t] of Object.entries(times)) {
      const size = name.includes('half') ? mib / 2 : mib;
      lines.push(
        `  download, ${name.padEnd(28)} best ${Math.min(...t).toFixed(2)} s  median ${median(t).toFixed(2)} s  (${(size / median(t)).toFixed(0)} MiB/s)`,
      );
    }
    lines.push(
      `  stowage / file server: ${(median(times['python3 http.server']!) / median(times.stowage!)).toFixed(2)}x median; service peak RSS ${(rss / 1024 / 1024).toFixed(0)} MiB`,
    );
    process.stdout.write(`\n${lines.join('\n')}\n\n`);
  });
});
