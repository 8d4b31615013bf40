/**
 * The console's other pages: sign-in, the sync jobs of stowage.toml, storage (the `df` view as a chart)
 * and the API reference (Swagger UI, shipped with stowage, reading /openapi.json with the session).
 */
import { Cron } from 'croner';
import { html } from 'hono/html';
import type { Session } from '../api/session.js';
import type { JobConfig } from '../config/stowage.js';
import { plural } from '../core/figures.js';
import { shown } from '../core/printable.js';
import type { Job } from '../service/job-system.js';
import type { DiskUsage } from '../store/usage.js';
import type { SyncReport } from '../sync/report.js';
import { csrfField, formatBytes, type Html, ifAllowed, stateLabel, when } from './layout.js';

export function loginPage(next: string, error?: string): Html {
  return html`<h1>Sign in</h1>
${error ? html`<p class="flash error" role="alert">${error}</p>` : ''}
<form method="post" action="/ui/login">
  <input type="hidden" name="next" value="${next}">
  <label for="token">API token</label>
  <input id="token" type="password" name="token" required autocomplete="current-password" placeholder="stw_&hellip;">
  <p class="note">A token from stowage.toml [[server.token]] (<code>stowage token NAME --scopes &hellip;</code> makes one), or the
  admin token the service wrote to its state directory. The browser keeps a session cookie, not the token.</p>
  <p><button type="submit">Sign in</button></p>
</form>`;
}

/** The newest sync job that ran a configured job, and what it said of its tags. */
function lastRun(name: string, syncs: Job[]): { job: Job; reports: SyncReport['jobs'] } | undefined {
  const job = syncs.find((j) => ((j.request as { jobs?: string[] }).jobs ?? []).includes(name));
  if (!job) return undefined;
  // A pattern job reports each repository it found.
  const reports = ((job.result as SyncReport | undefined)?.jobs ?? []).filter((r) => r.name === name);
  return { job, reports };
}

/** What a pattern job chooses among the repositories it finds. */
function repositoryFilter(j: JobConfig): string {
  const r = j.repositories;
  if (!r) return 'every repository the pattern matches in the catalog';
  return `${r.include ? `matching ${r.include.join(', ')}` : 'all the pattern matches'}${r.exclude ? `, except ${r.exclude.join(', ')}` : ''}`;
}

export function syncsPage(jobs: JobConfig[], syncs: Job[], session: Session): Html {
  if (jobs.length === 0) {
    return html`<h1>Sync jobs</h1><p>stowage.toml has no [[job]] entries. Each one names a source repository, its tags
    (or include and exclude patterns), optionally a mirror and a cron schedule.</p>`;
  }
  return html`<h1>Sync jobs</h1>
<p class="note">From stowage.toml. Schedules run in UTC.</p>
${jobs.map((j) => {
  const last = lastRun(j.name, syncs);
  const next = j.schedule ? new Cron(j.schedule, { paused: true }).nextRun() : null;
  return html`<section>
<h2>${j.name}</h2>
<div class="scroll"><table><tbody>
<tr><th scope="row">Source</th><td class="mono">${j.source}</td></tr>
${j.source.includes('*') ? html`<tr><th scope="row">Repositories</th><td>${repositoryFilter(j)}</td></tr>` : ''}
<tr><th scope="row">Tags</th><td>${j.tags?.join(', ') ?? (j.include ? `matching ${j.include.join(', ')}` : 'all')}${j.exclude ? `, except ${j.exclude.join(', ')}` : ''}</td></tr>
${j.mirror ? html`<tr><th scope="row">Mirror</th><td class="mono">${j.mirror}${j.prune ? ' (pruned: tags gone from the source are deleted)' : ''}</td></tr>` : ''}
<tr><th scope="row">Schedule</th><td>${j.schedule ? html`<code>${j.schedule}</code>, next ${when(next?.toISOString())}` : 'none (run by hand or by the API)'}</td></tr>
<tr><th scope="row">Last run</th><td>${last ? html`<a href="/ui/jobs/${last.job.id}">${last.job.id}</a> ${stateLabel(last.job.state)} ${when(last.job.finishedAt ?? last.job.createdAt)}` : 'never (in the history kept)'}</td></tr>
</tbody></table></div>
${(last?.reports ?? []).map((report) => lastReport(report, (last?.reports.length ?? 0) > 1 || !!report.pattern))}
${ifAllowed(
  session.token,
  'sync',
  'run sync jobs',
  () =>
    html`<form method="post" action="/ui/syncs/run">${csrfField(session)}<input type="hidden" name="job" value="${j.name}"><button type="submit">Run ${j.name} now</button></form>`,
)}
</section>`;
})}`;
}

