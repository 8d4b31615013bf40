/**
 * The store served as a registry, against docker-registry serving the same image, in one run:
 * `skopeo copy docker://… oci:DIR` of the bench image (BENCH_MIB) from each, alternating, into a fresh
 * layout each time. Prints times, skopeo's core-seconds and peak RSS, the service's peak RSS, and the
 * ratio; asserts only that both copies hold the same manifest.
 *
 *   npm run bench    (BENCH_ROUNDS, BENCH_MIB as for the other benchmarks)
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

let dir: string;
const children: ChildProcess[] = [];
let registry: string;
let service: ChildProcess;
let gateway: string;

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
});
