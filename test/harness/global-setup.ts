/**
 * Starts the real peers once per test run: four docker-registry processes (plain, basic auth, TLS,
 * token auth) and the token server, builds the fixture images and seeds them with skopeo.
 * Tests read what was started with inject('harness').
 */
import type { ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { buildFixtures } from './fixtures.js';
import type { HarnessInfo } from './info.js';
import { freePort, run, stopProcess } from './processes.js';
import { type RunningRegistry, startRegistry } from './registry.js';
import { startTokenServer, TOKEN_ISSUER, TOKEN_SERVICE } from './token-server.js';

export const TEST_USER = 'tester';
export const TEST_PASSWORD = 'correct-horse-battery';

export default async function setup(project: TestProject) {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-test-'));
  const children: ChildProcess[] = [];
  const closers: (() => Promise<void>)[] = [];
  const teardown = async () => {
    await Promise.all(closers.map((c) => c().catch(() => {})));
    await Promise.all(children.map((c) => stopProcess(c)));
    if (!process.env.STOWAGE_KEEP_TEST_DIR) await rm(dir, { recursive: true, force: true });
  };
  try {
    // Certificates: one for the TLS registry (IP SAN 127.0.0.1), one for signing tokens.
    const certs = join(dir, 'certs');
    await mkdir(certs);
    const selfSigned = async (name: string, subject: string, extra: string[] = []) => {
      const key = join(certs, `${name}.key`);
      const cert = join(certs, `${name}.crt`);
      await run('openssl', [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '3650',
        '-subj',
        subject,
        ...extra,
        '-keyout',
        key,
        '-out',
        cert,
      ]);
      return { key, cert };
    };
    const tlsPair = await selfSigned('tls', '/CN=localhost', [
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ]);
    const tokenPair = await selfSigned('token', '/CN=token-signer');
    const [tlsKey, tlsCert, tokenKey, tokenCert] = [tlsPair.key, tlsPair.cert, tokenPair.key, tokenPair.cert];
    const caDir = join(certs, 'ca');
    await mkdir(caDir);
    await copyFile(tlsCert, join(caDir, 'ca.crt'));
    const htpasswd = join(dir, 'htpasswd');
    const { stdout } = await run('htpasswd', ['-Bbn', '-C', '5', TEST_USER, TEST_PASSWORD]);
    await writeFile(htpasswd, stdout);

    const tokenServer = await startTokenServer({
      port: await freePort(),
      keyFile: tokenKey,
      users: { [TEST_USER]: TEST_PASSWORD },
    });
    closers.push(() => tokenServer.close());

    const started = await Promise.all([
      startRegistry({ mode: 'plain', dir }),
      startRegistry({ mode: 'basic', dir, htpasswd }),
      startRegistry({ mode: 'tls', dir, tls: { cert: tlsCert, key: tlsKey } }),
      startRegistry({
        mode: 'token',
        dir,
        token: { realm: tokenServer.url, service: TOKEN_SERVICE, issuer: TOKEN_ISSUER, bundle: tokenCert },
      }),
    ]);
    for (const s of started) children.push(s.child);
    const [plain, basic, tls, token] = started.map((s) => s.registry) as [
      RunningRegistry,
      RunningRegistry,
      RunningRegistry,
      RunningRegistry,
    ];

    const largeMiB = Number(process.env.STOWAGE_TEST_LARGE_MIB ?? 192);
    const fixtures = await buildFixtures(join(dir, 'fixtures'), largeMiB);

    // Seed with skopeo. The large image only goes to the plain registry.
    const seed = async (reg: RunningRegistry, name: string, repo: string, extra: string[] = []) => {
      const creds =
        reg.mode === 'basic' || reg.mode === 'token' ? ['--dest-creds', `${TEST_USER}:${TEST_PASSWORD}`] : [];
      await run('skopeo', [
        'copy',
        '--quiet',
        '--all',
        '--dest-tls-verify=false',
        ...creds,
        ...extra,
        `oci:${fixtures.layoutDir}:${name}`,
        `docker://${reg.host}/${repo}`,
      ]);
    };
    const smallSet = ['small', 'multi', 'multiarch'];
    await Promise.all(
      [plain, basic, tls, token].flatMap((reg) => smallSet.map((n) => seed(reg, n, `fixtures/${n}:v1`))),
    );
    await seed(plain, 'large', 'fixtures/large:v1');
    // Docker schema 2 variants, converted by skopeo.
    await seed(plain, 'small', 'fixtures/small-v2s2:v1', ['--format', 'v2s2']);
    await seed(plain, 'multiarch', 'fixtures/multiarch-v2s2:v1', ['--format', 'v2s2']);

    const info: HarnessInfo = {
      dir,
      registries: { plain, basic, tls, token },
      tokenServerUrl: tokenServer.url,
      caDir,
      user: TEST_USER,
      password: TEST_PASSWORD,
      fixtures,
    };
    project.provide('harness', info);
  } catch (e) {
    await teardown();
    throw e;
  }
  return teardown;
}
