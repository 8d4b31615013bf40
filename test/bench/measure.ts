import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { blobLocationsPath, defaultCachePath } from '../../src/config/stowage.js';
import { DigestCache } from '../../src/engine/digest-cache.js';
import { collectOutput } from '../harness/processes.js';

export interface Measured {
  seconds: number;
  maxRssBytes: number;
  /** User + system CPU time of the command and its children: what the work cost, whatever the cores. */
  coreSeconds: number;
  stdout: string;
}

/**
 * Runs a command under python3's getrusage(RUSAGE_CHILDREN), so the peak RSS of skopeo and of stowage
 * is measured the same way.
 */
export async function measure(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Measured> {
  const wrapper =
    'import resource,subprocess,sys,time\n' +
    't=time.monotonic(); r=subprocess.run(sys.argv[1:]); d=time.monotonic()-t\n' +
    'u=resource.getrusage(resource.RUSAGE_CHILDREN)\n' +
    'sys.stderr.write("\\nbench-result %f %d %d %f\\n" % (d, u.ru_maxrss, r.returncode, u.ru_utime+u.ru_stime))\n';
  const child = spawn('python3', ['-c', wrapper, cmd, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const { stdout, stderr } = await collectOutput(child);
  const m = /bench-result ([\d.]+) (\d+) (-?\d+) ([\d.]+)/.exec(stderr);
  if (m?.[3] !== '0') throw new Error(`${cmd} ${args.join(' ')} failed: ${stderr.slice(-2000)}`);
  return { seconds: Number(m![1]), maxRssBytes: Number(m![2]) * 1024, coreSeconds: Number(m![4]), stdout };
}

/**
 * A process's name and the CPU seconds it has used so far (utime + stime from /proc/PID/stat, in
 * USER_HZ, 100 a second on Linux): a peer's own share of the machine (a registry, radosgw, PostgreSQL).
 * Undefined once the process is gone.
 */
export async function processCpu(
  pid: number | string,
): Promise<{ name: string; seconds: number } | undefined> {
  const { readFile } = await import('node:fs/promises');
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const m = /^\d+ \((.*)\) (.*)$/s.exec(stat.trim());
  if (!m) return undefined;
  const f = m[2]!.split(' ');
  return { name: m[1]!, seconds: (Number(f[11]) + Number(f[12])) / 100 };
}

/** CPU seconds the processes (a benchmark's registries) have used so far, together; they must still run. */
export async function coreSecondsOf(pids: number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) {
    const p = await processCpu(pid);
    if (!p) throw new Error(`process ${pid} of the benchmark has exited`);
    total += p.seconds;
  }
  return total;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Times, peak RSS and core-seconds of one command over the rounds. */
export interface Samples {
  t: number[];
  rss: number[];
  cpu: number[];
}

export function samples(): Samples {
  return { t: [], rss: [], cpu: [] };
}

export function addSample(into: Samples, r: Measured): void {
  into.t.push(r.seconds);
  into.rss.push(r.maxRssBytes);
  into.cpu.push(r.coreSeconds);
}

const fmtMiB = (b: number) => `${(b / 1024 / 1024).toFixed(1)} MiB`;

/** One line of a benchmark's table: best and median time, peak RSS, core-seconds, and per GB moved. */
export function sampleLine(name: string, r: Samples, width: number, bytes: number): string {
  const cpu = median(r.cpu);
  const perGB = bytes > 0 ? `  ${(cpu / (bytes / 1e9)).toFixed(2)} core-s/GB` : '';
  return `  ${name.padEnd(width)} best ${Math.min(...r.t).toFixed(2)} s  median ${median(r.t).toFixed(2)} s  peak RSS ${fmtMiB(Math.max(...r.rss))}  core-s ${cpu.toFixed(2)}${perGB}`;
}

/**
 * The CPU this run measures on, as each tool sees it. BENCH_NO_SHA=stowage masks SHA extensions for
 * Node's OpenSSL (OPENSSL_ia32cap=:~0x20000000), as issue 21 asks; BENCH_NO_SHA=both also runs skopeo
 * with GODEBUG=cpu.avx2=off, the only switch that takes them from Go 1.19's sha256 (its SHA path needs
 * AVX2 too, so that costs skopeo AVX2 as well). Node's sha256 speed under the setting is printed, so a
 * mask that did not take shows.
 */
export interface CpuSetting {
  label: string;
  stowageEnv: Record<string, string>;
  skopeoEnv: Record<string, string>;
}

export async function cpuSetting(): Promise<CpuSetting> {
  const { readFile } = await import('node:fs/promises');
  const { cpus } = await import('node:os');
  const { execFileSync } = await import('node:child_process');
  const info = await readFile('/proc/cpuinfo', 'utf8');
  const mode = process.env.BENCH_NO_SHA ?? '';
  const stowageEnv: Record<string, string> = mode ? { OPENSSL_ia32cap: ':~0x20000000' } : {};
  const skopeoEnv: Record<string, string> = mode === 'both' ? { GODEBUG: 'cpu.avx2=off' } : {};
  const speed = execFileSync(
    process.execPath,
    [
      '-e',
      "const c=require('crypto');const b=Buffer.alloc(256<<20);const t=process.hrtime.bigint();c.createHash('sha256').update(b).digest();console.log(Math.round(b.length/(Number(process.hrtime.bigint()-t)/1e9)/1e6))",
    ],
    { env: { ...process.env, ...stowageEnv } },
  )
    .toString()
    .trim();
  const model = /model name\s*:\s*(.*)/.exec(info)?.[1] ?? 'unknown CPU';
  const sha = info.includes('sha_ni') ? 'with SHA extensions' : 'without SHA extensions';
  const masked =
    mode === 'both'
      ? '; SHA masked for stowage (OPENSSL_ia32cap) and skopeo (GODEBUG=cpu.avx2=off)'
      : mode
        ? '; SHA masked for stowage only (OPENSSL_ia32cap; skopeo keeps them)'
        : '';
  return {
    label: `${cpus().length} cores, ${model}, ${sha}${masked}; Node sha256 ${speed} MB/s`,
    stowageEnv,
    skopeoEnv,
  };
}

/** measure() with the tool's side of the CPU setting (skopeo's or stowage's mask) added to `env`. */
export function measureOn(
  cpu: CpuSetting,
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<Measured> {
  return measure(cmd, args, { ...env, ...(cmd === 'skopeo' ? cpu.skopeoEnv : cpu.stowageEnv) });
}

/**
 * Makes stowage forget what earlier runs learned about layers (its digest cache: compressions made,
 * diff_ids checked) and where registries hold them (its blob locations: what a copy into a new
 * repository would mount), so a round measures the work itself: the files the engine opens for `env`,
 * the environment the measured commands get. Its compiled-code cache (.cache/stowage/code) stays: every
 * run but a user's very first has it, and without it each start compiles the bundle afresh (60 ms more
 * here), which would measure a first run, not a restore.
 */
export async function forgetLearned(env: NodeJS.ProcessEnv): Promise<void> {
  await rm(DigestCache.defaultPath(dirname(defaultCachePath(env))), { force: true });
  await rm(blobLocationsPath(env), { recursive: true, force: true });
}
