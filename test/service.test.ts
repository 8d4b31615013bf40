/**
 * The gateway service, started as `stowage serve`, against the real registries: tokens and scopes,
 * pulls through the API followed over SSE, downloads whole and by range checked by sha256 (and equal
 * to the CLI's export), docker-archive downloads skopeo reads, blocked and unlisted registries, a
 * cancelled job leaving nothing behind, 20 concurrent pulls, history across restarts, graceful stop,
 * upload and push with digests intact, the OpenAPI document and the metrics.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { validate } from '@readme/openapi-parser';
import parsePrometheus from 'parse-prometheus-text-format';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, harness, insecureConf, learntLocations, stowage, workdir } from './harness/cli.js';
import { type FaultProxy, startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';
import {
  api,
  followEvents,
  type RunningService,
  serviceDir,
  startService,
  TOKENS,
  waitJob,
} from './harness/service.js';
import { deadPort } from './harness/tools.js';
import { until } from './harness/until.js';

const h = harness();
const plain = h.registries.plain;
const running: RunningService[] = [];
const proxies: FaultProxy[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.stop('SIGKILL')));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

async function start(name: string, conf: string, extraToml = '', args: string[] = []) {
  const d = await serviceDir(name, conf, extraToml);
  const s = await startService(d, args);
  running.push(s);
  return { d, s };
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function noSecrets(text: string): void {
  for (const t of Object.values(TOKENS)) expect(text).not.toContain(t);
  expect(text).not.toContain(h.password);
}

interface PulledArchive {
  id: string;
  digest: string;
  sha256: string;
  size: number;
  fetched: boolean;
}

async function pullJob(s: RunningService, body: unknown) {
  const res = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: body });
  expect(res.status, await res.clone().text()).toBe(202);
  return (await res.json()) as { id: string; shared: boolean; state: string };
}

/** A proxy in front of the plain registry on which GETs of the image's first layer never answer. */
async function hangingProxy(
  image: string,
): Promise<{ proxy: FaultProxy; layer: string; hung: () => number }> {
  const digest = h.fixtures.images[image]!.digest;
  const manifest = JSON.parse(
    await readFile(join(h.fixtures.layoutDir, 'blobs', 'sha256', digest.slice(7)), 'utf8'),
  );
  const layer = manifest.layers[0].digest as string;
  let hung = 0;
  const proxy = await startFaultProxy({
    upstream: plain.url,
    fault: (req) =>
      req.method === 'GET' && (req.url ?? '').endsWith(layer) && ++hung ? { kind: 'hang' } : undefined,
  });
  proxies.push(proxy);
  return { proxy, layer, hung: () => hung };
}

