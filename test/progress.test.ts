/**
 * Progress on stderr: without a terminal (a CI log), a line every few seconds with the totals, speed
 * and time left; on a terminal (a pseudo-terminal from util-linux's `script`), bars with a total that
 * shows the speed and time left. The registry's blobs trickle through a proxy so the pull lasts.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';

const h = harness();
let proxy: FaultProxy;

beforeAll(async () => {
  proxy = await startFaultProxy({
    upstream: `http://${h.registries.plain.host}`,
    fault: (req) =>
      req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')
        ? { kind: 'trickle', bytes: 256 * 1024, everyMs: 50 }
        : undefined,
  });
});

afterAll(async () => {
  await proxy?.close();
});

describe('progress', () => {
  it('writes a line of totals every few seconds when stderr is not a terminal', async () => {
    const w = await workdir('progress-log', insecureConf(proxy.host));
    const r = await stowage(['pull', `${proxy.host}/fixtures/multi:v1`, '-o', join(w.dir, 'multi.tar')], {
      env: { ...w.env, STOWAGE_PROGRESS_INTERVAL: '0.3' },
    });
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('progress: '));
    expect(lines.length).toBeGreaterThanOrEqual(2);
    expect(lines.at(-1)).toMatch(
      /^progress: [\d.]+ \S+ of 3\.8 MB \(\d+%\), \d of 4 blobs, [\d.]+ \S+\/s(, \d+ s left)?$/,
    );
    // No terminal control characters in a log.
    expect(r.stderr).not.toContain('\u001b[');
    // -q keeps it quiet.
    const quiet = await stowage(
      ['pull', '-q', `${proxy.host}/fixtures/multi:v1`, '-o', join(w.dir, 'q.tar')],
      {
        env: { ...w.env, STOWAGE_PROGRESS_INTERVAL: '0.3' },
      },
    );
    expect(quiet.stderr).not.toContain('progress:');
  });

  it('draws bars with a total, its speed and time left, on a terminal', async () => {
    const w = await workdir('progress-tty', insecureConf(proxy.host));
    const out = join(w.dir, 'multi.tar');
    const cmd = `${process.execPath} ${BIN} pull ${proxy.host}/fixtures/multi:v1 -o ${out}`;
    const { stdout } = await run('script', ['-qec', cmd, '/dev/null'], { env: w.env });
    expect(stdout).toContain('total');
    expect(stdout).toMatch(/\/s/);
    expect(stdout).toContain('3.8 MB');
  });
});
