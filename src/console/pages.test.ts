import { describe, expect, it } from 'vitest';
import type { JobConfig } from '../config/stowage.js';
import type { Job } from '../service/job-system.js';
import type { SyncReport } from '../sync/report.js';
import { syncsPage } from './pages.js';

const session = {
  token: { name: 'ops', sha256: '0'.repeat(64), scopes: ['admin' as const] },
  csrf: 'c',
  expires: 0,
};

/** A sync job of the history, as the page reads it, with this report as its result. */
function syncRun(name: string, state: Job['state'], result: SyncReport): Job {
  return {
    id: 'j1',
    kind: 'sync',
    state,
    request: { jobs: [name] },
    requestedBy: 'ops',
    createdAt: '2026-12-06T00:00:00.000Z',
    progress: { blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 },
    result,
  };
}

function tagged(tag: string) {
  return { tag, action: 'fetched' as const, archive: 'stored' as const, fetchedBytes: 10 };
}

describe('the Sync jobs page', () => {
  it('shows a pattern job’s repositories filter and each repository of its last run with its tags', async () => {
    const job: JobConfig = {
      name: 'team',
      source: 'r.test/team/**',
      repositories: { exclude: ['^team/sandbox/'] },
      mirror: 'm.test/copy/{path}',
    };
    const result: SyncReport = {
      dryRun: false,
      store: 'the store',
      fetchedBytes: 20,
      failed: 0,
      jobs: ['app', 'db'].map((r) => ({
        name: 'team',
        source: `r.test/team/${r}`,
        pattern: 'r.test/team/**',
        mirror: `m.test/copy/${r}`,
        tags: [tagged(`${r}-1.0`)],
        pruned: [],
        mirrorDeleted: [],
      })),
    };
    const run = syncRun('team', 'succeeded', result);
    const page = String(await syncsPage([job], [run], session));
    expect(page).toContain('Repositories');
    expect(page).toContain('except ^team/sandbox/');
    for (const r of ['app', 'db']) {
      expect(page).toContain(`r.test/team/${r} &rarr; m.test/copy/${r}`);
      expect(page).toContain(`<td>${r}-1.0</td>`);
    }
  });
});

describe('hostile text on the console’s pages', () => {
  it('is escaped: an attachment type, a source and a job error with HTML render as text', async () => {
    const { versionPage } = await import('./archives.js');
    const evil = '<img src=x onerror=alert(1)><script>alert(2)</script>"\'';
    const page = String(
      await versionPage(
        {
          id: 'abcdef012345',
          repository: 'r.test/team/app',
          tag: '1.0',
          descriptor: {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: `sha256:${'a'.repeat(64)}`,
            size: 1,
          },
          source: evil,
          taken: '2026-12-06T00:00:00.000Z',
          platforms: [],
          referrers: [
            {
              descriptor: {
                mediaType: 'application/vnd.oci.image.manifest.v1+json',
                digest: `sha256:${'b'.repeat(64)}`,
                size: 1,
                artifactType: evil,
              },
            },
          ],
        },
        session,
        new Map(),
        {
          annotations: { [`org.example.${evil}`]: evil },
          labels: [{ platform: '', labels: { note: `\u001b]0;owned\u0007${'x'.repeat(100 * 1024)}` } }],
        },
      ),
    );
    expect(page).not.toContain('<script>alert');
    // A 100 KB label is cut, its length said; a terminal escape is shown as text, never sent raw.
    expect(page).toContain('more characters)');
    expect(page.length).toBeLessThan(20_000);
    expect(page).not.toContain('\u001b');
    expect(page).toContain('\\x1b]0;owned\\x07');
    expect(page).not.toContain('<img src=x');
    expect(page).toContain('&lt;script&gt;alert(2)&lt;/script&gt;');
    const job: JobConfig = { name: 'j', source: 'r.test/team/app' };
    const run = syncRun('j', 'failed', {
      dryRun: false,
      store: 's',
      fetchedBytes: 0,
      failed: 1,
      jobs: [
        {
          name: 'j',
          source: 'r.test/team/app',
          tags: [{ tag: '1', action: 'failed', fetchedBytes: 0, error: evil }],
          pruned: [],
          mirrorDeleted: [],
          error: evil,
        },
      ],
    });
    const syncs = String(await syncsPage([job], [run], session));
    expect(syncs).not.toContain('<script>alert');
    expect(syncs).toContain('&lt;img src=x onerror=alert(1)&gt;');
  });
});
