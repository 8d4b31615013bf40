/**
 * A real S3 endpoint on loopback: Ceph's radosgw (Debian's ceph-mon, ceph-osd, radosgw) on a
 * one-monitor, one-OSD cluster that keeps its data in memory (memstore), without ceph-mgr, cephadm or
 * systemd. Everything lives under one temporary directory, named by its ceph.conf; the daemons are
 * stopped by their pid files. Ready in about 1.5 s here. The settings that matter are explained in
 * ../shared/PEERS.md; the ones without which it does not start at all are marked below.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import type { S3Location } from '../../src/store/s3-blobs.js';
import { freePort, run } from './processes.js';

export interface RunningS3 {
  /** http://127.0.0.1:PORT (path-style requests only). */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Kills the gateway (SIGKILL: connections cut mid-request), waits `downMs`, starts it again. */
  restartGateway(downMs: number): Promise<void>;
  stop(): Promise<void>;
}

const RGW_POOLS = [
  '.rgw.root',
  'default.rgw.control',
  'default.rgw.meta',
  'default.rgw.log',
  'default.rgw.buckets.index',
  'default.rgw.buckets.data',
  'default.rgw.buckets.non-ec',
];

function cephConf(dir: string, fsid: string, monHost: string, rgwPort: number, memBytes: number): string {
  return `[global]
fsid = ${fsid}
mon host = ${monHost}
auth cluster required = none
auth service required = none
auth client required = none
# Required with auth none: radosgw otherwise retries its initial auth for 300 s.
ms mon client mode = crc secure
# Required for one OSD.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
mon warn on pool no redundancy = false
paxos propose interval = 0.05
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
keyring = ${dir}/keyring
mon data = ${dir}/mon/$cluster-$id
osd data = ${dir}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = ${memBytes}
# Deleted objects are otherwise kept two hours: with memstore, memory that never comes back.
rgw gc obj min wait = 5
rgw gc processor period = 10

[client.rgw.a]
# Without tcp_nodelay small requests take 45 ms instead of 5.
rgw frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1
rgw data = ${dir}/rgw
`;
}

/** Runs `ceph` with commands on its standard input: one process for many commands (pools). */
function cephBatch(commands: string[], env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('ceph', [], { env, stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += String(d);
    });
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`ceph exited ${code}: ${stderr.slice(-2000)}`)),
    );
    child.stdin.end(`${commands.join('\n')}\n`);
  });
}

async function waitForS3(endpoint: string, dir: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const ok = await fetch(endpoint)
      .then((r) => r.status === 200)
      .catch(() => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  const logs = await readFile(join(dir, 'log', 'client.rgw.a.log'), 'utf8').catch(() => '');
  throw new Error(`radosgw did not answer within 30 s: ${logs.slice(-2000)}`);
}

async function alive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Stops every daemon whose pid file is under `dir`/run, then removes `dir`. */
async function stopCluster(dir: string): Promise<void> {
  const runDir = join(dir, 'run');
  const pids: number[] = [];
  for (const f of await readdir(runDir).catch(() => [] as string[])) {
    if (!f.endsWith('.pid')) continue;
    const pid = Number((await readFile(join(runDir, f), 'utf8')).trim());
    if (Number.isInteger(pid) && pid > 0) pids.push(pid);
  }
  // memstore keeps nothing worth a clean shutdown: a short grace, then SIGKILL.
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // Gone already.
    }
  }
  const deadline = Date.now() + 1_000;
  for (const pid of pids) {
    while (Date.now() < deadline) {
      try {
        process.kill(pid, 0);
        await new Promise((r) => setTimeout(r, 50));
      } catch {
        break;
      }
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Stopped.
    }
  }
  await rm(dir, { recursive: true, force: true });
}

/** Starts a single-node Ceph cluster with radosgw and one S3 user; `stop()` ends it and removes it all. */
export async function startRadosgw(opts: { memBytes?: number } = {}): Promise<RunningS3> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-rgw-'));
  try {
    for (const d of ['run', 'log', 'mon', 'osd', 'rgw']) await mkdir(join(dir, d));
    const [monV2, monV1, rgwPort] = [await freePort(), await freePort(), await freePort()];
    const fsid = randomUUID();
    const monHost = `[v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]`;
    const conf = join(dir, 'ceph.conf');
    await writeFile(conf, cephConf(dir, fsid, monHost, rgwPort, opts.memBytes ?? 1 << 30));
    const env = { ...process.env, CEPH_CONF: conf };
    const ceph = (cmd: string, args: string[]) => run(cmd, args, { env });
    await ceph('monmaptool', ['--create', '--addv', 'a', monHost, '--fsid', fsid, join(dir, 'monmap')]);
    await ceph('ceph-authtool', ['--create-keyring', join(dir, 'keyring'), '--gen-key', '-n', 'mon.']);
    await ceph('ceph-mon', [
      '--mkfs',
      '-i',
      'a',
      '--monmap',
      join(dir, 'monmap'),
      '--keyring',
      join(dir, 'keyring'),
    ]);
    await ceph('ceph-mon', ['-i', 'a']);
    const osdUuid = randomUUID();
    const id = (await ceph('ceph', ['osd', 'create', osdUuid])).stdout.trim();
    await mkdir(join(dir, 'osd', `ceph-${id}`));
    await ceph('ceph-osd', ['-i', id, '--mkfs', '--osd-uuid', osdUuid]);
    await ceph('ceph-osd', ['-i', id]);
    // One ceph process for every pool: 13 s to ready becomes under 2.
    await cephBatch(
      [
        ...RGW_POOLS.map((p) => `osd pool create ${p} 8`),
        ...RGW_POOLS.map((p) => `osd pool application enable ${p} rgw`),
      ],
      env,
    );
    await ceph('radosgw', ['-n', 'client.rgw.a']);
    const accessKeyId = 'STOWAGETESTKEY';
    const secretAccessKey = randomUUID().replaceAll('-', '');
    await ceph('radosgw-admin', [
      'user',
      'create',
      '--uid',
      'stowage',
      '--display-name',
      'stowage tests',
      '--access-key',
      accessKeyId,
      '--secret-key',
      secretAccessKey,
    ]);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await waitForS3(endpoint, dir);
    const restartGateway = async (downMs: number) => {
      const pidFile = join(dir, 'run', 'client.rgw.a.pid');
      const pid = Number((await readFile(pidFile, 'utf8')).trim());
      process.kill(pid, 'SIGKILL');
      while (await alive(pid)) await new Promise((r) => setTimeout(r, 50));
      await rm(pidFile, { force: true });
      await new Promise((r) => setTimeout(r, downMs));
      await ceph('radosgw', ['-n', 'client.rgw.a']);
      await waitForS3(endpoint, dir);
    };
    return {
      endpoint,
      accessKeyId,
      secretAccessKey,
      region: 'us-east-1',
      restartGateway,
      stop: () => stopCluster(dir),
    };
  } catch (e) {
    await stopCluster(dir);
    throw e;
  }
}

/** Makes `bucket` on the endpoint and returns where a store under `prefix` of it is (S3Blobs' location). */
export async function s3Bucket(s3: RunningS3, bucket: string, prefix = ''): Promise<S3Location> {
  const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
  const admin = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials });
  try {
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    admin.destroy();
  }
  return { endpoint: s3.endpoint, bucket, prefix, region: s3.region, pathStyle: true, credentials };
}
