import { spawn } from 'node:child_process';
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

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
