/**
 * The Jobs pages: the list (live: the server streams its rows), a form to start a pull, and one job:
 * its state, progress, a bar per blob, its events, its result, and cancel.
 */
import { html } from 'hono/html';
import type { Session } from '../api/session.js';
import { plural } from '../core/figures.js';
import { shown } from '../core/printable.js';
import type { Job, JobEvent } from '../service/job-system.js';
import { scopeOf, TERMINAL } from '../service/job-system.js';
import { csrfField, formatBytes, type Html, ifAllowed, stateLabel, when } from './layout.js';

function describe(job: Job): string {
  const r = job.request as { refs?: string[]; archive?: string; destination?: string; jobs?: string[] };
  if (job.kind === 'pull') return (r.refs ?? []).join(', ');
  if (job.kind === 'push') return `${r.archive} to ${r.destination}`;
  if (job.kind === 'bundle') {
    const b = job.request as { since?: string; versions?: string };
    return `${b.versions === 'newest' ? 'the newest of each tag' : 'every version'} since ${b.since ?? 'nothing (full)'}${r.jobs?.length ? ` of ${r.jobs.join(', ')}` : ''}`;
  }
  return (r.jobs ?? []).join(', ');
}

function progressCell(job: Job): Html {
  const p = job.progress;
  if (!p.bytes) return html`-`;
  return html`<progress max="${p.bytes}" value="${p.bytesDone}" aria-label="progress of job ${job.id}"></progress>`;
}

export function jobRows(jobs: Job[]): Html {
  if (jobs.length === 0) return html`<tr><td colspan="6">No jobs yet.</td></tr>`;
  return html`${jobs.map(
    (j) => html`<tr>
  <td><a href="/ui/jobs/${j.id}">${j.id}</a></td>
  <td>${j.kind}</td>
  <td>${stateLabel(j.state)}</td>
  <td class="mono">${describe(j)}</td>
  <td class="opt">${j.requestedBy}, ${when(j.createdAt)}</td>
  <td class="opt">${progressCell(j)}</td>
</tr>`,
  )}`;
}

export function jobsPage(jobs: Job[], session: Session): Html {
  return html`<h1>Jobs</h1>
${ifAllowed(
  session.token,
  'pull',
  'start pulls',
  () => html`<form method="post" action="/ui/pulls"><fieldset><legend>Pull into the archive store</legend>
${csrfField(session)}
<label for="ref">Images (registry/repository:tag, one or more, separated by spaces)</label>
<input id="ref" type="text" name="ref" required placeholder="127.0.0.1:5000/library/app:1.4">
<label for="platforms">Platforms (all, or a comma-separated list such as linux/amd64,linux/arm64)</label>
<input id="platforms" type="text" name="platforms" value="all">
<p><button type="submit">Start the pull</button></p>
</fieldset></form>`,
)}
<div class="scroll"><table>
<caption class="note">Newest first; this list updates itself.</caption>
<thead><tr><th>Job</th><th>Kind</th><th>State</th><th>What</th><th class="opt">Asked by</th><th class="opt">Progress</th></tr></thead>
<tbody data-live-jobs="/ui/jobs/stream">${jobRows(jobs)}</tbody>
</table></div>`;
}

export function jobPage(job: Job, events: JobEvent[], session: Session): Html {
  const blobs = new Map<string, { size: number; state: string }>();
  for (const e of events) {
    if (e.type !== 'blob') continue;
    const d = e.data as { digest: string; size: number; state: string };
    blobs.set(d.digest, { size: d.size, state: d.state });
  }
  const p = job.progress;
  const archives =
    (job.result as { archives?: { id: string; sha256: string }[] } | undefined)?.archives ?? [];
  const bundle =
    job.kind === 'bundle' && job.state === 'succeeded'
      ? (job.result as { id: string; file: string; sha256: string; size: number; versions: number })
      : undefined;
  return html`<h1>Job ${job.id} <span class="note">${job.kind}</span></h1>
<div data-job-events="${TERMINAL.has(job.state) ? '' : `/v1/jobs/${job.id}/events`}">
<p>State: <span data-job-state class="state-${job.state}">${job.state}</span>${job.replica ? html` <span class="note">on ${job.replica}</span>` : ''}</p>
<p class="mono">${describe(job)}</p>
<p><progress max="${p.bytes || 1}" value="${p.bytes ? p.bytesDone : TERMINAL.has(job.state) ? 1 : 0}" aria-label="progress"></progress>
<span data-progress-text>${p.bytes ? `${formatBytes(p.bytesDone)} of ${formatBytes(p.bytes)}, ${p.blobsDone} of ${p.blobs} blobs` : ''}</span></p>
<h2>Blobs</h2>
<div class="blobs" data-job-blobs>${[...blobs].map(
    ([digest, b]) => html`<span class="mono">${digest.slice(7, 19)}</span>
<progress max="1" value="${b.state === 'planned' ? 0 : 1}" aria-label="blob ${digest.slice(7, 19)}"></progress>
<span>${formatBytes(b.size)}</span>`,
  )}</div>
<p class="note">Asked by ${job.requestedBy} at ${when(job.createdAt)}${job.startedAt ? html`, started ${when(job.startedAt)}` : ''}${job.finishedAt ? html`, ended ${when(job.finishedAt)}` : ''}.</p>
${job.error ? html`<p class="flash error">${job.error.code}: ${shown(job.error.message, 2000)}</p>` : ''}
${bundle ? html`<h2>Bundle</h2><p><a class="button" href="/v1/bundles/${bundle.id.slice(7, 19)}/content" download="${bundle.file}">Download bundle ${bundle.id.slice(7, 19)} (${formatBytes(bundle.size)}, ${plural(bundle.versions, 'version')})</a> <span class="mono">sha256 ${bundle.sha256}</span></p>` : ''}
${archives.length ? html`<h2>Stored</h2><ul>${archives.map((a) => html`<li><a href="/ui/archives/${a.id}">version ${a.id}</a> <span class="mono">sha256 ${a.sha256}</span></li>`)}</ul>` : ''}
${
  TERMINAL.has(job.state)
    ? ''
    : ifAllowed(
        session.token,
        scopeOf(job.kind),
        `cancel ${job.kind} jobs`,
        () =>
          html`<form method="post" action="/ui/jobs/${job.id}/cancel">${csrfField(session)}<button type="submit" class="danger">Cancel this job</button></form>`,
      )
}
<h2>Events</h2>
<div class="log" data-job-log>${events.filter((e) => e.type !== 'progress' && e.type !== 'blob').map((e) => html`<div>${e.type} ${JSON.stringify(e.data)}</div>`)}</div>
</div>`;
}
