/**
 * The web console in a real browser: Debian's Chromium driven by playwright-core, against a real
 * `stowage serve` and real registries. Sign in, start a pull and watch it finish live, find the version,
 * download it (the same sha256 as `stowage pull`), push it to another repository (skopeo reads the same
 * digest), cancel a job, and a read-only token sees no destructive button and is refused if it tries.
 * Every page loads without a Content-Security-Policy violation. With STOWAGE_CONSOLE_SCREENSHOTS=DIR,
 * a screenshot of each page is written there (docs/console has them).
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { harness, insecureConf, stowage } from './harness/cli.js';
import { type FaultProxy, startFaultProxy } from './harness/fault-proxy.js';
import { buildImage, Layout } from './harness/fixtures.js';
import { run } from './harness/processes.js';
import {
  api,
  type RunningService,
  type ServiceDir,
  serviceDir,
  startService,
  TOKENS,
  waitJob,
} from './harness/service.js';
import { pushTags } from './harness/tagged-repo.js';

const h = harness();
const plain = h.registries.plain;
const SHOTS = process.env.STOWAGE_CONSOLE_SCREENSHOTS;

let browser: Browser;
let service: RunningService;
let d: ServiceDir;
let proxy: FaultProxy;
/** CSP violations and page errors seen by any page. */
const violations: string[] = [];

beforeAll(async () => {
  proxy = await startFaultProxy({
    upstream: `http://${plain.host}`,
    // The large fixture trickles, so its pull is still running when the test cancels it.
    fault: (req) =>
      req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')
        ? { kind: 'trickle', bytes: 64 * 1024, everyMs: 50 }
        : undefined,
  });
  d = await serviceDir(
    'console',
    insecureConf(plain.host, proxy.host),
    `\n[[job]]\nname = "nightly"\nsource = "${plain.host}/fixtures/small"\ntags = ["v1"]\nschedule = "0 3 * * *"\n`,
  );
  service = await startService(d);
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  if (SHOTS) await mkdir(SHOTS, { recursive: true });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await service?.stop();
  await proxy?.close();
});

async function session(token: string): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') violations.push(m.text());
  });
  page.on('pageerror', (e) => violations.push(e.message));
  await page.goto(`${service.url}/`);
  expect(new URL(page.url()).pathname).toBe('/ui/login');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/ui/archives');
  return { context, page };
}

