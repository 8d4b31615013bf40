/**
 * The store served as a registry, against docker-registry serving the same image, in one run:
 * `skopeo copy docker://… oci:DIR` of the bench image (BENCH_MIB) from each, alternating, into a fresh
 * layout each time. Then pull-through: a first pull through a gateway with an empty store against the
 * same pull straight from the upstream, and 50 clients at once pulling one image (BENCH_CONCURRENT_MIB)
 * through a fresh gateway, counting the upstream's blob requests (a proxy in front of it) and the
 * service's peak RSS. Prints times, skopeo's core-seconds and peak RSS, the service's peak RSS, and
 * the ratios; asserts only that the copies hold the same manifest and that each blob went upstream once.
 *
 *   npm run bench    (BENCH_ROUNDS, BENCH_MIB as for the other benchmarks; BENCH_CLIENTS, default 50)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenHash } from '../../src/api/auth.js';
import { freePort, run, stopProcess } from '../harness/processes.js';
import { startRegistry } from '../harness/registry.js';
import { pushBenchImage } from './fixture.js';
import { addSample, cpuSetting, measureOn, median, sampleLine, samples } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const LAYERS_MIB = (process.env.BENCH_MIB ?? '300,100,50').split(',').map(Number);
const TOKEN = 'stw_bench-token-0123456789abcdef';
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 50);
const CONCURRENT_MIB = (process.env.BENCH_CONCURRENT_MIB ?? '24,8').split(',').map(Number);

let dir: string;
const children: ChildProcess[] = [];
let registry: string;
let service: ChildProcess;
let gateway: string;

/** A gateway on a store of its own, pulling through `upstream`; stopped by afterAll. */
async function startGateway(name: string, upstream: string): Promise<{ child: ChildProcess; host: string }> {
  const conf = join(dir, `${name}.conf`);
  await writeFile(conf, `[[registry]]\nlocation = "${upstream}"\ninsecure = true\n`);
  const config = join(dir, `${name}.toml`);
  await writeFile(
    config,
    `[store]\npath = "${join(dir, name, 'store')}"\n[server]\nstate = "${join(dir, name, 'state')}"\n` +
      `[server.registry]\nanonymous-pull = true\npull-through = ["${upstream}"]\n`,
  );
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--config', config, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'],
    {
      env: { ...process.env, HOME: join(dir, 'home'), CONTAINERS_REGISTRIES_CONF: conf },
      stdio: 'ignore',
    },
  );
  children.push(child);
  await waitFor(`http://127.0.0.1:${port}/readyz`);
  return { child, host: `127.0.0.1:${port}` };
}

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

async function pullIntoStore(ref: string): Promise<void> {
  const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  const job = (await (
    await fetch(`http://${gateway}/v1/pulls`, { method: 'POST', headers, body: JSON.stringify({ ref }) })
  ).json()) as { id: string };
  for (;;) {
    const j = (await (await fetch(`http://${gateway}/v1/jobs/${job.id}`, { headers })).json()) as {
      state: string;
    };
    if (j.state === 'succeeded') return;
    if (j.state === 'failed' || j.state === 'canceled') throw new Error(JSON.stringify(j));
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-serve-registry-'));
  const started = await startRegistry({ mode: 'plain', dir: join(dir, 'reg') });
  children.push(started.child);
  registry = started.registry.host;
  await pushBenchImage(join(dir, 'layout'), LAYERS_MIB, `${registry}/bench/big:v1`);
  const conf = join(dir, 'registries.conf');
  await writeFile(conf, `[[registry]]\nlocation = "${registry}"\ninsecure = true\n`);
  const config = join(dir, 'stowage.toml');
  await writeFile(
    config,
    `[store]\npath = "${join(dir, 'store')}"\n[server]\nstate = "${join(dir, 'state')}"\n[[server.token]]\nname = "bench"\nsha256 = "${tokenHash(TOKEN)}"\nscopes = ["admin"]\n`,
  );
  const port = await freePort();
  gateway = `127.0.0.1:${port}`;
  service = spawn(
    process.execPath,
    [BIN, 'serve', '--config', config, '--listen', gateway, '--log-level', 'warn'],
    {
      env: { ...process.env, HOME: join(dir, 'home'), CONTAINERS_REGISTRIES_CONF: conf },
      stdio: 'ignore',
    },
  );
  children.push(service);
  await waitFor(`http://${gateway}/readyz`);
  await pullIntoStore(`${registry}/bench/big:v1`);
}, 600_000);

