import { describe, expect, it } from 'vitest';
import type { JobConfig } from '../config/stowage.js';
import type { Job } from '../service/jobs.js';
import type { SyncReport } from '../sync/sync.js';
import { syncsPage } from './pages.js';

const session = {
  token: { name: 'ops', sha256: '0'.repeat(64), scopes: ['admin' as const] },
  csrf: 'c',
  expires: 0,
};

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
    const run: Job = {
      id: 'j1',
      kind: 'sync',
      state: 'succeeded',
      request: { jobs: ['team'] },
      requestedBy: 'ops',
      createdAt: '2026-12-06T00:00:00.000Z',
      progress: { blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 },
      result,
    };
    const page = String(await syncsPage([job], [run], session));
    expect(page).toContain('Repositories');
    expect(page).toContain('except ^team/sandbox/');
    for (const r of ['app', 'db']) {
      expect(page).toContain(`r.test/team/${r} &rarr; m.test/copy/${r}`);
      expect(page).toContain(`<td>${r}-1.0</td>`);
    }
  });
});
