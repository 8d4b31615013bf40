/**
 * The console's Events page: the events the service published, newest first, and each webhook with its
 * newest deliveries (state, attempts, the receiver's last answer) and a button to send one again.
 */
import { html } from 'hono/html';
import type { Session } from '../api/session.js';
import type { Delivery, LoggedEvent } from '../events/log.js';
import { csrfField, type Html, stateLabel, when } from './layout.js';

export interface WebhookRows {
  name: string;
  url: string;
  events: string[];
  deliveries: Delivery[];
}

export function eventsPage(hooks: WebhookRows[], recent: LoggedEvent[], session: Session): Html {
  const admin = session.token.scopes.includes('admin');
  return html`<h1>Events</h1>
<p class="note">What the service did, as CloudEvents: sent to the webhooks of <code>[[server.webhook]]</code>, listed at <code>GET /v1/events</code>, followed with <code>stowage events --follow</code>.</p>
<h2>Webhooks</h2>
${hooks.length ? hooks.map((h) => webhook(h, admin, session)) : html`<p>No webhook is configured.</p>`}
<h2>Recent events</h2>
${
  recent.length
    ? html`<div class="scroll"><table><thead><tr><th>Seq</th><th>Time</th><th>Type</th><th>Subject</th><th class="opt">Source</th></tr></thead><tbody data-events>
${[...recent].reverse().map((e) => html`<tr><td>${e.seq}</td><td>${when(e.event.time)}</td><td class="mono">${e.event.type.replace(/^io\.stowage\./, '')}</td><td class="mono">${e.event.subject ?? '-'}</td><td class="opt mono">${e.event.source}</td></tr>`)}
</tbody></table></div>`
    : html`<p>No event yet.</p>`
}`;
}

function webhook(h: WebhookRows, admin: boolean, session: Session): Html {
  return html`<section data-webhook="${h.name}"><h3>${h.name} <span class="note mono">${h.url}</span></h3>
<p class="note">Takes ${h.events.join(', ')}.</p>
${
  h.deliveries.length
    ? html`<div class="scroll"><table><thead><tr><th>Delivery</th><th>Event</th><th>Subject</th><th>State</th><th>Attempts</th><th>Answer</th><th class="opt">Updated</th><th></th></tr></thead><tbody>
${h.deliveries.map(
  (d) =>
    html`<tr><td>${d.id}</td><td class="mono">${d.type.replace(/^io\.stowage\./, '')}</td><td class="mono">${d.subject ?? '-'}</td><td>${stateLabel(d.state)}</td><td>${d.attempts}</td><td>${d.status ?? '-'}${d.error ? html` <span class="note">${d.error}</span>` : ''}${d.nextAt ? html` <span class="note">next ${when(d.nextAt)}</span>` : ''}</td><td class="opt">${when(d.updatedAt)}</td><td>${
      admin && d.state !== 'pending'
        ? html`<form method="post" action="/ui/webhooks/${h.name}/deliveries/${d.id}/retry">${csrfField(session)}<button type="submit">Send again</button></form>`
        : ''
    }</td></tr>`,
)}
</tbody></table></div>`
    : html`<p>Nothing delivered yet.</p>`
}</section>`;
}
