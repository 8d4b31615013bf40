/**
 * The Archives pages: repositories, their tags and every version each tag has pointed to (filtered by
 * a search), and one version: what it is, its downloads, the `sha256sum -c` line, push and delete.
 */
import { html } from 'hono/html';
import type { Session } from '../api/session.js';
import { shown } from '../core/printable.js';
import type { VersionDetails } from '../service/versions.js';
import type { StoredVersion, VersionPage } from '../store/store.js';
import { csrfField, formatBytes, type Html, ifAllowed, when } from './layout.js';

/** Versions grouped: repository, then tag, newest version first. */
function grouped(versions: StoredVersion[]): Map<string, Map<string, StoredVersion[]>> {
  const repos = new Map<string, Map<string, StoredVersion[]>>();
  for (const v of [...versions].reverse()) {
    let tags = repos.get(v.repository);
    if (!tags) {
      tags = new Map<string, StoredVersion[]>();
      repos.set(v.repository, tags);
    }
    const list = tags.get(v.tag);
    if (list) list.push(v);
    else tags.set(v.tag, [v]);
  }
  return new Map([...repos].sort(([a], [b]) => a.localeCompare(b)));
}

/** How many versions one page of the Archives list shows. */
export const CONSOLE_PAGE = 200;

/** One page of the store's versions (the store reads no further than the page), grouped for reading. */
export function archivesPage(page: VersionPage, q: string, after: string | undefined): Html {
  const needle = q.trim();
  const shown = page.versions.map((x) => x.version);
  const latest = new Set(page.versions.filter((x) => x.latest).map((x) => x.version.id));
  const repos = grouped(shown);
  const more = (cursor: string) =>
    `/ui/archives?${new URLSearchParams({ ...(needle ? { q: needle } : {}), after: cursor })}`;
  return html`<h1>Archives</h1>
<form method="get" action="/ui/archives" role="search">
  <label for="q">Search repositories, tags, ids and digests</label>
  <input id="q" type="search" name="q" value="${q}" placeholder="e.g. nginx:1.27 or sha256:4f&hellip;">
  <button type="submit">Search</button>
</form>
<p class="note">${shown.length} versions of ${new Set(shown.map((v) => `${v.repository}:${v.tag}`)).size} tags in ${repos.size} repositories${needle ? ' match' : ''}${after || page.next ? ' on this page' : ''}.</p>
${[...repos].map(
  ([repo, tags]) => html`<section>
<h2>${repo}</h2>
<div class="scroll"><table>
<thead><tr><th>Tag</th><th>Version</th><th>Digest</th><th class="opt">Platforms</th><th>Taken</th><th class="opt">Size</th></tr></thead>
<tbody>${[...tags].flatMap(([tag, list]) =>
    list.map(
      (v) => html`<tr>
  <td>${latest.has(v.id) ? html`<strong>${tag}</strong>` : html`<span class="note">${tag} (earlier)</span>`}</td>
  <td><a href="/ui/archives/${v.id}">${v.id}</a>${v.pulledThrough ? html` <span class="note" title="came in through the registry's pull-through: only what clients asked for may be held">pulled through</span>` : ''}</td>
  <td class="mono">${v.descriptor.digest.slice(0, 19)}&hellip;</td>
  <td class="opt">${v.platforms.join(', ') || '-'}</td>
  <td>${when(v.taken)}</td>
  <td class="opt">${formatBytes(v.archive?.size)}</td>
</tr>`,
    ),
  )}</tbody>
</table></div>
</section>`,
)}
<nav aria-label="Pages">${after ? html`<a href="/ui/archives${needle ? `?${new URLSearchParams({ q: needle })}` : ''}">First page</a> ` : ''}${page.next ? html`<a href="${more(page.next)}" rel="next">Next page</a>` : ''}</nav>`;
}

/** Key-value pairs from the image (labels, annotations): each shown escaped, printable and cut. */
function pairs(kv: Record<string, string>): Html | string {
  const entries = Object.entries(kv).sort(([a], [b]) => a.localeCompare(b));
  if (entries.length === 0) return '-';
  return html`<dl class="pairs">${entries.map(([k, val]) => html`<dt class="mono">${shown(k, 120)}</dt><dd>${shown(val, 300)}</dd>`)}</dl>`;
}

