/** Real docker-registry processes on free 127.0.0.1 ports: plain, basic auth, TLS, token auth. */
import type { ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { freePort, startProcess, stopProcess } from './processes.js';

export type RegistryMode = 'plain' | 'basic' | 'tls' | 'token';

export interface RunningRegistry {
  mode: RegistryMode;
  host: string;
  port: number;
  url: string;
  root: string;
  pid: number;
}

export interface RegistryStartOptions {
  mode: RegistryMode;
  dir: string;
  htpasswd?: string;
  tls?: { cert: string; key: string };
  token?: { realm: string; service: string; issuer: string; bundle: string };
  /** A pull-through cache of another registry (distribution's `proxy: remoteurl:`). */
  proxy?: { remoteurl: string; username?: string; password?: string };
}

function probe(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = (url.startsWith('https') ? httpsRequest : httpRequest)(
      url,
      { rejectUnauthorized: false, timeout: 1000 },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

export async function startRegistry(
  opts: RegistryStartOptions,
): Promise<{ registry: RunningRegistry; child: ChildProcess }> {
  const port = await freePort();
  const root = join(opts.dir, `registry-${opts.mode}-${port}`);
  await mkdir(join(root, 'data'), { recursive: true });
  const lines = [
    'version: 0.1',
    'log: {level: error, accesslog: {disabled: true}}',
    `storage: {filesystem: {rootdirectory: ${join(root, 'data')}}, delete: {enabled: true}}`,
  ];
  const tls = opts.tls ? `, tls: {certificate: ${opts.tls.cert}, key: ${opts.tls.key}}` : '';
  lines.push(`http: {addr: 127.0.0.1:${port}, secret: test-only-secret${tls}}`);
  if (opts.mode === 'basic') lines.push(`auth: {htpasswd: {realm: basic-realm, path: ${opts.htpasswd}}}`);
  if (opts.mode === 'token' && opts.token) {
    const t = opts.token;
    lines.push(
      `auth: {token: {realm: "${t.realm}", service: ${t.service}, issuer: ${t.issuer}, rootcertbundle: ${t.bundle}}}`,
    );
  }
  if (opts.proxy) {
    const p = opts.proxy;
    const creds = p.username ? `, username: "${p.username}", password: "${p.password}"` : '';
    lines.push(`proxy: {remoteurl: "${p.remoteurl}"${creds}}`);
  }
  const config = join(root, 'config.yml');
  await writeFile(config, `${lines.join('\n')}\n`);
  const { child, output } = startProcess('docker-registry', ['serve', config]);
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry (${opts.mode}) exited: ${output()}`);
    const status = await probe(`${url}/v2/`);
    if (status === 200 || status === 401) break;
    if (Date.now() > deadline) {
      await stopProcess(child);
      throw new Error(`docker-registry (${opts.mode}) did not answer /v2/ within 20 s: ${output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    registry: { mode: opts.mode, host: `127.0.0.1:${port}`, port, url, root, pid: child.pid! },
    child,
  };
}
