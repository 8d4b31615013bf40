import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { it } from 'vitest';
import { startFaultProxy } from '../../harness/fault-proxy.js';
import { run } from '../../harness/processes.js';
import { startRegistry } from '../../harness/registry.js';
import { buildTaggedRepo, pushTags } from '../../harness/tagged-repo.js';

it('hold', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-warm-'));
  const s = await startRegistry({ mode: 'plain', dir: join(dir, 'src') });
  const d = await startRegistry({ mode: 'plain', dir: join(dir, 'dst') });
  const proxy = await startFaultProxy({ upstream: s.registry.url });
  const repo = await buildTaggedRepo(join(dir, 'layout'), {
    count: 20,
    baseKiB: 48 * 1024,
    ownKiB: 256,
    seed: 'bench',
  });
  await pushTags(repo.layout, repo.tags, `${proxy.host}/bench/app`);
  const home = join(dir, 'home');
  await mkdir(home);
  const conf = join(dir, 'registries.conf');
  await writeFile(
    conf,
    [proxy.host, d.registry.host].map((h) => `[[registry]]\nlocation = "${h}"\ninsecure = true\n`).join('\n'),
  );
  const mirror = join(dir, 'm.toml');
  await writeFile(
    mirror,
    `[store]\npath = "${join(dir, 'store')}"\n\n[[job]]\nname = "app"\nsource = "${proxy.host}/bench/app"\narchive = false\nmirror = "${d.registry.host}/st/app"\n`,
  );
  const env = { HOME: home, CONTAINERS_REGISTRIES_CONF: conf };
  const sk = [
    'sync',
    '--src',
    'docker',
    '--dest',
    'docker',
    '--src-tls-verify=false',
    '--dest-tls-verify=false',
    `${proxy.host}/bench/app`,
    `${d.registry.host}/sk`,
  ];
  await run('skopeo', sk, { env: { ...process.env, ...env } });
  await run(
    process.execPath,
    [resolve(import.meta.dirname, '../../../bin/stowage.js'), 'sync', '-q', '--config', mirror],
    { env: { ...process.env, ...env } },
  );
  await writeFile('/tmp/mb/warm-env.json', JSON.stringify({ env, mirror, sk }));
  await writeFile('/tmp/mb/hold', 'x');
  while (existsSync('/tmp/mb/hold')) await new Promise((r) => setTimeout(r, 500));
}, 3_600_000);