function labelsRow(details: VersionDetails | undefined): Html | string {
  if (!details) return '';
  const single = details.labels.length === 1 && details.labels[0]!.platform === '';
  return html`<tr><th scope="row">Annotations</th><td>${pairs(details.annotations)}</td></tr>
<tr><th scope="row">Labels</th><td>${
    single
      ? pairs(details.labels[0]!.labels)
      : details.labels.map((l) => html`<p class="note">${l.platform}</p>${pairs(l.labels)}`)
  }</td></tr>`;
}

export function versionPage(
  v: StoredVersion,
  session: Session,
  signers: Map<string, string>,
  details?: VersionDetails,
): Html {
  const token = session.token;
  const base = `${v.repository.replace(/[^A-Za-z0-9._-]+/g, '_')}_${v.tag}`;
  const sumLine = v.archive ? `${v.archive.sha256}  ${base}.tar` : undefined;
  return html`<h1>${v.repository}:${v.tag} <span class="note">version ${v.id}</span></h1>
<div class="scroll"><table>
<tbody>
<tr><th scope="row">Digest</th><td class="mono">${v.descriptor.digest}</td></tr>
${v.sourceDigest && v.sourceDigest !== v.descriptor.digest ? html`<tr><th scope="row">Digest at the source</th><td class="mono">${v.sourceDigest}</td></tr>` : ''}
<tr><th scope="row">Media type</th><td class="mono">${v.descriptor.mediaType}</td></tr>
<tr><th scope="row">Platforms</th><td>${v.platforms.join(', ') || '-'}</td></tr>
<tr><th scope="row">Taken</th><td>${when(v.taken)}</td></tr>
<tr><th scope="row">Source</th><td>${shown(v.source, 300)}</td></tr>
${labelsRow(details)}
<tr><th scope="row">oci-archive</th><td>${v.archive ? html`${formatBytes(v.archive.size)}, sha256 <span class="mono">${v.archive.sha256}</span>` : 'checksum computed at its first download'}</td></tr>
<tr><th scope="row">Attached</th><td>${
    (v.referrers ?? []).length === 0
      ? 'no signatures, attestations or SBOMs'
      : html`<ul>${(v.referrers ?? []).map(
          (r) =>
            html`<li><span class="mono">${r.descriptor.digest.slice(0, 19)}&hellip;</span> ${shown(r.descriptor.artifactType ?? r.tag ?? r.descriptor.mediaType, 200)}${signers.has(r.descriptor.digest) ? html` (verified with ${signers.get(r.descriptor.digest)})` : ''}</li>`,
        )}</ul>`
  }</td></tr>
</tbody></table></div>

<h2>Download</h2>
<div class="row-actions">
  <a class="button" href="/v1/archives/${v.id}/content" download="${base}.tar">oci-archive</a>
  <form method="get" action="/v1/archives/${v.id}/content" class="row-actions">
    <input type="hidden" name="format" value="docker-archive">
    <div><label for="platform">docker-archive for</label>
    <select id="platform" name="platform">${(v.platforms.length ? v.platforms : ['linux/amd64']).map(
      (p) => html`<option value="${p}">${p}</option>`,
    )}</select></div>
    <button type="submit" class="secondary">docker-archive</button>
  </form>
</div>
${
  sumLine
    ? html`<p>Check the oci-archive after downloading it:</p>
<div class="copy"><code id="sumline">echo '${sumLine}' | sha256sum -c</code> <button type="button" class="secondary" data-copy="#sumline">Copy</button></div>`
    : ''
}

<h2>Push to a registry</h2>
${ifAllowed(
  token,
  'push',
  'push versions',
  () => html`<form method="post" action="/ui/archives/${v.id}/push">${csrfField(session)}
  <label for="destination">Destination (registry/repository[:tag]; the tag defaults to ${v.tag})</label>
  <input id="destination" type="text" name="destination" required placeholder="registry.example:5000/mirror/app:${v.tag}">
  <button type="submit">Push</button>
</form>`,
)}

<h2>Delete</h2>
${ifAllowed(
  token,
  'admin',
  'delete versions',
  () => html`<form method="post" action="/ui/archives/${v.id}/delete">${csrfField(session)}
  <p class="note">Removes this version and the blobs no other version uses. It cannot be undone.</p>
  <button type="submit" class="danger">Delete version ${v.id}</button>
</form>`,
)}`;
}
