import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { inProcessEngine } from '../../test/harness/in-process.js';
import { tempDirs } from '../../test/harness/temp-dirs.js';
import { createApp } from '../api/app.js';
import { tokenHash } from '../api/auth.js';
import { Sessions } from '../api/session.js';
import type { Webhook } from '../events/webhooks.js';
import { sha256Digest } from '../image/digest.js';
import { MediaType } from '../image/mediatypes.js';
import { createMetrics } from '../service/metrics.js';
import { mountConsole } from './app.js';

const temp = tempDirs();
const TOKENS = { reader: 'stw_console-reader-0123456789', admin: 'stw_console-admin-0123456789' };

async function consoleApp(opts: { hooks?: Webhook[] } = {}) {
  const dir = await temp('stowage-console-');
  const { engine, store, jobs, events } = await inProcessEngine(dir, { maxQueued: 5, hooks: opts.hooks });
  events.start();
  const deps = {
    engine,
    jobs,
    events,
    metrics: createMetrics(engine, jobs),
    tokens: [
      { name: 'reader', sha256: tokenHash(TOKENS.reader), scopes: ['read' as const] },
      { name: 'admin', sha256: tokenHash(TOKENS.admin), scopes: ['admin' as const] },
    ],
    logger: pino({ level: 'silent' }),
    version: 'test',
    ready: () => true,
    maxUpload: 1024,
    sessions: new Sessions(Buffer.from('k'.repeat(64))),
  };
  const app = createApp(deps);
  mountConsole(app, deps);
  // One stored version.
  const put = async (bytes: Buffer, mediaType: string) => {
    const d = { mediaType, digest: sha256Digest(bytes), size: bytes.length };
    await store.putDocument(d, bytes);
    return d;
  };
  const cfg = await put(Buffer.from('{"os":"linux","architecture":"amd64"}'), MediaType.OciConfig);
  const layer = await put(Buffer.alloc(100, 1), MediaType.OciLayerGzip);
  const manifest = await put(
    Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: cfg, layers: [layer] }),
    ),
    MediaType.OciManifest,
  );
  const v = await store.addVersion({
    repository: '127.0.0.1:5000/team/app',
    tag: '1.0',
    descriptor: manifest,
    platforms: ['linux/amd64'],
    taken: '2026-11-29T05:00:00.000Z',
    source: '127.0.0.1:5000/team/app:1.0',
  });
  return { app, store, engine, events, version: v.id };
}

/** Signs in; the cookie header to send, and the page's CSRF secret (read off a form, as a browser has it). */
async function signIn(app: Awaited<ReturnType<typeof consoleApp>>['app'], token: string) {
  const res = await app.request('/ui/login', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token, next: '/ui/archives' }),
  });
  expect(res.status).toBe(303);
  const cookie = res.headers.get('set-cookie')!.split(';')[0]!;
  const page = await (await app.request('/ui/jobs', { headers: { cookie } })).text();
  const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;
  return { cookie, csrf, setCookie: res.headers.get('set-cookie')! };
}

