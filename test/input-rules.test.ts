/**
 * One rule for every input, whichever command or route reads it: a config over the 4 MiB document
 * limit is refused by inspect, pull and push alike; a damaged or incomplete archive is an error
 * whatever the destination already holds; the API says 422 for a damaged upload, says what to send for
 * a body that is not JSON, and never shows a path of the server.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { run } from './harness/processes.js';
import { api, type RunningService, serviceDir, startService, waitJob } from './harness/service.js';
import { damageEntry } from './harness/tools.js';

const h = harness();
const plain = h.registries.plain;
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const running: RunningService[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop('SIGKILL')));
});

/** An OCI layout holding one image whose config is `configBytes` bytes of valid JSON. */
async function layoutWithConfig(dir: string, configBytes: number): Promise<string> {
  const layout = join(dir, 'layout');
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  const put = async (bytes: Buffer) => {
    const hex = sha256(bytes);
    await writeFile(join(layout, 'blobs', 'sha256', hex), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const base = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] as string[] } };
  const pad = configBytes - Buffer.byteLength(JSON.stringify({ ...base, config: { Labels: { pad: '' } } }));
  const config = Buffer.from(JSON.stringify({ ...base, config: { Labels: { pad: 'x'.repeat(pad) } } }));
  expect(config.length).toBe(configBytes);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await put(config)) },
      layers: [],
    }),
  );
  const m = await put(manifest);
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...m,
          annotations: { 'org.opencontainers.image.ref.name': 'big' },
        },
      ],
    }),
  );
  return layout;
}

/** Puts a layout's one image into the plain registry with the distribution API (monolithic uploads). */
async function seed(layout: string, repo: string, tag: string): Promise<void> {
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
  const blob = (digest: string) => readFile(join(layout, 'blobs', 'sha256', digest.slice(7)));
  const desc = index.manifests[0];
  const manifest = await blob(desc.digest);
  const m = JSON.parse(manifest.toString());
  for (const d of [m.config, ...m.layers]) {
    const start = await fetch(`${plain.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
    const location = new URL(start.headers.get('location')!, plain.url);
    location.searchParams.set('digest', d.digest);
    const put = await fetch(location, { method: 'PUT', body: await blob(d.digest) });
    expect(put.status).toBe(201);
  }
  const put = await fetch(`${plain.url}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { 'content-type': desc.mediaType },
    body: manifest,
  });
  expect(put.status).toBe(201);
}

describe('one rule for every input', () => {
  it('refuses a config over 4 MiB in inspect, pull and push, as verify does', async () => {
    const w = await workdir('big-config', insecureConf(plain.host));
    const layout = await layoutWithConfig(w.dir, 4 * 1024 * 1024 + 1);
    // The registry takes it (skopeo would not send it: it has the same limit), put there by hand.
    await seed(layout, 'rules/big', 'v1');
    const ref = `${plain.host}/rules/big:v1`;
    for (const args of [
      ['inspect', ref],
      ['pull', ref, '-o', join(w.dir, 'big.tar')],
      ['push', `oci:${layout}:big`, `${plain.host}/rules/big-again:v1`],
      ['verify', `oci:${layout}`],
    ]) {
      const r = await stowage(args, { env: w.env });
      expect(r.code, `${args[0]}: ${r.stderr}`).not.toBe(0);
      expect(`${r.stderr}${r.stdout}`, args[0]).toMatch(/4194304|4 MiB/);
    }
    const pushed = await run('skopeo', [
      'list-tags',
      '--tls-verify=false',
      `docker://${plain.host}/rules/big-again`,
    ]).catch((e: Error) => e);
    expect(String(pushed instanceof Error ? pushed.message : pushed.stdout)).not.toContain('v1"');
    // One byte less is within the limit everywhere.
    const ok = await layoutWithConfig(join(w.dir, 'ok'), 4 * 1024 * 1024);
    const r = await stowage(['push', `oci:${ok}:big`, `${plain.host}/rules/big-ok:v1`], { env: w.env });
    expect(r.code, r.stderr).toBe(0);
  });

  it('push fails on a damaged or incomplete archive even when the registry holds every blob', async () => {
    const w = await workdir('push-damaged-present', insecureConf(plain.host));
    const archive = join(w.dir, 'multi.tar');
    expect(
      (await stowage(['pull', '-q', `${plain.host}/fixtures/multi:v1`, '-o', archive], { env: w.env })).code,
    ).toBe(0);
    const manifest = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}`])).stdout);
    const layer = manifest.layers[0].digest as string;
    // The destination already has every blob of this image: the intact archive went there first.
    const dest = `${plain.host}/rules/multi:damaged`;
    expect((await stowage(['push', archive, `${plain.host}/rules/multi:v1`], { env: w.env })).code).toBe(0);

    const damaged = join(w.dir, 'damaged.tar');
    await run('cp', [archive, damaged]);
    await damageEntry(damaged, `blobs/sha256/${layer.slice(7)}`);
    const bad = await stowage(['push', damaged, dest], { env: w.env });
    expect(bad.code, bad.stderr).toBe(7);
    expect(bad.stderr).toContain(layer);

    // The same archive without that blob at all.
    const dir = join(w.dir, 'x');
    await mkdir(dir);
    await run('tar', ['-xf', archive, '-C', dir]);
    await rm(join(dir, 'blobs', 'sha256', layer.slice(7)));
    const missing = join(w.dir, 'missing.tar');
    await run('tar', ['-cf', missing, '-C', dir, '.']);
    const gone = await stowage(['push', missing, dest], { env: w.env });
    expect(gone.code, gone.stderr).toBe(6);
    expect(gone.stderr).toContain('missing');

    const tags = JSON.parse(
      (await run('skopeo', ['list-tags', '--tls-verify=false', `docker://${plain.host}/rules/multi`])).stdout,
    ).Tags;
    expect(tags).not.toContain('damaged');
    // The intact archive pushes.
    expect((await stowage(['push', archive, dest], { env: w.env })).code).toBe(0);
  });
});