afterAll(async () => {
  for (const c of children) await stopProcess(c);
  await rm(dir, { recursive: true, force: true });
});

async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+)/.exec(status)![1]) * 1024;
}

describe('the store as a registry', () => {
  it('skopeo copy to an OCI layout: from stowage serve vs from docker-registry', async () => {
    const cpu = await cpuSetting();
    const results = { 'docker-registry': samples(), 'stowage serve': samples() };
    const sources = {
      'docker-registry': [`docker://${registry}/bench/big:v1`],
      'stowage serve': [
        '--src-creds',
        `bench:${TOKEN}`,
        `docker://${gateway}/${registry.replace(':', '_')}/bench/big:v1`,
      ],
    } as const;
    const digests = new Set<string>();
    for (let i = 0; i < ROUNDS; i++) {
      const order = (
        i % 2 ? ['stowage serve', 'docker-registry'] : ['docker-registry', 'stowage serve']
      ) as (keyof typeof sources)[];
      for (const name of order) {
        const out = join(dir, `out-${i}-${name.replace(' ', '-')}`);
        await run('sync', []);
        const args = [
          'copy',
          '--quiet',
          '--src-tls-verify=false',
          ...sources[name].slice(0, -1),
          sources[name].at(-1)!,
          `oci:${out}:big`,
        ];
        addSample(results[name], await measureOn(cpu, 'skopeo', args, process.env));
        digests.add(JSON.parse(await readFile(join(out, 'index.json'), 'utf8')).manifests[0].digest);
        await rm(out, { recursive: true, force: true });
      }
    }
    expect(digests.size).toBe(1);
    // The floor: the largest layer alone, fetched by curl from each server to /dev/null.
    const manifest = JSON.parse(
      (await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry}/bench/big:v1`]))
        .stdout,
    ) as { layers: { digest: string; size: number }[] };
    const largest = manifest.layers.reduce((a, b) => (b.size > a.size ? b : a));
    const blobUrls = {
      'docker-registry': [`http://${registry}/v2/bench/big/blobs/${largest.digest}`],
      'stowage serve': [
        '-H',
        `Authorization: Bearer ${TOKEN}`,
        `http://${gateway}/v2/${registry.replace(':', '_')}/bench/big/blobs/${largest.digest}`,
      ],
    };
    const floor: Record<string, number[]> = { 'docker-registry': [], 'stowage serve': [] };
    for (let i = 0; i < ROUNDS; i++) {
      for (const name of ['docker-registry', 'stowage serve'] as const) {
        const r = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{time_total}', ...blobUrls[name]]);
        floor[name]!.push(Number(r.stdout));
      }
    }
    const bytes = LAYERS_MIB.reduce((a, b) => a + b, 0) * 1024 * 1024;
    const ratio = median(results['stowage serve'].t) / median(results['docker-registry'].t);
    console.log(
      [
        `\nThe store as a registry: skopeo copy of ${LAYERS_MIB.join('+')} MiB to an OCI layout, ${ROUNDS} rounds; ${cpu.label}`,
        sampleLine('from docker-registry', results['docker-registry'], 22, bytes),
        sampleLine('from stowage serve', results['stowage serve'], 22, bytes),
        `  ratio (stowage serve / docker-registry, medians): ${ratio.toFixed(2)}x; service peak RSS ${(
          (await peakRss(service.pid!)) / 1024 / 1024
        ).toFixed(1)} MiB`,
        `  curl of the ${(largest.size / 1024 / 1024).toFixed(0)} MiB layer alone, medians: docker-registry ${median(floor['docker-registry']!).toFixed(2)} s, stowage serve ${median(floor['stowage serve']!).toFixed(2)} s`,
      ].join('\n'),
    );
  });

  it('pull-through: a first pull through an empty gateway vs straight from the upstream', async () => {
    const cpu = await cpuSetting();
    // docker-registry as a pull-through cache (proxy: remoteurl) does the same work: the floor.
    const results = {
      upstream: samples(),
      'through stowage': samples(),
      'through docker-registry': samples(),
    };
    const ref = (host: string) => `docker://${host}/bench/big:v1`;
    for (let i = 0; i < ROUNDS; i++) {
      // An empty store each round: every blob comes from the upstream.
      const g = await startGateway(`through-${i}`, registry);
      const cache = await startRegistry({
        mode: 'plain',
        dir: join(dir, `cache-${i}`),
        proxy: { remoteurl: `http://${registry}` },
      });
      const names = ['upstream', 'through stowage', 'through docker-registry'] as const;
      const order = names.map((_, k) => names[(k + i) % names.length]!);
      const sources: Record<(typeof names)[number], string> = {
        upstream: ref(registry),
        'through stowage': ref(`${g.host}/${registry.replace(':', '_')}`),
        'through docker-registry': ref(cache.registry.host),
      };
      for (const name of order) {
        const out = join(dir, `pt-${i}-${name.replaceAll(' ', '-')}`);
        await run('sync', []);
        const src = sources[name];
        addSample(
          results[name],
          await measureOn(
            cpu,
            'skopeo',
            ['copy', '--quiet', '--src-tls-verify=false', src, `oci:${out}:big`],
            process.env,
          ),
        );
        await rm(out, { recursive: true, force: true });
      }
      await stopProcess(g.child);
      await stopProcess(cache.child);
      await rm(join(dir, `through-${i}`), { recursive: true, force: true });
      await rm(join(dir, `cache-${i}`), { recursive: true, force: true });
    }
    const bytes = LAYERS_MIB.reduce((a, b) => a + b, 0) * 1024 * 1024;
    const ratio = median(results['through stowage'].t) / median(results.upstream.t);
    console.log(
      [
        `\nPull-through, first pull of ${LAYERS_MIB.join('+')} MiB into an OCI layout, ${ROUNDS} rounds; ${cpu.label}`,
        sampleLine('straight from upstream', results.upstream, 24, bytes),
        sampleLine('through stowage', results['through stowage'], 24, bytes),
        sampleLine('through docker-registry', results['through docker-registry'], 24, bytes),
        `  ratio (through stowage / upstream, medians): ${ratio.toFixed(2)}x; through docker-registry / upstream: ${(
          median(results['through docker-registry'].t) / median(results.upstream.t)
        ).toFixed(2)}x`,
      ].join('\n'),
    );
  });

  it(`pull-through: ${CLIENTS} clients at once, each blob once upstream`, async () => {
    const image = `${registry}/bench/concurrent:v1`;
    await pushBenchImage(join(dir, 'layout-concurrent'), CONCURRENT_MIB, image);
    const { startFaultProxy } = await import('../harness/fault-proxy.js');
    const proxy = await startFaultProxy({ upstream: `http://${registry}` });
    try {
      const g = await startGateway('concurrent', proxy.host);
      const src = `docker://${g.host}/${proxy.host.replace(':', '_')}/bench/concurrent:v1`;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: CLIENTS }, (_, i) =>
          run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', src, `oci:${join(dir, `c-${i}`)}:c`]),
        ),
      );
      const seconds = (performance.now() - started) / 1000;
      const blobGets = proxy.seen.filter((r) => r.method === 'GET' && r.path.includes('/blobs/'));
      const perBlob = new Map<string, number>();
      for (const r of blobGets) perBlob.set(r.path, (perBlob.get(r.path) ?? 0) + 1);
      expect([...perBlob.values()].every((n) => n === 1)).toBe(true);
      const rss = await peakRss(g.child.pid!);
      console.log(
        `\nPull-through, ${CLIENTS} skopeo copies at once of ${CONCURRENT_MIB.join('+')} MiB through an empty gateway: ` +
          `${seconds.toFixed(1)} s, ${perBlob.size} blobs each fetched once upstream (${blobGets.length} GETs), service peak RSS ${(rss / 1024 / 1024).toFixed(1)} MiB`,
      );
    } finally {
      await proxy.close();
    }
  });
});
