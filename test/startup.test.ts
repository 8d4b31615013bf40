/**
 * The CLI starts from one bundled file whose compiled code is cached between runs: by Node itself from
 * 22.1 on (module.enableCompileCache, in $NODE_COMPILE_CACHE here), by bin/stowage.js on Node 20 (V8's
 * code cache in ~/.cache/stowage/code). Whatever is in the cache, the CLI must work, and only a cache
 * file the user owns and alone can write may be used.
 */

import { chmod, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import module from 'node:module';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';

const nodeCaches = typeof (module as { enableCompileCache?: unknown }).enableCompileCache === 'function';

async function files(dir: string): Promise<string[]> {
  return readdir(dir, { recursive: true }).catch(() => []);
}

describe('start-up', () => {
  it('caches compiled code between runs, and works with a damaged, foreign or disabled cache', async () => {
    const w = await workdir('startup');
    const nodeCache = join(w.dir, 'node-cache');
    const env = { ...w.env, NODE_COMPILE_CACHE: nodeCache };
    const ours = join(w.env.HOME!, '.cache', 'stowage', 'code');

    const first = await stowage(['--version'], { env });
    expect(first).toMatchObject({ code: 0, stdout: '0.1.0\n', stderr: '' });
    // NODE_DISABLE_COMPILE_CACHE, on any Node: nothing read, nothing written, by Node or by us.
    const off = await workdir('startup-off');
    const offCache = join(off.dir, 'node-cache');
    const offEnv = { ...off.env, NODE_COMPILE_CACHE: offCache, NODE_DISABLE_COMPILE_CACHE: '1' };
    expect(await stowage(['--version'], { env: offEnv })).toMatchObject({ code: 0, stdout: '0.1.0\n' });
    expect(await files(join(off.env.HOME!, '.cache'))).toEqual([]);
    expect(await files(offCache)).toEqual([]);
    if (nodeCaches) {
      // Node keeps the cache; ours is not written.
      const cached = (await readdir(nodeCache, { recursive: true, withFileTypes: true })).filter((e) =>
        e.isFile(),
      );
      expect(cached.length).toBeGreaterThan(0);
      expect(await files(ours)).toEqual([]);
      // Damaged, every file of it: Node checks what it reads, the CLI works, and the cache is made again.
      for (const e of cached) {
        const p = join(e.parentPath, e.name);
        await writeFile(p, Buffer.alloc((await stat(p)).size, 1));
      }
      expect(await stowage(['--version'], { env })).toMatchObject({ code: 0, stdout: '0.1.0\n', stderr: '' });
      expect(await stowage(['tags', '--help'], { env })).toMatchObject({ code: 0, stderr: '' });
      return;
    }
    const [name] = await readdir(ours);
    expect(name).toMatch(new RegExp(`^[0-9a-f]{32}-main-${process.version}-${process.arch}\\.v8$`));
    const path = join(ours, name!);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(ours)).mode & 0o777).toBe(0o700);
    const good = await readFile(path);
    expect(good.length).toBeGreaterThan(100_000);

    // Used as it is: not rewritten.
    expect((await stowage(['--version'], { env })).code).toBe(0);
    expect((await readFile(path)).equals(good)).toBe(true);

    // Damaged: V8 refuses it, the CLI works, and the cache is made again.
    await writeFile(path, Buffer.alloc(good.length, 1), { mode: 0o600 });
    expect(await stowage(['--help'], { env })).toMatchObject({ code: 0, stderr: '' });
    expect((await readFile(path)).equals(Buffer.alloc(good.length, 1))).toBe(false);

    // Writable by others: never read, so never trusted, and replaced.
    await writeFile(path, Buffer.alloc(16, 2));
    await chmod(path, 0o666);
    expect((await stowage(['--version'], { env })).code).toBe(0);
    expect((await stat(path)).mode & 0o777).toBe(0o600);

    // Each command has its own cache (a cache holds what the run that wrote it compiled), beside the
    // others of the same build; caches of other builds are removed when a new one is written.
    expect((await stowage(['tags', '--help'], { env })).code).toBe(0);
    const tagsName = name!.replace('-main-', '-tags-');
    expect((await readdir(ours)).sort()).toEqual([name, tagsName].sort());
    await writeFile(join(ours, 'old-build.v8'), 'x', { mode: 0o600 });
    await writeFile(path, Buffer.alloc(16, 3), { mode: 0o600 });
    expect((await stowage(['--version'], { env })).code).toBe(0);
    expect((await readdir(ours)).sort()).toEqual([name, tagsName].sort());
  });

  it('loads node:http2 only for HTTP/2 (never), the keyring library only for registries that ask for credentials', async () => {
    const plain = harness().registries.plain;
    const w = await workdir('startup-modules', insecureConf(plain.host));
    const preload = join(w.dir, 'loaded.cjs');
    await writeFile(
      preload,
      "process.on('exit', () => process.stderr.write('loaded: ' + process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)).join(' ') + '\\naddons: ' + Object.keys(require.cache).filter((k) => k.endsWith('.node')).join(' ') + '\\n'));",
    );
    const r = await run(process.execPath, ['-r', preload, BIN, 'tags', `${plain.host}/fixtures/small`], {
      env: w.env,
    });
    expect(JSON.parse(r.stdout).Tags).toContain('v1');
    const loaded = /^loaded: (.*)$/m.exec(r.stderr)?.[1]?.split(' ') ?? [];
    // A registry was asked, over undici (the check sees real loads) ...
    expect(loaded).toContain('net');
    expect(loaded).toContain('tls');
    // ... but not node:http2, nor the keyring library: the registry asked for no credentials.
    expect(loaded).not.toContain('http2');
    expect(/^addons: (.*)$/m.exec(r.stderr)?.[1]).toBe('');
  });
});
