/**
 * What a newcomer trips over: the version, a password on the command line, the sync flag that looked
 * like a job name, and pushes that write where the archive says without saying so first.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';

const h = harness();
const plain = h.registries.plain;
const small = `${plain.host}/fixtures/small:v1`;

async function tagsOf(repo: string): Promise<string[]> {
  const r = await run('skopeo', ['list-tags', '--tls-verify=false', `docker://${repo}`]).catch(
    (e: Error) => e,
  );
  return r instanceof Error ? [] : (JSON.parse(r.stdout).Tags ?? []);
}

describe('small things', () => {
  it('prints its version with --version and with version', async () => {
    const w = await workdir('version');
    const pkg = JSON.parse(await readFile(join(import.meta.dirname, '..', 'package.json'), 'utf8'));
    for (const args of [['--version'], ['version']]) {
      const r = await stowage(args, { env: w.env });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${pkg.version}\n`);
    }
  });

  it('refuses login -p and points to --password-stdin, never echoing the password', async () => {
    const w = await workdir('login-p', insecureConf(h.registries.basic.host));
    const r = await stowage(['login', '-u', h.user, '-p', 'not-to-be-seen', h.registries.basic.host], {
      env: w.env,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--password-stdin');
    expect(r.stdout + r.stderr).not.toContain('not-to-be-seen');
  });

  it('takes sync parallelism as --parallel, so job names are never mistaken for it', async () => {
    const w = await workdir('sync-parallel', insecureConf(plain.host));
    const config = join(w.dir, 'stowage.toml');
    await writeFile(
      config,
      `[store]\npath = "${join(w.dir, 'store')}"\n\n[[job]]\nname = "deb"\nsource = "${plain.host}/fixtures/small"\ntags = ["v1"]\n`,
    );
    const r = await stowage(['sync', '--json', '--parallel', '2', '--config', config, 'deb'], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).jobs.map((j: { name: string }) => j.name)).toEqual(['deb']);
    const old = await stowage(['sync', '--jobs', 'deb', '--config', config], { env: w.env });
    expect(old.code).toBe(2);
    expect(old.stderr).toContain("unknown option '--jobs'");
  });

  it('push and copy say where they write before writing, and --dry-run writes nothing', async () => {
    const w = await workdir('push-targets', insecureConf(plain.host));
    const archive = join(w.dir, 'small.tar');
    expect((await stowage(['pull', '-q', small, '-o', archive], { env: w.env })).code).toBe(0);

    // To a registry root, the archive's own repository and tag are the target: said first.
    const dry = await stowage(['push', '--dry-run', '--prefix', 'dry/', archive, plain.host], { env: w.env });
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`-> ${plain.host}/dry/fixtures/small:v1`);
    expect(dry.stdout).toContain('dry run: nothing was sent');
    expect(await tagsOf(`${plain.host}/dry/fixtures/small`)).toEqual([]);

    const real = await stowage(['push', '--prefix', 'said/', archive, plain.host], { env: w.env });
    expect(real.code, real.stderr).toBe(0);
    expect(real.stderr).toContain(
      `writing oci-archive:${archive} @0 (${small}, v1) -> ${plain.host}/said/fixtures/small:v1`,
    );
    expect(await tagsOf(`${plain.host}/said/fixtures/small`)).toEqual(['v1']);

    const copy = await stowage(['copy', '--dry-run', small, `${plain.host}/dry-copy/small:v1`], {
      env: w.env,
    });
    expect(copy.code, copy.stderr).toBe(0);
    expect(copy.stdout).toContain(`-> ${plain.host}/dry-copy/small:v1`);
    expect(await tagsOf(`${plain.host}/dry-copy/small`)).toEqual([]);
    const toFile = await stowage(['copy', '--dry-run', small, `oci-archive:${join(w.dir, 'x.tar')}`], {
      env: w.env,
    });
    expect(toFile.code, toFile.stderr).toBe(0);
    expect(toFile.stdout).toContain('nothing was written');
    expect((await readdir(w.dir)).sort()).toEqual([
      'home',
      'registries.conf',
      'small.tar',
      'small.tar.sha256',
    ]);
  });
});
