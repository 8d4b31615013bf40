/**
 * The package as npm installs it: the bundle (dist/stowage.cjs) holds every dependency but those it
 * loads at run time (the keyring addon, the S3 and PostgreSQL clients, pg-boss) and the files it serves
 * (Swagger UI), so only those are runtime dependencies. Packed, installed with --omit=dev into an empty
 * directory, it starts, serves the console and says it is ready.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, run } from './harness/processes.js';

const ROOT = resolve(import.meta.dirname, '..');
const dirs: string[] = [];

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('the package', () => {
  it('declares as runtime dependencies only what the bundle leaves outside it', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'));
    const bundle = await readFile(join(ROOT, 'scripts/bundle.mjs'), 'utf8');
    const externals = JSON.parse(
      (/external: (\[[^\]]*\])/.exec(bundle)?.[1] ?? '[]').replaceAll("'", '"'),
    ) as string[];
    const outside = (name: string) =>
      externals.some((e) => e === name || (e.endsWith('/*') && name.startsWith(e.slice(0, -1))));
    const deps = Object.keys(pkg.dependencies);
    // Served as files by the console, not imported.
    const served = ['swagger-ui-dist'];
    expect(deps.filter((d) => !outside(d) && !served.includes(d))).toEqual([]);
    expect(deps).not.toContain('tar-stream');
    const tracked = (await run('git', ['ls-files'], { cwd: ROOT })).stdout.split('\n');
    expect(tracked.filter((f) => /node_trace/.test(f))).toEqual([]);
  });

  it('installed with --omit=dev, starts and serves the console', async () => {
    const work = await mkdtemp(join(tmpdir(), 'stowage-package-'));
    dirs.push(work);
    const packed = (
      await run('npm', ['pack', '--silent', '--pack-destination', work], { cwd: ROOT })
    ).stdout.trim();
    await run('npm', ['init', '-y'], { cwd: work });
    await run(
      'npm',
      [
        'install',
        '--omit=dev',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        join(work, packed.split('\n').at(-1)!),
      ],
      { cwd: work },
    );
    const bin = join(work, 'node_modules/.bin/stowage');
    expect((await run(bin, ['--version'], { cwd: work })).stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const port = await freePort();
    const { spawn } = await import('node:child_process');
    const child = spawn(
      bin,
      [
        'serve',
        '--listen',
        `127.0.0.1:${port}`,
        '--state',
        join(work, 'state'),
        '--store',
        join(work, 'store'),
      ],
      {
        cwd: work,
        env: { PATH: process.env.PATH, HOME: join(work, 'home') },
        stdio: 'ignore',
      },
    );
    try {
      let ready = false;
      for (let i = 0; i < 100 && !ready; i++) {
        ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
          (r) => r.ok,
          () => false,
        );
        if (!ready) await new Promise((r) => setTimeout(r, 100));
      }
      expect(ready).toBe(true);
      expect((await fetch(`http://127.0.0.1:${port}/ui/login`)).status).toBe(200);
      for (const asset of ['console.js', 'console.css', 'swagger/swagger-ui-bundle.js']) {
        expect((await fetch(`http://127.0.0.1:${port}/ui/assets/${asset}`)).status, asset).toBe(200);
      }
    } finally {
      // Waited for: a serve that is still stopping writes its state and code cache into the directory
      // the clean-up removes (ENOTEMPTY, seen once in CI).
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    }
  }, 180_000);
});