describe('the web console', () => {
  it('sends a visitor without a session to sign in, and back to the page after', async () => {
    const { app } = await consoleApp();
    const root = await app.request('/');
    expect(root.status).toBe(302);
    expect(root.headers.get('location')).toBe('/ui/login');
    const page = await app.request('/ui/archives');
    expect(page.headers.get('location')).toBe('/ui/login?next=%2Fui%2Farchives');
    const login = await app.request('/ui/login?next=/ui/jobs');
    expect(login.status).toBe(200);
    expect(await login.text()).toContain('name="next" value="/ui/jobs"');
    // Elsewhere than the console is not a place to be sent.
    expect(await (await app.request('/ui/login?next=https://evil.example/')).text()).toContain(
      'value="/ui/archives"',
    );
  });

  it('signs in with a token into an HttpOnly, SameSite=Strict cookie, Secure over TLS; a wrong token is refused', async () => {
    const { app } = await consoleApp();
    const bad = await app.request('/ui/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: 'stw_nope' }),
    });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('set-cookie')).toBeNull();
    expect(await bad.text()).toContain('not one this service accepts');
    const { setCookie, cookie } = await signIn(app, TOKENS.reader);
    expect(setCookie).toMatch(/HttpOnly/);
    expect(setCookie).toMatch(/SameSite=Strict/);
    expect(setCookie).toMatch(/Path=\//);
    expect(setCookie).not.toMatch(/Secure/);
    expect(setCookie).not.toContain(TOKENS.reader);
    const tls = await app.request('/ui/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-proto': 'https' },
      body: new URLSearchParams({ token: TOKENS.reader }),
    });
    expect(tls.headers.get('set-cookie')).toMatch(/; Secure/);
    // The session reads what the token may: the archives page and the OpenAPI document.
    expect((await app.request('/ui/archives', { headers: { cookie } })).status).toBe(200);
    expect((await app.request('/openapi.json', { headers: { cookie } })).status).toBe(200);
    // A cookie changed by a byte is no session.
    const forged = cookie.replace(/.$/, (ch) => (ch === 'A' ? 'B' : 'A'));
    expect((await app.request('/ui/archives', { headers: { cookie: forged } })).status).toBe(302);
  });

  it('sends a strict CSP (no inline script or style) and no third-party origin, on a first page under 100 KB', async () => {
    const { app } = await consoleApp();
    const { cookie } = await signIn(app, TOKENS.reader);
    const res = await app.request('/ui/archives', { headers: { cookie } });
    const csp = res.headers.get('content-security-policy')!;
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    const body = await res.text();
    expect(body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(body).not.toMatch(/\sstyle="/);
    expect(body).not.toMatch(/(src|href)="(https?:)?\/\//);
    let bytes = Buffer.byteLength(body);
    for (const m of body.matchAll(/(?:src|href)="(\/ui\/assets\/[^"]+)"/g)) {
      const a = await app.request(m[1]!);
      expect(a.status).toBe(200);
      bytes += (await a.arrayBuffer()).byteLength;
    }
    expect(bytes).toBeLessThan(100 * 1024);
    expect((await app.request('/ui/assets/..%2Fapp.ts')).status).toBe(404);
    expect(
      (await app.request('/ui/assets/swagger/swagger-ui-bundle.js')).headers.get('content-type'),
    ).toMatch(/javascript/);
  });

  it('marks a version that came in through the pull-through, and no other', async () => {
    const { app, version, store } = await consoleApp();
    const first = await store.find(version);
    const pulled = await store.addVersion({
      repository: first.repository,
      tag: '2.0',
      descriptor: first.descriptor,
      platforms: first.platforms,
      taken: '2026-11-30T05:00:00.000Z',
      source: `${first.repository}:2.0`,
      pulledThrough: true,
    });
    const { cookie } = await signIn(app, TOKENS.reader);
    const page = await (await app.request('/ui/archives', { headers: { cookie } })).text();
    const row = (id: string) => page.slice(page.indexOf(`/ui/archives/${id}"`)).split('</tr>')[0]!;
    expect(row(pulled.id)).toContain('pulled through');
    expect(row(version)).not.toContain('pulled through');
  });

  it("shows the pull-through's hits, misses and stale answers where upstreams are configured", async () => {
    const { app, engine } = await consoleApp();
    const { cookie } = await signIn(app, TOKENS.reader);
    expect(await (await app.request('/ui/storage', { headers: { cookie } })).text()).not.toContain(
      'Pull-through',
    );
    engine.config.server.registry = { 'pull-through': ['127.0.0.1:5000'] };
    Object.assign(engine.counters, { pullThroughHits: 7, pullThroughMisses: 3, pullThroughStale: 1 });
    const page = await (await app.request('/ui/storage', { headers: { cookie } })).text();
    expect(page).toContain(
      'From 127.0.0.1:5000, since this replica started: 7 answered from the store, 3 fetched upstream',
    );
    expect(page).toContain('1 served from the store while the upstream could not be reached');
  });

  it('shows a read-only token no destructive button, and refuses it the action anyway', async () => {
    const { app, version, store } = await consoleApp();
    const { cookie, csrf } = await signIn(app, TOKENS.reader);
    const page = await (await app.request(`/ui/archives/${version}`, { headers: { cookie } })).text();
    expect(page).toContain('127.0.0.1:5000/team/app:1.0');
    expect(page).not.toContain(`/ui/archives/${version}/delete`);
    expect(page).not.toContain(`/ui/archives/${version}/push`);
    expect(page).toContain('no "admin" scope, so you cannot delete versions');
    const tried = await app.request(`/ui/archives/${version}/delete`, {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: csrf }),
    });
    expect(tried.status).toBe(403);
    expect(await tried.text()).toContain('lacks the &quot;admin&quot; scope');
    expect((await store.versions()).map((v) => v.id)).toEqual([version]);
  });

  it('shows the archives a page at a time, with the next page linked, and searches', async () => {
    const { app, store } = await consoleApp();
    const first = (await store.versions())[0]!;
    await store.update((all) => [
      ...all,
      ...Array.from({ length: 250 }, (_, i) => ({
        ...first,
        id: `v${String(i).padStart(11, '0')}`,
        tag: `build-${String(i).padStart(3, '0')}`,
      })),
    ]);
    const { cookie } = await signIn(app, TOKENS.reader);
    const one = await (await app.request('/ui/archives', { headers: { cookie } })).text();
    expect(one).toContain('200 versions of 200 tags in 1 repositories on this page');
    const next = /href="(\/ui\/archives\?after=[^"]+)" rel="next"/.exec(one)?.[1];
    expect(next).toBeDefined();
    const two = await (await app.request(next!.replaceAll('&amp;', '&'), { headers: { cookie } })).text();
    expect(two).toContain('51 versions of 51 tags');
    expect(two).toContain('build-249');
    expect(two).not.toContain('rel="next"');
    const found = await (await app.request('/ui/archives?q=BUILD-13', { headers: { cookie } })).text();
    expect(found).toContain('10 versions of 10 tags in 1 repositories match');
  });

  it('refuses a change without the CSRF secret or from another origin, and does it with both', async () => {
    const { app, version, store } = await consoleApp();
    const { cookie, csrf } = await signIn(app, TOKENS.admin);
    const post = (headers: Record<string, string>, fields: Record<string, string>) =>
      app.request(`/ui/archives/${version}/delete`, {
        method: 'POST',
        headers: { cookie, 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams(fields),
      });
    // A cross-site form (the browser would send the cookie only without SameSite=Strict): no secret.
    expect((await post({}, {})).status).toBe(403);
    expect((await post({}, { _csrf: 'guessed' })).status).toBe(403);
    expect((await post({ origin: 'https://evil.example' }, { _csrf: csrf })).status).toBe(403);
    // The JSON API takes the session too, with the secret in X-CSRF-Token.
    const api = await app.request('/v1/syncs', { method: 'POST', headers: { cookie } });
    expect(api.status).toBe(403);
    const apiOk = await app.request('/v1/syncs', {
      method: 'POST',
      headers: { cookie, 'x-csrf-token': csrf },
    });
    expect(apiOk.status).toBe(400); // past the CSRF check: this store has no sync jobs
    expect((await store.versions()).length).toBe(1);
    const done = await post({ origin: 'http://localhost' }, { _csrf: csrf });
    expect(done.status).toBe(200);
    expect(await done.text()).toContain(`Deleted version ${version}`);
    expect(await store.versions()).toEqual([]);
  });

  it('slows down token guessing: after ten refused tokens the address waits, a right token included', async () => {
    const { app } = await consoleApp();
    const attempt = (token: string) =>
      app.request('/ui/login', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token, next: '/ui/archives' }),
      });
    for (let i = 0; i < 10; i++) expect((await attempt(`stw_wrong-${i}`)).status).toBe(401);
    const held = await attempt(TOKENS.admin);
    expect(held.status).toBe(429);
    expect(Number(held.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await held.text()).toContain('Too many refused tokens from this address');
  });

  it("shows each webhook's deliveries, and lets an admin send a failed one again", async () => {
    const hook: Webhook = {
      name: 'deploys',
      url: new URL('http://127.0.0.1:9/hook?key=secret-in-query'),
      timeoutMs: 1000,
      retryForMs: 0,
      mode: 'structured',
    };
    const { app, events } = await consoleApp({ hooks: [hook] });
    events.publish({
      type: 'io.stowage.version.stored',
      source: '/stowage/jobs/j',
      subject: 'r/app:1.0',
      data: {},
    });
    for (let i = 0; i < 200 && (await events.log.history('deploys', 1))[0]?.state !== 'failed'; i++)
      await new Promise((r) => setTimeout(r, 10));
    const reader = await signIn(app, TOKENS.reader);
    const seen = await (await app.request('/ui/events', { headers: { cookie: reader.cookie } })).text();
    expect(seen).toContain('data-webhook="deploys"');
    expect(seen).toContain('connection refused');
    expect(seen).toContain('r/app:1.0');
    expect(seen).not.toContain('secret-in-query');
    expect(seen).not.toContain('Send again');
    const [failed] = await events.log.history('deploys', 1);
    const admin = await signIn(app, TOKENS.admin);
    const page = await (await app.request('/ui/events', { headers: { cookie: admin.cookie } })).text();
    expect(page).toContain(`/ui/webhooks/deploys/deliveries/${failed!.id}/retry`);
    const refused = await app.request(`/ui/webhooks/deploys/deliveries/${failed!.id}/retry`, {
      method: 'POST',
      headers: { cookie: reader.cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: reader.csrf }),
    });
    expect(refused.status).toBe(403);
    const sent = await app.request(`/ui/webhooks/deploys/deliveries/${failed!.id}/retry`, {
      method: 'POST',
      headers: { cookie: admin.cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: admin.csrf }),
    });
    expect(sent.status).toBe(303);
    const history = await events.log.history('deploys', 5);
    expect(history.length).toBe(2);
    expect(history[0]!.event).toBe(failed!.event);
  });

  it('signs out: the cookie is cleared', async () => {
    const { app } = await consoleApp();
    const { cookie, csrf } = await signIn(app, TOKENS.reader);
    const out = await app.request('/ui/logout', {
      method: 'POST',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: csrf }),
    });
    expect(out.status).toBe(303);
    expect(out.headers.get('set-cookie')).toMatch(/stowage_session=;.*Max-Age=0/);
  });
});
