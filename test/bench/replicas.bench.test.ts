/**
 * The store on S3 and PostgreSQL against the local store, in one run (issue 22): a sync of one image
 * (450 MiB of random layers by default) from a registry into each store, and its download (the
 * oci-archive export, streamed out of the store), alternating, with skopeo copying the same image to
 * an oci: directory as the reference. radosgw (memstore) and PostgreSQL run on the same two cores, so
 * their CPU time is measured too (from /proc), to say where the time goes. Asserts only that every
 * export has the same sha256.
 *
 *   npm run bench                        # 300+100+50 MiB, 3 rounds
 *   BENCH_ROUNDS=5 BENCH_MIB=200,50 npm run bench
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningPostgres, startPostgres } from '../harness/postgres.js';
import { stopProcess } from '../harness/processes.js';
import { type RunningS3, s3Bucket, startRadosgw } from '../harness/radosgw.js';
import { startRegistry } from '../harness/registry.js';
import { pushBenchImage } from './fixture.js';
import { addSample, cpuSetting, measureOn, processCpu, sampleLine, samples } from './measure.js';

const BIN = resolve(import.meta.dirname, '../../bin/stowage.js');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const LAYERS_MIB = (process.env.BENCH_MIB ?? '300,100,50').split(',').map(Number);

let dir: string;
const children: ChildProcess[] = [];
let registry: string;
let s3: RunningS3;
let db: RunningPostgres;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'stowage-bench-replicas-'));
  const started = await startRegistry({ mode: 'plain', dir: join(dir, 'reg') });
  children.push(started.child);
  registry = started.registry.host;
  [s3, db] = await Promise.all([startRadosgw(), startPostgres()]);
  await s3Bucket(s3, 'bench');
  await pushBenchImage(join(dir, 'layout'), LAYERS_MIB, `${registry}/bench/big:v1`);
}, 600_000);

afterAll(async () => {
  for (const c of children) await stopProcess(c);
  await Promise.all([s3?.stop(), db?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

/** CPU seconds used so far by the processes with these names (radosgw and Ceph, PostgreSQL). */
async function cpuOf(names: string[]): Promise<number> {
  let seconds = 0;
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const p = await processCpu(pid);
    if (p && names.some((n) => p.name.startsWith(n))) seconds += p.seconds;
  }
  return seconds;
}

const S3_SERVER = ['radosgw', 'ceph-osd', 'ceph-mon', 'msgr-worker', 'rgw', 'bstore', 'tp_'];
const PG_SERVER = ['postgres'];

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path)) h.update(c);
  return h.digest('hex');
}

describe('replicated store benchmark', () => {
  it('sync and download: the S3 store against the local store, skopeo as the reference', async () => {
    const cpu = await cpuSetting();
    const conf = join(dir, 'registries.conf');
    await writeFile(conf, `[[registry]]\nlocation = "${registry}"\ninsecure = true\n`);
    const env = {
      ...process.env,
      HOME: join(dir, 'home'),
      CONTAINERS_REGISTRIES_CONF: conf,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    };
    const job = `[[job]]\nname = "big"\nsource = "${registry}/bench/big"\ntags = ["v1"]\n`;
    const bytes = LAYERS_MIB.reduce((n, m) => n + m * 1024 * 1024, 0);
    const rows = {
      skopeo: samples(),
      syncLocal: samples(),
      syncS3: samples(),
      exportLocal: samples(),
      exportS3: samples(),
    };
    const serverCpu = { syncS3: [] as number[], exportS3: [] as number[], pgSync: [] as number[] };
    const sums = new Set<string>();
    for (let round = 0; round < ROUNDS; round++) {
      const local = join(dir, `local-${round}.toml`);
      await writeFile(local, `[store]\npath = "${join(dir, `store-${round}`)}"\n${job}`);
      const remote = join(dir, `s3-${round}.toml`);
      await writeFile(
        remote,
        `[store.s3]\nendpoint = "${s3.endpoint}"\nbucket = "bench"\nprefix = "round-${round}/"\n[server]\ndatabase = "${db.url}"\n${job}`,
      );
      const out = join(dir, `oci-${round}`);
      addSample(
        rows.skopeo,
        await measureOn(
          cpu,
          'skopeo',
          ['copy', '--quiet', '--src-tls-verify=false', `docker://${registry}/bench/big:v1`, `oci:${out}:v1`],
          env,
        ),
      );
      await rm(out, { recursive: true, force: true });
      addSample(
        rows.syncLocal,
        await measureOn(cpu, process.execPath, [BIN, 'sync', '-q', '--config', local], env),
      );
      const [s3Before, pgBefore] = [await cpuOf(S3_SERVER), await cpuOf(PG_SERVER)];
      addSample(
        rows.syncS3,
        await measureOn(cpu, process.execPath, [BIN, 'sync', '-q', '--config', remote], env),
      );
      serverCpu.syncS3.push((await cpuOf(S3_SERVER)) - s3Before);
      serverCpu.pgSync.push((await cpuOf(PG_SERVER)) - pgBefore);

      for (const [name, config] of [
        ['exportLocal', local],
        ['exportS3', remote],
      ] as const) {
        const file = join(dir, `${name}-${round}.tar`);
        const before = await cpuOf(S3_SERVER);
        addSample(
          rows[name],
          await measureOn(
            cpu,
            process.execPath,
            [BIN, 'archives', 'export', '-q', '--config', config, `${registry}/bench/big:v1`, '-o', file],
            env,
          ),
        );
        if (name === 'exportS3') serverCpu.exportS3.push((await cpuOf(S3_SERVER)) - before);
        sums.add(await sha256File(file));
        await rm(file, { force: true });
        await rm(`${file}.sha256`, { force: true });
      }
      await rm(join(dir, `store-${round}`), { recursive: true, force: true });
    }
    expect(sums.size).toBe(1);
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const rate = (r: { t: number[] }) => `${(bytes / 1024 / 1024 / med(r.t)).toFixed(0)} MiB/s`;
    const lines = [
      `replicated store benchmark: ${(bytes / 1024 / 1024).toFixed(0)} MiB image, ${ROUNDS} rounds; ${cpu.label}`,
      sampleLine('skopeo copy docker:// -> oci:', rows.skopeo, 34, bytes),
      sampleLine('stowage sync, local store', rows.syncLocal, 34, bytes),
      sampleLine('stowage sync, S3 + PostgreSQL', rows.syncS3, 34, bytes),
      sampleLine('archives export, local store', rows.exportLocal, 34, bytes),
      sampleLine('archives export, S3 store', rows.exportS3, 34, bytes),
      `  sync: local ${rate(rows.syncLocal)}, S3 ${rate(rows.syncS3)} (S3/local time ${(med(rows.syncS3.t) / med(rows.syncLocal.t)).toFixed(2)}x; skopeo ${rate(rows.skopeo)})`,
      `  export: local ${rate(rows.exportLocal)}, S3 ${rate(rows.exportS3)} (S3/local time ${(med(rows.exportS3.t) / med(rows.exportLocal.t)).toFixed(2)}x)`,
      `  server CPU (median core-s): radosgw+ceph during sync ${med(serverCpu.syncS3).toFixed(2)}, during export ${med(serverCpu.exportS3).toFixed(2)}; PostgreSQL during sync ${med(serverCpu.pgSync).toFixed(2)}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  });
});
