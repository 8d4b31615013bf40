/**
 * The console's page shell and the small pieces every page uses. Pages are rendered on the server with
 * hono/html (every interpolated value escaped), so they read without JavaScript; console.js only adds
 * live updates. No inline script or style anywhere: the Content-Security-Policy forbids both.
 */
import { html } from 'hono/html';
import type { HtmlEscapedString } from 'hono/utils/html';
import type { ApiToken } from '../api/auth.js';
import { allows } from '../api/auth.js';
import type { Session } from '../api/session.js';
import type { ApiScope } from '../config/stowage.js';
import { formatBytes as figureBytes } from '../core/figures.js';

export type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

export const NAV = [
  ['archives', 'Archives', '/ui/archives'],
  ['jobs', 'Jobs', '/ui/jobs'],
  ['syncs', 'Sync jobs', '/ui/syncs'],
  ['bundles', 'Bundles', '/ui/bundles'],
  ['events', 'Events', '/ui/events'],
  ['storage', 'Storage', '/ui/storage'],
  ['api', 'API', '/ui/api'],
] as const;

export interface PageOptions {
  title: string;
  active?: (typeof NAV)[number][0] | undefined;
  /** The signed-in session (none: the sign-in page). */
  session?: Session | undefined;
  flash?: { text: string; error?: boolean } | undefined;
  /** Extra stylesheets and scripts (the API page's Swagger UI). */
  styles?: string[];
  scripts?: string[];
}

export function page(o: PageOptions, body: Html): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${o.title} &middot; stowage</title>
<link rel="icon" href="/ui/assets/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/ui/assets/console.css">
${(o.styles ?? []).map((s) => html`<link rel="stylesheet" href="${s}">`)}
<script type="module" src="/ui/assets/console.js"></script>
${(o.scripts ?? []).map((s) => html`<script src="${s}" defer></script>`)}
</head>
<body>
<header>
  <a class="brand" href="/ui/archives">stowage</a>
  ${o.session ? nav(o.active) : ''}
  ${o.session ? who(o.session) : ''}
</header>
<main id="main">
${o.flash ? html`<p class="flash${o.flash.error ? ' error' : ''}" role="status">${o.flash.text}</p>` : ''}
${body}
</main>
</body>
</html>`;
}

function nav(active: PageOptions['active']): Html {
  return html`<nav aria-label="Sections">${NAV.map(
    ([key, label, href]) =>
      html`<a href="${href}"${key === active ? html` aria-current="page"` : ''}>${label}</a>`,
  )}</nav>`;
}

function who(session: Session): Html {
  return html`<div class="who"><span>Signed in as <strong>${session.token.name}</strong> (${session.token.scopes.join(', ')})</span>
<form class="inline" method="post" action="/ui/logout">${csrfField(session)}<button class="secondary" type="submit">Sign out</button></form></div>`;
}

/** The hidden field every form that changes something carries. */
export function csrfField(session: Session): Html {
  return html`<input type="hidden" name="_csrf" value="${session.csrf}">`;
}

/** A form that needs a scope the token lacks is replaced by a line saying so. */
export function ifAllowed(token: ApiToken, scope: ApiScope, what: string, form: () => Html): Html {
  if (allows(token, scope)) return form();
  return html`<p class="note">Your token has no "${scope}" scope, so you cannot ${what} here.</p>`;
}

export function formatBytes(n: number | undefined): string {
  return n === undefined ? '-' : figureBytes(n);
}

/** An ISO time as "2026-11-29 05:01 UTC" (what people read), the full value in the title. */
export function when(iso: string | undefined): Html {
  if (!iso) return html`-`;
  return html`<time datetime="${iso}" title="${iso}">${iso.slice(0, 16).replace('T', ' ')} UTC</time>`;
}

export function stateLabel(state: string): Html {
  return html`<span class="state-${state}">${state}</span>`;
}
