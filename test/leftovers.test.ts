/**
 * Crashes leave nothing behind for long: a pull killed with SIGKILL leaves its partial archive, and the
 * next run into the same directory removes it; a store's .tmp keeps what killed writers left until the
 * next sync (or service start) removes it, `df` counts it meanwhile and `verify` reports it. Nothing a
 * live process is still writing is ever touched.
 */
import { spawn } from 'node:child_process';
import { mkdir, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, isBlobGet, startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';
import { until } from './harness/until.js';

const h = harness();
const plain = h.registries.plain;
const proxies: FaultProxy[] = [];
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

/** The pid of a process that has exited (nothing runs under it any more). */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((r) => child.on('exit', r));
  return child.pid!;
}

describe('what crashes leave behind', () => {
  it('a pull killed with SIGKILL leaves a partial; the next pull into that directory removes it, not a live one', async () => {
    // The proxy holds back the end of the large layer, so the pull is surely mid-write when killed.
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) => (isBlobGet(req) ? { kind: 'trickle', bytes: 64 * 1024, everyMs: 20 } : undefined),
    });
    proxies.push(proxy);
    const w = await workdir('killed-pull', insecureConf(proxy.host, plain.host));
    const out = join(w.dir, 'out');
    await mkdir(out);
    const child = spawn(
      process.execPath,
      [BIN, 'pull', '-q', `${proxy.host}/fixtures/large:v1`, '-o', join(out, 'big.tar')],
      { env: w.env, stdio: 'ignore' },
    );
    const partial = await until('the partial archive', async () => {
      const names = await readdir(out);
      const p = names.find((n) => n.endsWith('.partial'));
      return p && (await stat(join(out, p))).size > 0 ? p : undefined;
    });
    expect(partial).toMatch(new RegExp(`^\\.big\\.tar\\.${child.pid}-[0-9a-f]{8}\\.partial$`));
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    expect(await readdir(out)).toContain(partial);

    // One a live process is writing (this test's own pid) must survive the sweep.
    const live = `.other.tar.${process.pid}-0123abcd.partial`;
    await writeFile(join(out, live), 'still being written');
    const r = await stowage(['pull', '-q', `${plain.host}/fixtures/small:v1`, '-o', join(out, 'small.tar')], {
      env: w.env,
    });
    expect(r.code, r.stderr).toBe(0);
    expect((await readdir(out)).sort()).toEqual([live, 'small.tar', 'small.tar.sha256'].sort());
  });

  it('a store keeps dead writers’ leftovers until the next sync: df counts them, verify reports them', async () => {
    const w = await workdir('store-leftovers', insecureConf(plain.host));
    const store = join(w.dir, 'store');
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${store}"\n\n[[job]]\nname = "small"\nsource = "${plain.host}/fixtures/small"\ntags = ["v1"]\n`,
    );
    const first = await stowage(['sync', '-q', '--config', config], { env: w.env });
    expect(first.code, first.stderr).toBe(0);
    const df0 = JSON.parse((await stowage(['df', '--json', '--config', config], { env: w.env })).stdout);

    // What a SIGKILLed sync or service leaves: blobs half written by a process that is gone (both the
    // current naming and the one earlier versions used), and one a running process is still writing.
    const dead = await deadPid();
    const tmp = join(store, '.tmp');
    const leftovers = {
      [`.${'a'.repeat(64)}.${dead}-0badf00d.partial`]: 300_000,
      [`${'b'.repeat(64)}.${dead}.k3j4h5`]: 456_000,
    };
    for (const [name, size] of Object.entries(leftovers)) {
      await writeFile(join(tmp, name), '');
      await truncate(join(tmp, name), size);
    }
    const live = `.${'c'.repeat(64)}.${process.pid}-0badf00d.partial`;
    await writeFile(join(tmp, live), 'x'.repeat(1000));

    const df1 = JSON.parse((await stowage(['df', '--json', '--config', config], { env: w.env })).stdout);
    expect(df1.diskBytes).toBe(df0.diskBytes + 300_000 + 456_000 + 1000);

    const v = await stowage(['verify', '--json', store], { env: w.env });
    expect(v.code, v.stderr).toBe(0);
    const report = JSON.parse(v.stdout);
    expect(report.ok).toBe(true);
    expect(report.warnings.join('\n')).toContain('2 leftover files (756000 bytes)');
    const text = await stowage(['verify', store], { env: w.env });
    expect(text.stdout).toContain('leftover files');

    const again = await stowage(['sync', '-q', '--config', config], { env: w.env });
    expect(again.code, again.stderr).toBe(0);
    expect(await readdir(tmp)).toEqual([live]);
    const df2 = JSON.parse((await stowage(['df', '--json', '--config', config], { env: w.env })).stdout);
    expect(df2.diskBytes).toBe(df0.diskBytes + 1000);
    const after = JSON.parse((await stowage(['verify', '--json', store], { env: w.env })).stdout);
    expect(after.warnings).toEqual([]);
  });
});