/** One repository's part of a sync job's last run: its error, its tags, what left the mirror. */
function lastReport(report: SyncReport['jobs'][number], named: boolean): Html {
  return html`${named ? html`<h3 class="mono">${report.source}${report.mirror ? html` &rarr; ${report.mirror}` : ''}</h3>` : ''}
${report.error ? html`<p class="state-failed">${shown(report.error, 2000)}</p>` : ''}
${
  report.tags.length
    ? html`<div class="scroll"><table><thead><tr><th>Tag</th><th>Result</th><th>Archive</th><th class="opt">Digest</th><th class="opt">Fetched</th></tr></thead><tbody>
${report.tags.map((t) => html`<tr><td>${shown(t.tag, 200)}</td><td>${t.action}${t.error ? html` <span class="state-failed">${shown(t.error, 2000)}</span>` : ''}</td><td>${t.archive ?? '-'}</td><td class="opt mono">${t.digest ? `${t.digest.slice(0, 19)}...` : '-'}</td><td class="opt">${formatBytes(t.fetchedBytes)}</td></tr>`)}
</tbody></table></div>`
    : ''
}
${
  report.mirrorDeleted?.length
    ? html`<p>Deleted from the mirror (gone from the source): ${report.mirrorDeleted.map((d, i) => html`${i ? ', ' : ''}<code>${d.tag}</code>`)}</p>`
    : ''
}`;
}

/** The registry's pull-through since this replica started: answered from the store, fetched, served stale. */
export interface PullThroughCounts {
  upstreams: string[];
  hits: number;
  misses: number;
  stale: number;
}

function pullThroughSection(p: PullThroughCounts | undefined): Html | string {
  if (!p) return '';
  return html`<h2>Pull-through</h2>
<p>From ${p.upstreams.join(', ')}, since this replica started: ${p.hits} answered from the store, ${p.misses} fetched upstream,
${p.stale} served from the store while the upstream could not be reached. Versions that came in this way are marked <span class="note">pulled through</span> in Archives.</p>`;
}

export function storagePage(u: DiskUsage, pullThrough?: PullThroughCounts): Html {
  const top = Math.max(1, ...u.repositories.map((r) => r.logicalBytes));
  return html`<h1>Storage</h1>
<p>${formatBytes(u.logicalBytes)} of archives take ${formatBytes(u.diskBytes)} in the store
(${u.logicalBytes ? `${((u.diskBytes / u.logicalBytes) * 100).toFixed(0)}%` : '-'}): blobs are stored once for every version that has them.
Retention as configured would reclaim ${plural(u.reclaimable.versions, 'version')}, ${formatBytes(u.reclaimable.bytes)}.</p>
<h2>Whole store</h2>
<div class="chart">
  <span>Archives (logical)</span><meter min="0" max="${Math.max(u.logicalBytes, u.diskBytes, 1)}" value="${u.logicalBytes}" aria-label="logical bytes"></meter><span>${formatBytes(u.logicalBytes)}</span>
  <span>On disk</span><meter min="0" max="${Math.max(u.logicalBytes, u.diskBytes, 1)}" value="${u.diskBytes}" aria-label="bytes on disk"></meter><span>${formatBytes(u.diskBytes)}</span>
  <span>Retention would reclaim</span><meter min="0" max="${Math.max(u.diskBytes, 1)}" value="${u.reclaimable.bytes}" aria-label="reclaimable bytes"></meter><span>${formatBytes(u.reclaimable.bytes)}</span>
</div>
<h2>Per repository</h2>
<p class="note">Logical: all its versions as separate archives. Unique: its distinct blobs.</p>
<div class="chart">${u.repositories.map(
    (
      r,
    ) => html`<span class="mono">${r.repository} <span class="note">(${r.versions} version${r.versions === 1 ? '' : 's'})</span></span>
<meter min="0" max="${top}" value="${r.logicalBytes}" aria-label="${r.repository} logical bytes"></meter>
<span>${formatBytes(r.logicalBytes)} / ${formatBytes(r.uniqueBytes)}</span>`,
  )}</div>
${pullThroughSection(pullThrough)}`;
}

export function apiPage(): Html {
  return html`<h1>API</h1>
<p class="note">The OpenAPI document is <a href="/openapi.json">/openapi.json</a>. Requests from this page use your
session; from scripts, send <code>Authorization: Bearer TOKEN</code>.</p>
<div id="swagger-ui"></div>`;
}
