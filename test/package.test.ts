/**
 * The package as npm installs it (issue 34): the bundle (dist/stowage.cjs) holds every dependency but
 * those it loads at run time, and the build copies the files it serves (Swagger UI). Of those, the S3
 * and PostgreSQL clients and pg-boss (replicas only) are optional peer dependencies and the keyring addon
 * an optional dependency: packed and installed into an empty directory, it brings none of the first,
 * starts, serves the console and its API page, says it is ready, and a replica's configuration says
 * which packages to install.
 */
import { spawnSync } from 'node:child_process';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
    const runtime = [
      ...Object.keys(pkg.dependencies ?? {}),
      ...Object.keys(pkg.optionalDependencies ?? {}),
      ...Object.keys(pkg.peerDependencies ?? {}),
    ];
    // Nothing is a plain dependency: what the embedded default needs is in the bundle.
    expect(Object.keys(pkg.dependencies ?? {})).toEqual([]);
    expect(runtime.filter((d) => !outside(d))).toEqual([]);
    // Every peer is optional (replicas only), and the tests have each of them.
    for (const p of Object.keys(pkg.peerDependencies)) {
      expect(pkg.peerDependenciesMeta[p], p).toEqual({ optional: true });
      expect(pkg.devDependencies[p], p).toBeDefined();
    }
    const deps = runtime;
    expect(deps).not.toContain('tar-stream');
    const tracked = (await run('git', ['ls-files'], { cwd: ROOT })).stdout.split('\n');
    expect(tracked.filter((f) => /node_trace/.test(f))).toEqual([]);
  });

  it('installed alone, brings no replica package, starts, serves the console, and says what replicas need', async () => {
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
    const present = (p: string) =>
      access(join(work, 'node_modules', p)).then(
        () => true,
        () => false,
      );
    for (const p of ['@aws-sdk/client-s3', 'pg', 'pg-boss', 'swagger-ui-dist'])
      expect(await present(p), p).toBe(false);
    const bin = join(work, 'node_modules/.bin/stowage');
    // A replica's configuration, without the packages: named, with the command that installs them.
    const replicaToml = join(work, 'replica.toml');
    await writeFile(
      replicaToml,
      '[store.s3]\nendpoint = "http://127.0.0.1:9"\nbucket = "stowage"\n\n[server]\ndatabase = "postgres://u@127.0.0.1:9/db"\n',
    );
    const refused = spawnSync(bin, ['archives', '--config', replicaToml], {
      cwd: work,
      encoding: 'utf8',
      env: {
        PATH: process.env.PATH,
        HOME: join(work, 'home'),
        AWS_ACCESS_KEY_ID: 'k',
        AWS_SECRET_ACCESS_KEY: 's',
      },
    });
    expect(refused.status, refused.stderr).toBe(2);
    expect(refused.stderr).toContain('npm install @aws-sdk/client-s3 @aws-sdk/lib-storage pg');
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
      for (const asset of [
        'console.js',
        'console.css',
        'swagger/swagger-ui-bundle.js',
        'swagger/swagger-ui.css',
      ]) {
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