describe('scratch directories', () => {
  it('a docker-archive push removes the scratch directories of killed pushes, never a live one', async () => {
    const w = await workdir('push-scratch', insecureConf(plain.host));
    const tmp = join(w.dir, 'tmp');
    await mkdir(tmp);
    const env = { ...w.env, TMPDIR: tmp };
    const archive = join(w.dir, 'small.tar');
    const pulled = await stowage(
      ['pull', '-q', '-f', 'docker-archive', `${plain.host}/fixtures/small:v1`, '-o', archive],
      // Another HOME: the push then has no memory of the manifest, and gzips through a scratch directory.
      { env: (await workdir('push-scratch-pull', insecureConf(plain.host))).env },
    );
    expect(pulled.code, pulled.stderr).toBe(0);
    // What a push killed while gzipping layers leaves, and one a running push is using.
    const dead = join(tmp, `stowage-push-${await deadPid()}-AbC123`);
    const live = join(tmp, `stowage-push-${process.pid}-XyZ789`);
    for (const d of [dead, live]) {
      await mkdir(d);
      await writeFile(join(d, '0-layer.gz'), 'gzipped layer bytes');
    }
    const r = await stowage(['push', '-q', archive, `${plain.host}/scratch/small:v1`], { env });
    expect(r.code, r.stderr).toBe(0);
    // The dead one is gone, the live one kept, and the push's own removed when it finished. (Node 22+
    // keeps its compile cache in TMPDIR too: not ours to judge.)
    expect((await readdir(tmp)).filter((n) => n.startsWith('stowage-push-'))).toEqual([
      live.split('/').at(-1),
    ]);
  });
});

describe('verify of damaged files', () => {
  it('says a cut-short archive is truncated, and counts every blob, the damaged ones too', async () => {
    const w = await workdir('verify-truncated', insecureConf(plain.host));
    const out = join(w.dir, 'multi.tar');
    const pulled = await stowage(['pull', '-q', `${plain.host}/fixtures/multi:v1`, '-o', out], {
      env: w.env,
    });
    expect(pulled.code, pulled.stderr).toBe(0);
    const intact = JSON.parse((await stowage(['verify', '--json', out], { env: w.env })).stdout);
    expect(intact.ok).toBe(true);

    // A byte changed in one layer: the summary still counts every blob.
    const damaged = join(w.dir, 'damaged.tar');
    await run('cp', [out, damaged]);
    const layer = (await run('tar', ['-tf', damaged])).stdout
      .split('\n')
      .find(
        (n) =>
          /^blobs\/sha256\/[0-9a-f]{64}$/.test(n) &&
          n !== `blobs/sha256/${h.fixtures.images.multi!.digest.slice(7)}`,
      )!;
    const { damageEntry } = await import('./harness/tools.js');
    await damageEntry(damaged, layer);
    const bad = await stowage(['verify', '--json', damaged], { env: w.env });
    const report = JSON.parse(bad.stdout);
    expect(report.ok).toBe(false);
    expect(report.blobs).toBe(intact.blobs);

    // Cut in the middle of the archive.
    const cut = join(w.dir, 'cut.tar');
    await run('cp', [out, cut]);
    await truncate(cut, Math.floor((await stat(out)).size / 2) + 100);
    const t = await stowage(['verify', cut], { env: w.env });
    expect(t.code).toBe(6);
    expect(t.stderr).toContain('truncated');
  });
});

describe('the service at start', () => {
  it('removes uploads and blobs that a killed service was writing, and keeps a live writer’s', async () => {
    const { serviceDir, startService } = await import('./harness/service.js');
    const d = await serviceDir('svc-leftovers', insecureConf(plain.host));
    const dead = await deadPid();
    await mkdir(join(d.state, 'tmp'), { recursive: true });
    await mkdir(join(d.store, '.tmp'), { recursive: true });
    const spool = join(d.state, 'tmp', `upload-${dead}-abc123.tar`);
    const blob = join(d.store, '.tmp', `.${'d'.repeat(64)}.${dead}-0badf00d.partial`);
    const live = join(d.store, '.tmp', `.${'e'.repeat(64)}.${process.pid}-0badf00d.partial`);
    for (const f of [spool, blob, live]) await writeFile(f, 'partial bytes');
    const s = await startService(d);
    try {
      expect(await readdir(join(d.state, 'tmp'))).toEqual([]);
      expect(await readdir(join(d.store, '.tmp'))).toEqual([live.split('/').at(-1)]);
    } finally {
      await s.stop('SIGKILL');
    }
  });
});