describe('stowage serve', () => {
  it('answers /readyz 503 while stopping (during shutdown-grace), then exits 0', async () => {
    const { s } = await start('svc-readyz', insecureConf(plain.host), 'shutdown-grace = "3s"\n');
    expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
    const exited = s.stop('SIGTERM');
    // Not ready as soon as the stop begins; health and the API still answer until the grace ends.
    let status = 200;
    for (let i = 0; i < 200 && status === 200; i++) {
      status = (await fetch(`${s.url}/readyz`)).status;
      if (status === 200) await new Promise((r) => setTimeout(r, 10));
    }
    expect(status).toBe(503);
    expect(await (await fetch(`${s.url}/readyz`)).json()).toMatchObject({ status: expect.any(String) });
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect(await exited).toBe(0);
    expect(
      await fetch(`${s.url}/readyz`).then(
        () => 'answered',
        () => 'refused',
      ),
    ).toBe('refused');
  });

  it('answers health checks anonymously and everything else only with a token of the right scope', async () => {
    const { s } = await start('svc-auth', insecureConf(plain.host));
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${s.url}/readyz`)).json()).toEqual({
      status: 'ready',
      mode: { store: 'local', jobs: 'in-process' },
    });
    for (const path of ['/v1/jobs', '/v1/archives', '/metrics', '/openapi.json', '/v1/registries']) {
      const res = await api(s, undefined, path);
      expect(res.status, path).toBe(401);
      expect(res.headers.get('www-authenticate')).toContain('Bearer');
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('UNAUTHORIZED');
    }
    const forged = await fetch(`${s.url}/v1/jobs`, { headers: { authorization: 'Bearer stw_not-a-token' } });
    expect(forged.status).toBe(401);
    expect(await forged.text()).toContain('not valid');

    const ref = `${plain.host}/fixtures/small:v1`;
    const denied = await api(s, 'reader', '/v1/pulls', { method: 'POST', json: { ref } });
    expect(denied.status).toBe(403);
    expect(await denied.json()).toMatchObject({
      error: { code: 'DENIED', message: expect.stringContaining('"pull"') },
    });
    expect((await api(s, 'puller', '/v1/archives/abc', { method: 'DELETE' })).status).toBe(403);
    expect((await api(s, 'reader', '/v1/syncs', { method: 'POST', json: {} })).status).toBe(403);

    // Bad bodies: 400 naming the field; a bad reference: 400 naming it.
    const bad = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: { refs: 'x' } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('refs');
    const extra = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: { ref, surplus: 1 } });
    expect(extra.status).toBe(400);
    const badRef = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: { ref: 'UPPER/Case:x' } });
    expect(badRef.status).toBe(400);
    expect(await badRef.json()).toMatchObject({ error: { code: 'INVALID_REFERENCE' } });
    const notJson = await api(s, 'puller', '/v1/pulls', {
      method: 'POST',
      body: '{',
      headers: { 'content-type': 'application/json' },
    });
    expect(notJson.status).toBe(400);
    expect((await api(s, 'reader', '/v1/nothing')).status).toBe(404);
    expect((await api(s, 'reader', '/v1/jobs/nope')).status).toBe(404);
    const rid = await api(s, 'reader', '/v1/jobs', { headers: { 'x-request-id': 'trace-123' } });
    expect(rid.headers.get('x-request-id')).toBe('trace-123');

    await s.stop();
    noSecrets(s.output());
    // Structured logs: one JSON object a line, with the request id.
    const lines = s
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'));
    expect(lines.length).toBeGreaterThan(10);
    const parsed = lines.map((l) => JSON.parse(l));
    expect(parsed.some((l) => l.requestId === 'trace-123' && l.status === 200)).toBe(true);
    // Level names and ISO times, as log pipelines read them.
    expect(parsed.every((l) => ['debug', 'info', 'warn', 'error', 'fatal'].includes(l.level))).toBe(true);
    expect(parsed.every((l) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(l.time))).toBe(true);
  });

  it('pulls through the API, streams progress over SSE, and serves the archive whole and by range', async () => {
    const { d, s } = await start('svc-pull', insecureConf(plain.host));
    const ref = `${plain.host}/fixtures/multi:v1`;
    const job = await pullJob(s, { ref });
    const events = await followEvents(s, job.id);
    const types = events.map((e) => e.event);
    expect(types[0]).toBe('state');
    expect(types).toContain('progress');
    expect(types).toContain('tag');
    expect(types.at(-1)).toBe('end');
    expect(events.filter((e) => e.event === 'state').map((e) => (e.data as { state: string }).state)).toEqual(
      ['queued', 'running', 'succeeded'],
    );
    const progress = events.filter((e) => e.event === 'progress').at(-1)!.data as Record<string, number>;
    expect(progress.bytesDone).toBe(progress.bytes);
    expect(progress.bytes).toBeGreaterThan(900 * 1024);
    // The figures `--progress=json` writes, rate and time left included (core/rate.ts).
    expect(Object.keys(progress).sort()).toEqual(
      ['blobs', 'blobsDone', 'bytes', 'bytesDone', 'bytesPerSecond', 'secondsLeft', 'stalled'].sort(),
    );
    expect(progress).toMatchObject({ secondsLeft: 0, stalled: false });
    expect(progress.bytesPerSecond).toBeGreaterThan(0);
    // Event ids count up, so a client can resume with Last-Event-ID.
    expect(events.map((e) => Number(e.id))).toEqual(events.map((_, i) => i + 1));
    const resumed = await api(s, 'reader', `/v1/jobs/${job.id}/events`, {
      headers: { 'last-event-id': '2' },
    });
    expect((await resumed.text()).match(/^id: /gm)?.length).toBe(events.length - 2);

    const done = (await (await api(s, 'reader', `/v1/jobs/${job.id}`)).json()) as {
      state: string;
      result: { archives: PulledArchive[] };
      links: Record<string, string>;
    };
    expect(done.state).toBe('succeeded');
    const a = done.result.archives[0]!;
    expect(a.digest).toBe(h.fixtures.images.multi!.digest);
    expect(a.fetched).toBe(true);
    expect(done.links.archive0).toBe(`/v1/archives/${a.id}/content`);

    const listed = (await (
      await api(s, 'reader', `/v1/archives?repository=${plain.host}/fixtures/multi`)
    ).json()) as {
      archives: { id: string; sha256: string; latest: boolean }[];
    };
    expect(listed.archives).toHaveLength(1);
    expect(listed.archives[0]).toMatchObject({ id: a.id, sha256: a.sha256, latest: true });

    // The whole archive: its sha256 is the ETag, the recorded checksum, and the CLI export's.
    const whole = await api(s, 'reader', `/v1/archives/${a.id}/content`);
    expect(whole.status).toBe(200);
    const body = Buffer.from(await whole.arrayBuffer());
    expect(Number(whole.headers.get('content-length'))).toBe(body.length);
    expect(body.length).toBe(a.size);
    expect(sha256(body)).toBe(a.sha256);
    expect(whole.headers.get('etag')).toBe(`"sha256:${a.sha256}"`);
    expect(whole.headers.get('accept-ranges')).toBe('bytes');
    const exported = join(d.dir, 'export.tar');
    const cli = await stowage(['archives', 'export', a.id, '-o', exported, '--config', d.config, '-q'], {
      env: d.env,
    });
    expect(cli.code, cli.stderr).toBe(0);
    expect(sha256(await readFile(exported))).toBe(a.sha256);
    const downloaded = join(d.dir, 'downloaded.tar');
    await writeFile(downloaded, body);
    const inspected = await run('skopeo', ['inspect', '--raw', `oci-archive:${downloaded}`]);
    expect(`sha256:${sha256(Buffer.from(inspected.stdout))}`).toBe(a.digest);

    // Ranges: a middle slice, a suffix, one past the end; conditional requests.
    const mid = await api(s, 'reader', `/v1/archives/${a.id}/content`, {
      headers: { range: 'bytes=1000-70999' },
    });
    expect(mid.status).toBe(206);
    expect(mid.headers.get('content-range')).toBe(`bytes 1000-70999/${a.size}`);
    expect(Buffer.from(await mid.arrayBuffer()).equals(body.subarray(1000, 71000))).toBe(true);
    const tail = await api(s, 'reader', `/v1/archives/${a.id}/content`, {
      headers: { range: 'bytes=-1536' },
    });
    expect(tail.status).toBe(206);
    expect(Buffer.from(await tail.arrayBuffer()).equals(body.subarray(body.length - 1536))).toBe(true);
    const past = await api(s, 'reader', `/v1/archives/${a.id}/content`, {
      headers: { range: `bytes=${a.size}-` },
    });
    expect(past.status).toBe(416);
    expect(past.headers.get('content-range')).toBe(`bytes */${a.size}`);
    const same = await api(s, 'reader', `/v1/archives/${a.id}/content`, {
      headers: { 'if-none-match': `"sha256:${a.sha256}"` },
    });
    expect(same.status).toBe(304);
    const stale = await api(s, 'reader', `/v1/archives/${a.id}/content`, {
      headers: { range: 'bytes=0-9', 'if-range': '"sha256:0000"' },
    });
    expect(stale.status).toBe(200);
    await stale.body?.cancel();
    const head = await api(s, 'reader', `/v1/archives/${a.id}/content`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(Number(head.headers.get('content-length'))).toBe(a.size);

    // docker-archive: made once, the same bytes the second time, readable by skopeo.
    const dockerRes = await api(s, 'reader', `/v1/archives/${a.id}/content?format=docker-archive`);
    expect(dockerRes.status).toBe(200);
    const docker = Buffer.from(await dockerRes.arrayBuffer());
    expect(dockerRes.headers.get('etag')).toBe(`"sha256:${sha256(docker)}"`);
    const again = await api(s, 'reader', `/v1/archives/${a.id}/content?format=docker-archive`, {
      headers: { range: 'bytes=0-511' },
    });
    expect(again.status).toBe(206);
    expect(Buffer.from(await again.arrayBuffer()).equals(docker.subarray(0, 512))).toBe(true);
    const dockerFile = join(d.dir, 'docker.tar');
    await writeFile(dockerFile, docker);
    const dockerInspect = JSON.parse(
      (await run('skopeo', ['inspect', `docker-archive:${dockerFile}`])).stdout,
    );
    expect(dockerInspect.Layers).toHaveLength(3);

    // Pinned: tag@digest must match what the tag points at.
    const wrong = `sha256:${'0'.repeat(64)}`;
    const pinned = await pullJob(s, { ref: `${ref}@${wrong}` });
    const pinnedDone = (await waitJob(s, pinned.id)) as {
      state: string;
      error: { code: string; message: string };
    };
    expect(pinnedDone).toMatchObject({ state: 'failed', error: { code: 'NOT_FOUND' } });
    expect(pinnedDone.error.message).toContain(a.digest);
    const digestOnly = await api(s, 'puller', '/v1/pulls', {
      method: 'POST',
      json: { ref: `${plain.host}/fixtures/multi@${a.digest}` },
    });
    expect(digestOnly.status).toBe(400);

    // The same pull again (pinned to the right digest): the store has it, nothing is fetched.
    const second = await pullJob(s, { refs: [`${ref}@${a.digest}`] });
    const secondDone = (await waitJob(s, second.id)) as { result: { archives: PulledArchive[] } };
    expect(secondDone.result.archives[0]).toMatchObject({ id: a.id, sha256: a.sha256, fetched: false });

    // An admin deletes the version; its blobs go with it.
    const del = await api(s, 'admin', `/v1/archives/${a.id}`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    expect((await api(s, 'reader', `/v1/archives/${a.id}/content`)).status).toBe(404);
    expect(await readdir(join(d.store, 'blobs', 'sha256'))).toEqual([]);
  });

  it('refuses registries that registries.conf blocks or the allow-list leaves out', async () => {
    const dead = await deadPort();
    const conf = `${insecureConf(plain.host, h.registries.tls.host)}\n[[registry]]\nlocation = "127.0.0.1:${dead}"\nblocked = true\n`;
    const { s } = await start(
      'svc-blocked',
      conf,
      `allow-registries = ["${plain.host}", "127.0.0.1:${dead}"]\n`,
    );
    const blocked = await api(s, 'puller', '/v1/pulls', {
      method: 'POST',
      json: { ref: `127.0.0.1:${dead}/x/y:1` },
    });
    expect(blocked.status).toBe(403);
    expect(await blocked.json()).toMatchObject({ error: { code: 'BLOCKED' } });
    const unlisted = await api(s, 'puller', '/v1/pulls', {
      method: 'POST',
      json: { ref: `${h.registries.tls.host}/fixtures/small:v1` },
    });
    expect(unlisted.status).toBe(403);
    expect(((await unlisted.json()) as { error: { message: string } }).error.message).toContain(
      'allow-registries',
    );
    expect(
      (await api(s, 'reader', `/v1/tags?repository=${h.registries.tls.host}/fixtures/small`)).status,
    ).toBe(403);
    // A real stored version, pushed to the blocked registry: refused for the destination, not the id.
    const pulled = await pullJob(s, { ref: `${plain.host}/fixtures/small:v1` });
    const stored = (await waitJob(s, pulled.id)) as { result: { archives: PulledArchive[] } };
    const push = await api(s, 'pusher', '/v1/pushes', {
      method: 'POST',
      json: { archive: stored.result.archives[0]!.id, destination: `127.0.0.1:${dead}/x/y` },
    });
    expect(push.status).toBe(403);
    expect(await push.json()).toMatchObject({ error: { code: 'BLOCKED' } });
    // What is allowed works: tags, inspect, the effective configuration.
    const tags = (await (
      await api(s, 'reader', `/v1/tags?repository=${plain.host}/fixtures/small`)
    ).json()) as {
      tags: string[];
    };
    expect(tags.tags).toContain('v1');
    const raw = await api(s, 'reader', `/v1/inspect?ref=${plain.host}/fixtures/multiarch:v1&raw=true`);
    expect(raw.headers.get('docker-content-digest')).toBe(h.fixtures.images.multiarch!.digest);
    const registries = (await (await api(s, 'reader', '/v1/registries')).json()) as {
      files: string[];
      registries: { location: string; blocked?: boolean }[];
      allowRegistries: string[];
    };
    // Files by name: the server's paths are not the API's to say.
    expect(registries.files).toEqual(['registries.conf']);
    expect(registries.registries.find((r) => r.location === `127.0.0.1:${dead}`)?.blocked).toBe(true);
    // A short name with no search registries: the error says which file, never where it is.
    const short = await api(s, 'puller', '/v1/pulls', { method: 'POST', json: { ref: 'debian:bookworm' } });
    const said = await short.text();
    expect(short.status, said).toBe(400);
    expect(said).toContain("the service's registries.conf");
    expect(said).not.toContain(h.dir);
    expect(registries.allowRegistries).toContain(plain.host);
    // A blocked request never reached a registry: no job was made for it, only the pull's.
    const made = ((await (await api(s, 'reader', '/v1/jobs')).json()) as { jobs: { kind: string }[] }).jobs;
    expect(made.map((j) => j.kind)).toEqual(['pull']);
  });

  it('fetches a blob once across concurrent jobs that need it', async () => {
    // One image under two tags: two pulls of the same blobs, running side by side (slowed at the
    // proxy so that they overlap).
    for (const tag of ['a', 'b']) {
      await run('skopeo', [
        'copy',
        '-q',
        '--src-tls-verify=false',
        '--dest-tls-verify=false',
        `docker://${plain.host}/fixtures/multi:v1`,
        `docker://${plain.host}/svc-shared/app:${tag}`,
      ]);
    }
    const proxy = await startFaultProxy({
      upstream: plain.url,
      fault: (req) =>
        req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')
          ? { kind: 'trickle', bytes: 256 * 1024, everyMs: 20 }
          : undefined,
    });
    proxies.push(proxy);
    const { s } = await start('svc-shared', insecureConf(plain.host, proxy.host));
    const jobs = await Promise.all(
      ['a', 'b'].map((t) => pullJob(s, { ref: `${proxy.host}/svc-shared/app:${t}` })),
    );
    for (const j of jobs) expect((await waitJob(s, j.id)).state).toBe('succeeded');
    const gets = proxy.seen
      .filter((q) => q.method === 'GET' && /\/blobs\/sha256:/.test(q.path))
      .map((q) => q.path.split('/').at(-1));
    expect(gets.length).toBeGreaterThan(0);
    expect(gets.length).toBe(new Set(gets).size);
  });

  it('cancels a running job: it ends as canceled and leaves nothing in the store', async () => {
    const { proxy, layer, hung } = await hangingProxy('large');
    const { d, s } = await start('svc-cancel', insecureConf(plain.host, proxy.host));
    const job = await pullJob(s, { ref: `${proxy.host}/fixtures/large:v1` });
    const events = followEvents(s, job.id);
    for (let i = 0; i < 400 && hung() === 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(hung()).toBe(1);
    const running = (await (await api(s, 'reader', `/v1/jobs/${job.id}`)).json()) as { state: string };
    expect(running.state).toBe('running');
    expect((await api(s, 'reader', `/v1/jobs/${job.id}`, { method: 'DELETE' })).status).toBe(403);
    const cancel = await api(s, 'puller', `/v1/jobs/${job.id}`, { method: 'DELETE' });
    expect(cancel.status).toBe(202);
    const ended = (await waitJob(s, job.id)) as { state: string; error: { code: string } };
    expect(ended.state).toBe('canceled');
    const last = (await events).at(-1)!;
    expect(last.event).toBe('end');
    expect(last.data).toMatchObject({ state: 'canceled' });
    // Nothing half-written: no version, no partial blob, only whole blobs (the config) if any.
    expect(
      ((await (await api(s, 'reader', '/v1/archives')).json()) as { archives: unknown[] }).archives,
    ).toEqual([]);
    expect(await readdir(join(d.store, '.tmp'))).toEqual([]);
    for (const name of await readdir(join(d.store, 'blobs', 'sha256')))
      expect(`sha256:${name}`).not.toBe(layer);
  });

  it('runs 20 concurrent pull requests for the same and different images; all complete correctly', async () => {
    const { s } = await start('svc-concurrent', insecureConf(plain.host));
    const names = ['small', 'multi', 'multiarch', 'small-v2s2', 'multiarch-v2s2'];
    const refs = Array.from({ length: 20 }, (_, i) => `${plain.host}/fixtures/${names[i % names.length]}:v1`);
    const accepted = await Promise.all(refs.map((ref) => pullJob(s, { ref })));
    const ids = new Set(accepted.map((j) => j.id));
    // Identical requests while one is queued or running share it.
    expect(accepted.some((j) => j.shared)).toBe(true);
    expect(ids.size).toBeLessThan(20);
    const results = await Promise.all(accepted.map((j) => waitJob(s, j.id)));
    const byName = new Map<string, PulledArchive>();
    results.forEach((r, i) => {
      expect(r.state, JSON.stringify(r)).toBe('succeeded');
      const a = (r.result as { archives: PulledArchive[] }).archives[0]!;
      const name = names[i % names.length]!;
      if (byName.has(name))
        expect(a).toMatchObject({ id: byName.get(name)!.id, sha256: byName.get(name)!.sha256 });
      else byName.set(name, a);
    });
    for (const name of ['small', 'multi', 'multiarch']) {
      expect(byName.get(name)!.digest).toBe(h.fixtures.images[name]!.digest);
    }
    const listed = (await (await api(s, 'reader', '/v1/archives')).json()) as { archives: unknown[] };
    expect(listed.archives).toHaveLength(5);
    for (const a of byName.values()) {
      const body = Buffer.from(await (await api(s, 'reader', `/v1/archives/${a.id}/content`)).arrayBuffer());
      expect(sha256(body)).toBe(a.sha256);
    }
  });

  it('keeps the job history across restarts; a job cut off by a kill is shown as failed', async () => {
    const { proxy, hung } = await hangingProxy('small');
    const { d, s } = await start('svc-restart', insecureConf(plain.host, proxy.host));
    const ok = await pullJob(s, { ref: `${plain.host}/fixtures/multi:v1` });
    expect((await waitJob(s, ok.id)).state).toBe('succeeded');
    const cut = await pullJob(s, { ref: `${proxy.host}/fixtures/small:v1` });
    for (let i = 0; i < 400 && hung() === 0; i++) await new Promise((r) => setTimeout(r, 25));
    expect(hung()).toBeGreaterThan(0);
    await s.stop('SIGKILL');

    const again = await startService(d);
    running.push(again);
    const jobs = (
      (await (await api(again, 'reader', '/v1/jobs')).json()) as {
        jobs: { id: string; state: string; error?: { code: string } }[];
      }
    ).jobs;
    expect(jobs.map((j) => j.id)).toEqual([cut.id, ok.id]);
    expect(jobs[1]!.state).toBe('succeeded');
    expect(jobs[0]).toMatchObject({ state: 'failed', error: { code: 'INTERRUPTED' } });
    const history = await followEvents(again, ok.id);
    expect(history.at(-1)).toMatchObject({ event: 'end', data: { state: 'succeeded' } });

    // SIGTERM: running jobs are aborted and cleaned up, the history written, exit 0.
    const term = await pullJob(again, { ref: `${proxy.host}/fixtures/small:v1` });
    const before = hung();
    for (let i = 0; i < 400 && hung() === before; i++) await new Promise((r) => setTimeout(r, 25));
    // It is running (its blob request hangs at the proxy) when the signal goes: aborted, not dequeued.
    expect(hung()).toBeGreaterThan(before);
    const live = (await (await api(again, 'reader', `/v1/jobs/${term.id}`)).json()) as { state: string };
    expect(live.state).toBe('running');
    expect(await again.stop('SIGTERM')).toBe(0);
    const saved = JSON.parse(await readFile(join(d.state, 'jobs.json'), 'utf8')) as {
      id: string;
      state: string;
    }[];
    expect(saved.find((j) => j.id === term.id)?.state).toBe('canceled');
    // What the killed process left aside was removed when the next one started; the stopped one left
    // nothing (partial blobs are named .HEX.PID-RANDOM.partial).
    const leftovers = await readdir(join(d.store, '.tmp'));
    expect(leftovers.filter((n) => n.includes(`.${s.child.pid}-`))).toEqual([]);
    expect(leftovers.filter((n) => n.includes(`.${again.child.pid}-`))).toEqual([]);
  });

  it('stores an uploaded archive and pushes it to a registry with its digest intact', async () => {
    const { d, s } = await start('svc-push', insecureConf(plain.host));
    const file = join(d.dir, 'multiarch.tar');
    const pulled = await stowage(['pull', '--all', '-q', `${plain.host}/fixtures/multiarch:v1`, '-o', file], {
      env: d.env,
    });
    expect(pulled.code, pulled.stderr).toBe(0);
    const name = `${plain.host}/uploaded/multiarch:v7`;
    const up = await api(s, 'pusher', `/v1/archives?name=${encodeURIComponent(name)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-tar', 'content-length': String((await stat(file)).size) },
      body: Readable.toWeb(createReadStream(file)) as ReadableStream,
    });
    expect(up.status, await up.clone().text()).toBe(201);
    const stored = (
      (await up.json()) as { archives: { id: string; digest: string; tag: string; platforms: string[] }[] }
    ).archives;
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ digest: h.fixtures.images.multiarch!.digest, tag: 'v7' });
    expect(stored[0]!.platforms).toHaveLength(2);

    const accepted = await api(s, 'pusher', '/v1/pushes', {
      method: 'POST',
      json: { archive: stored[0]!.id, destination: `${plain.host}/restored/multiarch` },
    });
    expect(accepted.status).toBe(202);
    const job = await waitJob(s, ((await accepted.json()) as { id: string }).id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const raw = await run('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${plain.host}/restored/multiarch:v7`,
    ]);
    expect(`sha256:${sha256(Buffer.from(raw.stdout))}`).toBe(h.fixtures.images.multiarch!.digest);
    // Where the job put the blobs is kept as it ends (not only at shutdown), for later runs to mount.
    await until('the blob locations saved', async () =>
      (await learntLocations(d.env)).includes('restored/multiarch'),
    );

    // Not an archive: refused, nothing stored, no spool left.
    const junk = await api(s, 'pusher', '/v1/archives?name=x', {
      method: 'POST',
      headers: { 'content-type': 'application/x-tar' },
      body: Buffer.alloc(4096, 7),
    });
    expect(junk.status, await junk.clone().text()).toBe(422);
    expect(await junk.json()).toMatchObject({
      error: { code: 'INVALID_ARCHIVE', message: expect.stringContaining('not a valid tar') },
    });
    expect(await readdir(join(d.state, 'tmp'))).toEqual([]);
    const all = (await (await api(s, 'reader', '/v1/archives')).json()) as { archives: unknown[] };
    expect(all.archives).toHaveLength(1);
  });

  it('pulls from and pushes to a token-auth registry with credentials from auth.json, never showing them', async () => {
    const token = h.registries.token;
    const d = await serviceDir('svc-creds', insecureConf(token.host));
    const authfile = join(d.dir, 'auth.json');
    const auth = Buffer.from(`${h.user}:${h.password}`).toString('base64');
    await writeFile(authfile, JSON.stringify({ auths: { [token.host]: { auth } } }), { mode: 0o600 });
    const s = await startService(d, ['--authfile', authfile]);
    running.push(s);
    const pulled = await pullJob(s, { ref: `${token.host}/fixtures/small:v1` });
    const done = (await waitJob(s, pulled.id)) as { state: string; result: { archives: PulledArchive[] } };
    expect(done.state, JSON.stringify(done)).toBe('succeeded');
    const a = done.result.archives[0]!;
    expect(a.digest).toBe(h.fixtures.images.small!.digest);
    const pushed = await api(s, 'pusher', '/v1/pushes', {
      method: 'POST',
      json: { archive: a.id, destination: `${token.host}/restored/small:r1` },
    });
    expect(pushed.status).toBe(202);
    const job = await waitJob(s, ((await pushed.json()) as { id: string }).id);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const raw = await run('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      '--creds',
      `${h.user}:${h.password}`,
      `docker://${token.host}/restored/small:r1`,
    ]);
    expect(`sha256:${sha256(Buffer.from(raw.stdout))}`).toBe(a.digest);
    const registries = await (await api(s, 'reader', '/v1/registries')).text();
    await s.stop();
    noSecrets(registries + s.output() + JSON.stringify(job));
    expect(s.output()).not.toContain(auth);
  });

  it('holds its limits: uploads over max-upload get 413 and leave nothing, a full queue 429', async () => {
    const { proxy, hung } = await hangingProxy('small');
    const { d, s } = await start(
      'svc-limits',
      insecureConf(plain.host, proxy.host),
      'max-upload = "1MiB"\nconcurrent-jobs = 1\nmax-queued = 1\n',
    );
    // curl, as a client would: it reads the early 413 while still sending.
    const bigFile = join(d.dir, 'big.tar');
    await writeFile(bigFile, Buffer.alloc(3 * 1024 * 1024, 1));
    const upload = async (extra: string[]) => {
      const r = await run('curl', [
        '-sS',
        '-w',
        '\n%{http_code}',
        '-H',
        `Authorization: Bearer ${TOKENS.pusher}`,
        '-H',
        'content-type: application/x-tar',
        ...extra,
        '--data-binary',
        `@${bigFile}`,
        `${s.url}/v1/archives`,
      ]).catch((e: Error) => ({ stdout: e.message }));
      return r.stdout;
    };
    const declared = await upload([]);
    expect(declared).toMatch(/413$/);
    expect(declared).toContain('TOO_LARGE');
    // No Content-Length (a chunked body): cut off while streaming.
    const chunked = await upload(['-H', 'Transfer-Encoding: chunked']);
    expect(chunked).toMatch(/413$/);
    expect(await readdir(join(d.state, 'tmp'))).toEqual([]);

    // One running (hung), one queued, the third refused.
    const first = await pullJob(s, { ref: `${proxy.host}/fixtures/small:v1` });
    for (let i = 0; i < 400 && hung() === 0; i++) await new Promise((r) => setTimeout(r, 25));
    await pullJob(s, { ref: `${plain.host}/fixtures/multi:v1` });
    const third = await api(s, 'puller', '/v1/pulls', {
      method: 'POST',
      json: { ref: `${plain.host}/fixtures/multiarch:v1` },
    });
    expect(third.status).toBe(429);
    expect(await third.json()).toMatchObject({
      error: { code: 'RATE_LIMITED', message: expect.stringContaining('max-queued') },
    });
    expect((await api(s, 'puller', `/v1/jobs/${first.id}`, { method: 'DELETE' })).status).toBe(202);
  });

  it('publishes an OpenAPI document that validates and covers every route, and Prometheus metrics', async () => {
    const { s } = await start('svc-docs', insecureConf(plain.host));
    const doc = (await (await api(s, 'reader', '/openapi.json')).json()) as {
      paths: Record<string, Record<string, unknown>>;
    };
    const result = await validate(structuredClone(doc) as never);
    expect(result.valid, JSON.stringify(result)).toBe(true);
    const routes = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    expect(routes.sort()).toEqual(
      [
        'DELETE /v1/archives/{id}',
        'DELETE /v1/jobs/{id}',
        'GET /healthz',
        'GET /metrics',
        'GET /readyz',
        'GET /v1/archives',
        'GET /v1/archives/{id}',
        'GET /v1/archives/{id}/content',
        'GET /v1/bundles',
        'GET /v1/bundles/{id}/content',
        'GET /v1/events',
        'GET /v1/events/stream',
        'GET /v1/inspect',
        'GET /v1/jobs',
        'GET /v1/jobs/{id}',
        'GET /v1/jobs/{id}/events',
        'GET /v1/registries',
        'GET /v1/tags',
        'GET /v1/webhooks',
        'GET /v1/webhooks/{name}/deliveries',
        'POST /v1/archives',
        'POST /v1/bundles',
        'POST /v1/bundles/imports',
        'POST /v1/pulls',
        'POST /v1/pushes',
        'POST /v1/syncs',
        'POST /v1/webhooks/{name}/deliveries/{id}/retry',
      ].sort(),
    );

    const job = await pullJob(s, { ref: `${plain.host}/fixtures/small:v1` });
    expect((await waitJob(s, job.id)).state).toBe('succeeded');
    const text = await (await api(s, 'reader', '/metrics')).text();
    const families = parsePrometheus(text) as {
      name: string;
      type: string;
      metrics: { value?: string; labels?: Record<string, string>; count?: string }[];
    }[];
    const family = (n: string) => families.find((f) => f.name === n)!;
    expect(
      family('stowage_jobs').metrics.find((m) => m.labels?.kind === 'pull' && m.labels.state === 'succeeded')
        ?.value,
    ).toBe('1');
    expect(Number(family('stowage_pulled_bytes_total').metrics[0]!.value)).toBeGreaterThan(100 * 1024);
    expect(Number(family('stowage_store_fetched_blobs_total').metrics[0]!.value)).toBeGreaterThan(0);
    // Finished jobs are counted (they stay counted when the history is pruned) and timed.
    expect(
      family('stowage_jobs_finished_total').metrics.find(
        (m) => m.labels?.kind === 'pull' && m.labels.outcome === 'succeeded',
      )?.value,
    ).toBe('1');
    expect(family('stowage_job_duration_seconds').type).toBe('HISTOGRAM');
    expect(Number(family('stowage_store_logical_bytes').metrics[0]!.value)).toBeGreaterThan(100 * 1024);
    expect(Number(family('stowage_store_stored_bytes').metrics[0]!.value)).toBeGreaterThan(100 * 1024);
    expect(family('stowage_build_info').metrics[0]!.labels?.node).toBe(process.versions.node);
    // prom-client's process and Node metrics.
    expect(family('process_cpu_seconds_total')).toBeDefined();
    expect(family('nodejs_eventloop_lag_seconds')).toBeDefined();
    // Prometheus naming: counters end in _total, and nothing says "blob cache" for store deduplication.
    for (const f of families) {
      if (f.type === 'COUNTER') expect(f.name, f.name).toMatch(/_total$/);
      expect(f.name).not.toContain('blob_cache');
    }
    const requests = family('stowage_registry_requests_total').metrics;
    expect(
      requests.some(
        (m) => m.labels?.host === plain.host && m.labels.method === 'GET' && m.labels.status === '200',
      ),
    ).toBe(true);
    expect(family('stowage_registry_request_duration_seconds').type).toBe('HISTOGRAM');
    expect(family('stowage_http_requests_total').metrics.some((m) => m.labels?.route === '/v1/pulls')).toBe(
      true,
    );
  });

  it('runs configured sync jobs on request and on their cron schedule', async () => {
    const job = `\n[[job]]\nname = "small"\nsource = "${plain.host}/fixtures/small"\ntags = ["v1"]\nschedule = "*/2 * * * * *"\n`;
    const d = await serviceDir('svc-sync', insecureConf(plain.host));
    // Jobs go before [server], at the top level of the TOML.
    await writeFile(d.config, job + (await readFile(d.config, 'utf8')));
    const s = await startService(d);
    running.push(s);
    const unknown = await api(s, 'admin', '/v1/syncs', { method: 'POST', json: { jobs: ['nope'] } });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { message: string } }).error.message).toContain('small');
    const res = await api(s, 'admin', '/v1/syncs', { method: 'POST', json: { jobs: ['small'] } });
    expect(res.status).toBe(202);
    const done = (await waitJob(s, ((await res.json()) as { id: string }).id)) as {
      state: string;
      result: { failed: number; jobs: { name: string; tags: { tag: string }[] }[] };
      progress: { blobs: number; blobsDone: number; bytes: number; bytesDone: number };
    };
    expect(done.state, JSON.stringify(done)).toBe('succeeded');
    // Its progress counts the blobs the tag planned (the config and the layer), all arrived.
    expect(done.progress.blobs).toBe(2);
    expect(done.progress).toMatchObject({ blobsDone: 2, bytesDone: done.progress.bytes });
    expect(done.progress.bytes).toBeGreaterThan(0);
    expect(done.result.failed).toBe(0);
    expect(done.result.jobs[0]!.tags.map((t) => t.tag)).toEqual(['v1']);
    // The schedule queues syncs by itself.
    let scheduled: { requestedBy: string; state: string }[] = [];
    for (let i = 0; i < 200 && !scheduled.some((j) => j.state === 'succeeded'); i++) {
      await new Promise((r) => setTimeout(r, 50));
      scheduled = (
        (await (await api(s, 'reader', '/v1/jobs?kind=sync')).json()) as { jobs: typeof scheduled }
      ).jobs.filter((j) => j.requestedBy === 'schedule');
    }
    expect(scheduled.some((j) => j.state === 'succeeded')).toBe(true);
    // Each sync job's last success, for an alert on a mirror that stopped syncing.
    const metrics = await (await api(s, 'reader', '/metrics')).text();
    const last = Number(
      /^stowage_sync_last_success_timestamp_seconds\{job="small"\} (\S+)$/m.exec(metrics)?.[1],
    );
    expect(Math.abs(last - Date.now() / 1000)).toBeLessThan(120);
    const archives = (await (await api(s, 'reader', '/v1/archives')).json()) as {
      archives: { digest: string }[];
    };
    expect(archives.archives.map((a) => a.digest)).toEqual([h.fixtures.images.small!.digest]);
  });

  it('with no configuration at all, listens on 127.0.0.1:8080 only and keeps its data under ~/.local/share/stowage', async () => {
    const w = await workdir('svc-bare');
    // No --config, --listen, --store or --state; a working directory without config/stowage.toml.
    const child = spawn(process.execPath, [BIN, 'serve'], {
      env: w.env,
      cwd: w.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b));
    child.stderr.on('data', (b: Buffer) => (out += b));
    try {
      let ready = false;
      for (let i = 0; i < 300 && !ready && child.exitCode === null; i++) {
        ready = await fetch('http://127.0.0.1:8080/readyz').then(
          (r) => r.ok,
          () => false,
        );
        if (!ready) await new Promise((r) => setTimeout(r, 50));
      }
      expect(ready, out).toBe(true);
      // Its one listening socket is 127.0.0.1:8080: not 0.0.0.0, not [::].
      const listening = (await run('ss', ['-Hltnp'])).stdout
        .split('\n')
        .filter((l) => l.includes(`pid=${child.pid},`))
        .map((l) => l.trim().split(/\s+/)[3]);
      expect(listening).toEqual(['127.0.0.1:8080']);
      const data = join(w.env.HOME!, '.local/share/stowage');
      expect((await stat(join(data, 'store', 'index.json'))).isFile()).toBe(true);
      expect((await stat(join(data, 'state', 'api-token'))).mode & 0o777).toBe(0o600);
      expect(out).toContain(join(data, 'state', 'api-token'));
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('makes an admin token on first start when none is configured, kept 0600, and listens on loopback', async () => {
    const d = await serviceDir('svc-default', insecureConf(plain.host));
    // No [[server.token]]: strip them.
    const text = await readFile(d.config, 'utf8');
    await writeFile(d.config, text.slice(0, text.indexOf('[[server.token]]')));
    const s = await startService(d);
    running.push(s);
    const tokenFile = join(d.state, 'api-token');
    expect((await stat(tokenFile)).mode & 0o777).toBe(0o600);
    const token = (await readFile(tokenFile, 'utf8')).trim();
    const res = await fetch(`${s.url}/v1/jobs`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(s.output()).toContain(tokenFile);
    expect(s.output()).not.toContain(token);
    expect(s.output()).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+/);
  });
});
