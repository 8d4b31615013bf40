/**
 * Progress on stderr in each --progress mode: without a terminal (a CI log), a line every few seconds
 * with the totals, speed and time left; on a terminal (a pseudo-terminal from util-linux's `script`),
 * bars with a total that shows the speed and time left; json, an object a line a script parses; none,
 * nothing. The registry's blobs trickle through a proxy so the pull lasts. Registry waits (a refused
 * connection retried) are said with what they wait for and when the next try comes.
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
      /^progress: [\d.]+ \S+ of 3\.8 MB \(\d+%\), \d of 4 blobs, ([\d.]+ \S+\/s|stalled), (\d+ s left|time left unknown)$/,
    );
    // Rates are rounded: no run of digits after a decimal point.
    for (const l of lines) expect(l).not.toMatch(/\.\d{2,}/);
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

  it("writes one JSON object a line with --progress json, the job events' fields, even with --json", async () => {
    const w = await workdir('progress-json', insecureConf(proxy.host));
    const r = await stowage(
      [
        'pull',
        '--json',
        '--progress',
        'json',
        `${proxy.host}/fixtures/multi:v1`,
        '-o',
        join(w.dir, 'multi.tar'),
      ],
      { env: w.env },
    );
    expect(r.code, r.stderr).toBe(0);
    const events = r.stderr
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const progress = events.filter((e) => e.type === 'progress');
    expect(progress.length).toBeGreaterThanOrEqual(3);
    for (const e of progress)
      expect(Object.keys(e).sort()).toEqual(
        [
          'blobs',
          'blobsDone',
          'bytes',
          'bytesDone',
          'bytesPerSecond',
          'secondsLeft',
          'stalled',
          'type',
        ].sort(),
      );
    const done = progress.map((e) => e.bytesDone as number);
    expect(done).toEqual([...done].sort((a, b) => a - b));
    const result = JSON.parse(r.stdout) as { contentBytes: number; blobs: number };
    expect(progress.at(-1)).toMatchObject({
      blobs: 4,
      blobsDone: 4,
      bytesDone: progress.at(-1)!.bytes,
      secondsLeft: 0,
    });
    // The blobs' bytes: what the archive holds but its small manifests and index.
    expect(progress.at(-1)!.bytes).toBeLessThanOrEqual(result.contentBytes);
    expect(progress.at(-1)!.bytes).toBeGreaterThan(result.contentBytes * 0.99);

    // none: nothing on stderr, even where auto would write lines.
    const none = await stowage(
      ['pull', '--progress', 'none', `${proxy.host}/fixtures/multi:v1`, '-o', join(w.dir, 'none.tar')],
      { env: { ...w.env, STOWAGE_PROGRESS_INTERVAL: '0.2' } },
    );
    expect(none.code, none.stderr).toBe(0);
    expect(none.stderr).toBe('');
    // tty into a pipe: the bars are drawn anyway (a wrapper that shows them itself).
    const tty = await stowage(
      ['pull', '--progress', 'tty', `${proxy.host}/fixtures/multi:v1`, '-o', join(w.dir, 'tty.tar')],
      { env: w.env },
    );
    expect(tty.code, tty.stderr).toBe(0);
    expect(tty.stderr).toContain('total');
    expect(tty.stderr).toContain('3.8 MB');
    // A mode that does not exist is refused, naming the modes.
    const bad = await stowage(['pull', '--progress', 'bars', `${proxy.host}/fixtures/multi:v1`], {
      env: w.env,
    });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/auto, tty, plain, json, none/);
  });

  it('gives sync and export the same JSON progress', async () => {
    const w = await workdir('progress-sync', insecureConf(proxy.host, h.registries.plain.host));
    const sync = await stowage(
      [
        'sync',
        '--progress',
        'json',
        '--store',
        join(w.dir, 'store'),
        '--src',
        `${proxy.host}/fixtures/multi`,
        '--tags',
        'v1',
      ],
      { env: w.env },
    );
    expect(sync.code, sync.stderr).toBe(0);
    const last = (out: string) =>
      out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, number>)
        .filter((e) => (e.type as unknown) === 'progress')
        .at(-1);
    const s = last(sync.stderr)!;
    expect(s.blobs).toBeGreaterThanOrEqual(4);
    expect(s).toMatchObject({ blobsDone: s.blobs, bytesDone: s.bytes });
    const exp = await stowage(
      [
        'export',
        '--progress',
        'json',
        `${h.registries.plain.host}/fixtures/multi:v1`,
        '-o',
        join(w.dir, 'rootfs.tar'),
      ],
      { env: w.env },
    );
    expect(exp.code, exp.stderr).toBe(0);
    const e = last(exp.stderr)!;
    expect(e.blobs).toBeGreaterThanOrEqual(1);
    expect(e).toMatchObject({ blobsDone: e.blobs, bytesDone: e.bytes });
  });

  it('says that it retries a registry that refuses connections, and when, before the error', async () => {
    const w = await workdir('progress-wait', insecureConf('127.0.0.1:9'));
    const out = join(w.dir, 'never.tar');
    const args = [
      'pull',
      '--retry-times',
      '2',
      '--retry-delay',
      '100ms',
      '127.0.0.1:9/some/image:1',
      '-o',
      out,
    ];
    const r = await stowage(args, { env: w.env });
    expect(r.code).toBe(8);
    const waits = r.stderr.split('\n').filter((l) => l.startsWith('stowage: waiting: '));
    expect(waits[0]).toBe(
      'stowage: waiting: 127.0.0.1:9: connection refused; trying again in 0.1 s (2 of 3)',
    );
    expect(waits).toHaveLength(2);
    const json = await stowage([...args, '--progress', 'json'], { env: w.env });
    const objects = json.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    expect(objects[0]).toMatchObject({
      type: 'wait',
      host: '127.0.0.1:9',
      reason: 'ECONNREFUSED',
      attempt: 2,
      attempts: 3,
    });
    const quiet = await stowage([...args, '-q'], { env: w.env });
    expect(quiet.code).toBe(8);
    expect(quiet.stderr).not.toContain('waiting');
  });
});