async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS) await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('the web console in Chromium', () => {
  let versionPath = '';

  it('signs in, pulls an image and shows it finishing live, then serves its download', async () => {
    const { context, page } = await session(TOKENS.admin);
    try {
      await page.getByRole('link', { name: 'Jobs', exact: true }).click();
      // Through the trickling proxy: the pull lasts a few seconds, long enough to be watched.
      await page.getByLabel(/^Images/).fill(`${proxy.host}/fixtures/multi:v1`);
      await page.getByRole('button', { name: 'Start the pull' }).click();
      await page.waitForURL(/\/ui\/jobs\/[a-z0-9-]+$/);
      // The page follows the job's events: running, its blobs arriving, then its end, with no reload by the test.
      await page.locator('[data-job-state]', { hasText: 'running' }).waitFor({ timeout: 30_000 });
      await page.locator('[data-job-blobs] progress').first().waitFor();
      // The rate and time left, as the CLI writes them, from the service's progress events.
      await page
        .locator('[data-progress-text]', {
          hasText: /\/s, (\d+ s left|\d+ min left|time left unknown)$|stalled/,
        })
        .waitFor({ timeout: 30_000 });
      await shot(page, 'job-running');
      await page.locator('[data-job-state]', { hasText: 'succeeded' }).waitFor({ timeout: 60_000 });
      expect(await page.locator('[data-job-blobs] progress').count()).toBeGreaterThanOrEqual(4);
      await page.getByRole('link', { name: /^version / }).waitFor();
      await shot(page, 'job');
      await page.getByRole('link', { name: /^version / }).click();
      await page.waitForURL(/\/ui\/archives\/[0-9a-f]{12}$/);
      versionPath = new URL(page.url()).pathname;
      await shot(page, 'version');

      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.getByRole('link', { name: 'oci-archive' }).click(),
      ]);
      const got = await readFile((await download.path())!);
      const pulled = join(d.dir, 'multi.tar');
      const r = await stowage(['pull', '-q', `${proxy.host}/fixtures/multi:v1`, '-o', pulled], {
        env: d.env,
      });
      expect(r.code, r.stderr).toBe(0);
      expect(sha256(got)).toBe(sha256(await readFile(pulled)));
      // The sha256sum line on the page names that checksum.
      expect(await page.locator('#sumline').textContent()).toContain(sha256(got));

      await page.getByRole('link', { name: 'Archives', exact: true }).click();
      await page.getByLabel(/^Search/).fill('fixtures/multi');
      await page.getByRole('button', { name: 'Search' }).click();
      await expect(page.locator(`a[href="${versionPath}"]`).count()).resolves.toBe(1);
      await shot(page, 'archives');
    } finally {
      await context.close();
    }
  }, 120_000);

  it('pushes the version to another repository, digest intact, and cancels a running job', async () => {
    const { context, page } = await session(TOKENS.admin);
    try {
      await page.goto(`${service.url}${versionPath}`);
      const digest = (await page
        .locator('tr', { hasText: 'Digest' })
        .first()
        .locator('td')
        .textContent())!.trim();
      await page.getByLabel(/^Destination/).fill(`${plain.host}/console/pushed:v1`);
      await page.getByRole('button', { name: 'Push' }).click();
      await page.waitForURL(/\/ui\/jobs\//);
      await page.locator('[data-job-state]', { hasText: 'succeeded' }).waitFor({ timeout: 60_000 });
      await page.locator('[data-job-events=""]').waitFor({ timeout: 30_000 });
      const inspected = JSON.parse(
        (await run('skopeo', ['inspect', '--tls-verify=false', `docker://${plain.host}/console/pushed:v1`]))
          .stdout,
      );
      expect(inspected.Digest).toBe(digest);

      // A slow pull, canceled from its page.
      await page.getByRole('link', { name: 'Jobs', exact: true }).click();
      await page.getByLabel(/^Images/).fill(`${proxy.host}/fixtures/large:v1`);
      await page.getByRole('button', { name: 'Start the pull' }).click();
      await page.waitForURL(/\/ui\/jobs\//);
      await page.locator('[data-job-state]', { hasText: 'running' }).waitFor({ timeout: 30_000 });
      await page.getByRole('button', { name: 'Cancel this job' }).click();
      await page.locator('[data-job-state]', { hasText: 'canceled' }).waitFor({ timeout: 60_000 });
      // The ended job's page reloads itself into the server's rendering (no event stream left).
      await page.locator('[data-job-events=""]').waitFor({ timeout: 30_000 });

      // The list shows both, and updates itself.
      await page.getByRole('link', { name: 'Jobs', exact: true }).click();
      const rows = page.locator('tbody[data-live-jobs] tr');
      // The link's page may still be loading when the click returns: wait for its rows, not a count of
      // the page before it.
      await page.waitForURL(/\/ui\/jobs\/?$/);
      await expect.poll(() => rows.count(), { timeout: 15_000 }).toBeGreaterThanOrEqual(3);
      const before = await rows.count();
      // A job started elsewhere (a CI system, by the API) appears without a reload.
      const res = await api(service, 'puller', '/v1/pulls', {
        method: 'POST',
        json: { ref: `${plain.host}/fixtures/small:v1` },
      });
      expect(res.status).toBe(202);
      await expect.poll(() => rows.count(), { timeout: 15_000 }).toBe(before + 1);
      await shot(page, 'jobs');
    } finally {
      await context.close();
    }
  }, 180_000);

  it('makes a bundle from its page, shows it in the history and serves its download', async () => {
    const { context, page } = await session(TOKENS.admin);
    try {
      await page.getByRole('link', { name: 'Bundles', exact: true }).click();
      await page.getByRole('heading', { name: 'Bundles' }).waitFor();
      await page.getByRole('button', { name: 'Make the bundle' }).click();
      await page.waitForURL(/\/ui\/jobs\//);
      await page.locator('[data-job-state]', { hasText: 'succeeded' }).waitFor({ timeout: 60_000 });
      await page.locator('[data-job-events=""]').waitFor({ timeout: 30_000 });
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.getByRole('link', { name: /^Download bundle / }).click(),
      ]);
      const got = await readFile((await download.path())!);
      // What the console offers is the bundle the store recorded, and a bundle stowage itself reads.
      const saved = join(d.dir, 'console-bundle.tar');
      await writeFile(saved, got);
      const shown = await stowage(['bundle', 'inspect', saved, '--json'], { env: d.env });
      expect(shown.code, shown.stderr).toBe(0);
      const id = JSON.parse(shown.stdout).id as string;
      await page.getByRole('link', { name: 'Bundles', exact: true }).click();
      await expect
        .poll(() => page.locator('tbody[data-bundles] tr').first().textContent())
        .toContain(id.slice(7, 19));
      await shot(page, 'bundles');
    } finally {
      await context.close();
    }
  }, 120_000);

  it('shows sync jobs, storage and the API reference without a CSP violation', async () => {
    const { context, page } = await session(TOKENS.admin);
    try {
      await page.getByRole('link', { name: 'Sync jobs', exact: true }).click();
      await page.getByRole('heading', { name: 'nightly' }).waitFor();
      expect(await page.locator('main').textContent()).toContain('0 3 * * *');
      await shot(page, 'syncs');
      await page.getByRole('link', { name: 'Storage', exact: true }).click();
      await page.getByRole('heading', { name: 'Per repository' }).waitFor();
      expect(await page.locator('meter').count()).toBeGreaterThan(3);
      await shot(page, 'storage');
      // The events page lists what the service did: the bundle made by the test above among them.
      await page.getByRole('link', { name: 'Events', exact: true }).click();
      await page.getByRole('heading', { name: 'Recent events' }).waitFor();
      expect(await page.locator('tbody[data-events]').textContent()).toContain('bundle.created');
      await shot(page, 'events');
      await page.getByRole('link', { name: 'API', exact: true }).click();
      // Swagger UI, served by stowage, renders the document it read with the session.
      await page.getByText('/v1/pulls').first().waitFor({ timeout: 30_000 });
      await shot(page, 'api');
      expect(violations, violations.join('\n')).toEqual([]);
    } finally {
      await context.close();
    }
  }, 120_000);

  it('shows an image whose labels carry HTML, script, control characters and 100 KB as text, running nothing', async () => {
    // The image, built here and pushed by skopeo: its labels are what an attacker controls.
    const layout = new Layout(join(d.dir, 'hostile'));
    await layout.init();
    const img = await buildImage(layout, {
      architecture: 'amd64',
      layers: [[{ type: 'file', name: 'x', content: Buffer.from('x') }]],
      labels: {
        'org.example.html': '<img src=x onerror="window.__owned=1"><b>bold</b>',
        'org.example.script': '<script>window.__owned=2</script>',
        'org.example.link': 'javascript:window.__owned=3',
        'org.example.terminal': '\u001b]0;owned\u0007\u202eevil',
        'org.example.long': 'y'.repeat(100 * 1024),
      },
    });
    await writeFile(
      join(layout.dir, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            ...img.manifest,
            annotations: { 'org.opencontainers.image.ref.name': 'v1' },
          },
        ],
      }),
    );
    await pushTags(layout.dir, ['v1'], `${plain.host}/console/hostile`);
    const res = await api(service, 'puller', '/v1/pulls', {
      method: 'POST',
      json: { ref: `${plain.host}/console/hostile:v1` },
    });
    expect(res.status).toBe(202);
    const job = await waitJob(service, ((await res.json()) as { id: string }).id);
    expect(job.state).toBe('succeeded');
    const id = (job.result as { archives: { id: string }[] }).archives[0]!.id;

    const { context, page } = await session(TOKENS.admin);
    try {
      await page.goto(`${service.url}/ui/archives/${id}`);
      const labels = page.locator('tr', { has: page.getByRole('rowheader', { name: 'Labels' }) });
      await labels.waitFor();
      const text = (await labels.textContent()) ?? '';
      expect(text).toContain('<img src=x onerror="window.__owned=1"><b>bold</b>');
      expect(text).toContain('<script>window.__owned=2</script>');
      expect(text).toContain('\\x1b]0;owned\\x07\\u{202e}evil');
      expect(text).toMatch(/y{200}… \(\d+ more characters\)/);
      expect(text.length).toBeLessThan(5000);
      // Nothing became an element, a link or a script.
      expect(await labels.locator('img, b, script, a').count()).toBe(0);
      expect(await page.evaluate(() => (globalThis as { __owned?: number }).__owned)).toBeUndefined();
      await shot(page, 'version-hostile');
      expect(violations, violations.join('\n')).toEqual([]);
    } finally {
      await context.close();
    }
  }, 120_000);

  it('reads without JavaScript, and is used with the keyboard alone', async () => {
    const context = await browser.newContext({ javaScriptEnabled: false });
    const page = await context.newPage();
    try {
      await page.goto(`${service.url}/`);
      // Signed in with the keyboard: the token field, then Enter.
      await page.keyboard.press('Tab');
      await page.keyboard.press('Tab');
      await expect
        .poll(() => page.evaluate('document.activeElement && document.activeElement.id'))
        .toBe('token');
      await page.keyboard.type(TOKENS.reader);
      await page.keyboard.press('Enter');
      await page.waitForURL('**/ui/archives');
      expect(await page.locator('main').textContent()).toContain('fixtures/multi');
      // Every page is there as the server rendered it.
      for (const [link, text] of [
        ['Jobs', 'fixtures/multi:v1'],
        ['Sync jobs', 'nightly'],
        ['Storage', 'Per repository'],
      ] as const) {
        await page.getByRole('link', { name: link, exact: true }).click();
        expect(await page.locator('main').textContent()).toContain(text);
      }
      await page.goto(`${service.url}${versionPath}`);
      expect(await page.locator('main').textContent()).toContain('sha256sum -c');
    } finally {
      await context.close();
    }
  }, 60_000);

  it('gives a read-only token no destructive button, and refuses it if it tries', async () => {
    const { context, page } = await session(TOKENS.reader);
    try {
      await page.goto(`${service.url}${versionPath}`);
      await expect(page.getByRole('button', { name: /^Delete/ }).count()).resolves.toBe(0);
      await expect(page.getByRole('button', { name: 'Push' }).count()).resolves.toBe(0);
      expect(await page.locator('main').textContent()).toContain('no "admin" scope');
      await page.getByRole('link', { name: 'Jobs', exact: true }).click();
      await expect(page.getByRole('button', { name: 'Start the pull' }).count()).resolves.toBe(0);
      // Trying anyway, with the page's own CSRF secret: the scope still decides.
      const status = await page.evaluate(`(async () => {
        const csrf = document.querySelector('input[name=_csrf]').value;
        const res = await fetch('${versionPath}/delete', { method: 'POST', body: new URLSearchParams({ _csrf: csrf }) });
        return res.status;
      })()`);
      expect(status).toBe(403);
      await page.goto(`${service.url}${versionPath}`);
      expect(await page.locator('h1').textContent()).toContain('fixtures/multi:v1');
      await shot(page, 'read-only');
    } finally {
      await context.close();
    }
  }, 60_000);
});
