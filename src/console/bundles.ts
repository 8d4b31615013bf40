/** The console's Bundles page: the history of bundles made and imported, their downloads, a new one. */
import { html } from 'hono/html';
import type { Session } from '../api/session.js';
import { plural } from '../core/figures.js';
import type { BundleRecord } from '../store/bundle-history.js';
import { csrfField, formatBytes, type Html, ifAllowed, when } from './layout.js';

const short = (id: string) => id.slice(7, 19);

export function bundlesPage(
  records: (BundleRecord & { links: Record<string, string> })[],
  jobs: string[],
  session: Session,
): Html {
  const created = records.filter((r) => r.kind === 'created');
  return html`<h1>Bundles</h1>
<p class="note">Air-gap bundles: each carries only the blobs its base bundles did not. Import them on the far side, oldest first, with <code>stowage bundle import</code>.</p>
${ifAllowed(
  session.token,
  'sync',
  'make bundles',
  () => html`<form method="post" action="/ui/bundles" class="stack">${csrfField(session)}
<label>Since <select name="since"><option value="">nothing: a full bundle</option>${[...created].reverse().map((r) => html`<option value="${short(r.id)}">bundle ${short(r.id)} (${r.at.slice(0, 10)}, ${plural(r.versions, 'version')})</option>`)}</select></label>
<label>Versions <select name="versions"><option value="all">every version since the base</option><option value="newest">the newest of each tag</option></select></label>
${jobs.length ? html`<label>Sync job <select name="job"><option value="">any repository</option>${jobs.map((j) => html`<option>${j}</option>`)}</select></label>` : ''}
<button type="submit">Make the bundle</button></form>`,
)}
${
  records.length
    ? html`<div class="scroll"><table><thead><tr><th>Bundle</th><th>Kind</th><th>Recorded</th><th>Versions</th><th>Inside</th><th class="opt">Base</th><th>File</th></tr></thead><tbody data-bundles>
${[...records]
  .reverse()
  .map(
    (r) =>
      html`<tr><td class="mono">${short(r.id)}</td><td>${r.kind}</td><td>${when(r.at)}</td><td>${r.versions}</td><td>${plural(r.blobs, 'blob')}, ${formatBytes(r.bytes)}</td><td class="opt mono">${r.bases.map(short).join(', ') || 'none (full)'}</td><td>${
        r.links.content
          ? html`<a class="button" href="${r.links.content}" download="${r.file}">Download ${formatBytes(r.size)}</a>`
          : html`<span class="mono">${r.file}</span>`
      }</td></tr>`,
  )}
</tbody></table></div>`
    : html`<p>No bundle has been made from this store or imported into it yet.</p>`
}`;
}