describe('the API', () => {
  async function serve(name: string) {
    const d = await serviceDir(name, insecureConf(plain.host));
    const s = await startService(d);
    running.push(s);
    return { d, s };
  }

  it('answers 422 for an upload whose blob fails its digest, even one the store has, and names no server path', async () => {
    const { d, s } = await serve('svc-upload-damaged');
    const w = await workdir('upload-damaged', insecureConf(plain.host));
    const archive = join(w.dir, 'multi.tar');
    expect(
      (await stowage(['pull', '-q', `${plain.host}/fixtures/multi:v1`, '-o', archive], { env: w.env })).code,
    ).toBe(0);
    const name = `${plain.host}/uploaded/multi:v1`;
    const up = (body: Buffer) =>
      api(s, 'pusher', `/v1/archives?name=${encodeURIComponent(name)}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-tar' },
        body,
      });
    expect((await up(await readFile(archive))).status).toBe(201);

    const manifest = JSON.parse((await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}`])).stdout);
    const damaged = join(w.dir, 'damaged.tar');
    await run('cp', [archive, damaged]);
    await damageEntry(damaged, `blobs/sha256/${manifest.layers[1].digest.slice(7)}`);
    const res = await up(await readFile(damaged));
    const text = await res.text();
    expect(res.status, text).toBe(422);
    expect(JSON.parse(text).error.code).toBe('INVALID_ARCHIVE');
    expect(text).toContain(manifest.layers[1].digest);
    expect(text).not.toContain(d.state);
    expect(text).not.toContain(d.store);
    expect(text).not.toContain(d.dir);
  });

  it('says what to send when a JSON route gets another content type', async () => {
    const { s } = await serve('svc-415');
    const res = await api(s, 'puller', '/v1/pulls', {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: Buffer.from(JSON.stringify({ ref: `${plain.host}/fixtures/small:v1` })),
    });
    expect(res.status).toBe(415);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('UNSUPPORTED');
    expect(body.error.message).toContain('content-type: application/json');
    expect(body.error.message).toContain('text/plain');
  });

  it('shows no server path in a job’s result', async () => {
    const { d, s } = await serve('svc-paths');
    const pulled = await api(s, 'puller', '/v1/pulls', {
      method: 'POST',
      json: { ref: `${plain.host}/fixtures/small:v1` },
    });
    const pull = await waitJob(s, ((await pulled.json()) as { id: string }).id);
    const id = (pull as { result: { archives: { id: string }[] } }).result.archives[0]!.id;
    const pushed = await api(s, 'pusher', '/v1/pushes', {
      method: 'POST',
      json: { archive: id, destination: `${plain.host}/paths/small:1` },
    });
    const job = await waitJob(s, ((await pushed.json()) as { id: string }).id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const text = JSON.stringify(job) + (await (await api(s, 'reader', '/v1/jobs')).text());
    // The source is named as the store and the version, not by its directory.
    expect(text).toContain(`the archive store (version ${id})`);
    expect(text).not.toContain(d.store);
    expect(text).not.toContain(d.state);
    expect(text).not.toContain(d.dir);
  });
});
