/**
 * The web console (issue 23), served by `stowage serve` on its own port at / and /ui/: sign in with an
 * API token (the browser then holds a signed session cookie, see api/session.ts), and the pages to
 * see and act on archives, jobs, sync jobs and storage, plus the API reference. Server-rendered HTML
 * that reads without JavaScript; every action is a form posted with the session's CSRF secret and
 * done through the same functions as the JSON API, so the token's scopes decide exactly as there.
 */
import type { Context as HonoContext, MiddlewareHandler } from 'hono';
import { deleteCookie, setCookie } from 'hono/cookie';
import { html } from 'hono/html';
import { streamSSE } from 'hono/streaming';
import { allows, findToken } from '../api/auth.js';
import { bundleView, startBundle } from '../api/bundles.js';
import { hookNamed, webhookView } from '../api/events.js';
import { cancelJob, startPull, startPush, startSync } from '../api/jobs.js';
import { SESSION_COOKIE, SESSION_TTL_MS, type Session, type Sessions } from '../api/session.js';
import type { ApiApp, AppDeps, Env } from '../api/shared.js';
import { ERROR_CODES, StowageError, toStowageError } from '../errors.js';
import type { Job, JobEvent } from '../service/job-system.js';
import { deleteVersion, versionDetails, versionSigners } from '../service/versions.js';
import { diskUsage } from '../store/usage.js';
import { archivesPage, CONSOLE_PAGE, versionPage } from './archives.js';
import { bundlesPage } from './bundles.js';
import { eventsPage } from './events.js';
import { jobPage, jobRows, jobsPage } from './jobs.js';
import { type Html, type PageOptions, page } from './layout.js';
import { apiPage, loginPage, type PullThroughCounts, storagePage, syncsPage } from './pages.js';
import { SignInLimit } from './sign-in-limit.js';
import { asset } from './static.js';

/** No script or style but the console's own files, no framing, nothing sent to another origin. */
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const securityHeaders: MiddlewareHandler<Env> = async (c, next) => {
  await next();
  c.header('Content-Security-Policy', CSP);
  c.header('X-Content-Type-Options', 'nosniff');
  c.header('X-Frame-Options', 'DENY');
  c.header('Referrer-Policy', 'same-origin');
  if (c.res.headers.get('content-type')?.startsWith('text/html')) c.header('Cache-Control', 'no-store');
};

/** Over TLS (here, or at a proxy that says so): the session cookie is then Secure. */
function overTls(c: HonoContext<Env>): boolean {
  return new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';
}

/** Where to go after signing in: a console path of this server, nothing else. */
function safeNext(next: unknown): string {
  return typeof next === 'string' && /^\/ui\/[A-Za-z0-9/_.-]*$/.test(next) ? next : '/ui/archives';
}

/** What every group of the console's routes uses. */
interface Kit {
  render: (
    c: HonoContext<Env>,
    o: PageOptions,
    body: Html,
    status?: PageStatus,
  ) => Response | Promise<Response>;
  act: (c: HonoContext<Env>, fn: () => Promise<Response>) => Promise<Response>;
  field: (c: HonoContext<Env>, name: string) => Promise<string>;
}

type PageStatus = 200 | 400 | 401 | 403 | 404 | 409 | 422 | 429 | 500 | 503;

export function mountConsole(app: ApiApp, deps: AppDeps): void {
  const sessions = deps.sessions;
  if (!sessions) return;
  app.use('/', securityHeaders);
  app.use('/ui/*', securityHeaders);
  const kit = consoleKit(deps);
  mountSignIn(app, deps, sessions, kit);
  for (const path of [
    '/ui/archives',
    '/ui/archives/*',
    '/ui/jobs',
    '/ui/jobs/*',
    '/ui/pulls',
    '/ui/syncs',
    '/ui/syncs/*',
    '/ui/storage',
    '/ui/api',
  ]) {
    app.use(path, signedIn);
  }
  mountArchives(app, deps, kit);
  mountJobs(app, deps, kit);
  mountOthers(app, deps, kit);
}

/** A page that needs a session: without one, the sign-in page (and back here after it). */
const signedIn: MiddlewareHandler<Env> = async (c, next) => {
  if (!c.get('session')) return c.redirect(`/ui/login?next=${encodeURIComponent(c.req.path)}`, 302);
  await next();
};

function consoleKit(deps: AppDeps): Kit {
  const render = (c: HonoContext<Env>, o: PageOptions, body: Html, status: PageStatus = 200) =>
    c.html(page({ ...o, session: c.get('session') }, body), status);

  /** Runs a form's action; a refusal is shown on a page that says why, with the status it maps to. */
  const act = async (c: HonoContext<Env>, fn: () => Promise<Response>) => {
    try {
      return await fn();
    } catch (e) {
      const err = toStowageError(e);
      const message = deps.redact ? deps.redact(err.message) : err.message;
      const http: number = ERROR_CODES[err.code]?.http ?? 500;
      const status = (http === 499 ? 409 : http) as PageStatus;
      return render(
        c,
        { title: 'Not done', flash: { text: `${err.code}: ${message}`, error: true } },
        html`<p>Go back and change what was sent, or go to <a href="/ui/archives">Archives</a> or <a href="/ui/jobs">Jobs</a>.</p>`,
        status,
      );
    }
  };
  const field = async (c: HonoContext<Env>, name: string): Promise<string> => {
    const v = (await c.req.parseBody())[name];
    return typeof v === 'string' ? v.trim() : '';
  };
  return { render, act, field };
}

/** The client's address as the socket gives it (requests made in process have none: one bucket). */
function clientAddress(c: HonoContext<Env>): string {
  const incoming = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming;
  return incoming?.socket?.remoteAddress ?? 'local';
}

/** The way in and out: /, sign-in, sign-out, and the console's own files. */
function mountSignIn(app: ApiApp, deps: AppDeps, sessions: Sessions, { render }: Kit): void {
  // Guessing tokens through the sign-in form is slowed per client address.
  const signIns = new SignInLimit();
  app.get('/', (c) => c.redirect(c.get('session') ? '/ui/archives' : '/ui/login', 302));
  app.get('/ui', (c) => c.redirect('/ui/archives', 302));
  app.get('/ui/assets/:name{.+}', async (c) => {
    const a = await asset(c.req.param('name'));
    if (!a) return c.text('no such file', 404);
    return c.body(new Uint8Array(a.body), 200, {
      'content-type': a.type,
      'cache-control': 'public, max-age=3600',
    });
  });

  app.get('/ui/login', (c) =>
    c.get('session')
      ? c.redirect('/ui/archives', 302)
      : render(c, { title: 'Sign in' }, loginPage(safeNext(c.req.query('next')))),
  );
  app.post('/ui/login', async (c) => {
    const origin = c.req.header('origin');
    if (origin && origin !== new URL(c.req.url).origin) {
      return render(
        c,
        { title: 'Sign in' },
        loginPage('/ui/archives', 'Sign in from this page, not from another site.'),
        403,
      );
    }
    const client = clientAddress(c);
    const wait = signIns.waitFor(client);
    if (wait > 0) {
      c.header('retry-after', String(Math.ceil(wait / 1000)));
      return render(
        c,
        { title: 'Sign in' },
        loginPage(
          '/ui/archives',
          `Too many refused tokens from this address; try again in ${Math.ceil(wait / 60_000)} min.`,
        ),
        429,
      );
    }
    const body = await c.req.parseBody();
    const next = safeNext(body.next);
    const token = typeof body.token === 'string' ? findToken(deps.tokens, body.token.trim()) : undefined;
    if (!token) {
      signIns.refused(client);
      deps.logger.warn({ client }, 'console sign-in refused');
      return render(
        c,
        { title: 'Sign in' },
        loginPage(next, 'That token is not one this service accepts.'),
        401,
      );
    }
    signIns.accepted(client);
    const s = sessions.issue(token);
    setCookie(c, SESSION_COOKIE, s.value, {
      httpOnly: true,
      sameSite: 'Strict',
      secure: overTls(c),
      path: '/',
      maxAge: Math.floor(SESSION_TTL_MS / 1000),
    });
    deps.logger.info({ token: token.name }, 'console sign-in');
    return c.redirect(next, 303);
  });
  app.post('/ui/logout', (c) => {
    deleteCookie(c, SESSION_COOKIE, { path: '/', secure: overTls(c) });
    return c.redirect('/ui/login', 303);
  });
}

/** One page of the Archives list; a cursor whose version is gone starts again from the first page. */
async function archivesListing(deps: AppDeps, q: string, after: string | undefined) {
  const query = { search: q.trim() || undefined, limit: CONSOLE_PAGE };
  const page = await deps.engine.store.page({ ...query, after }).catch(() => deps.engine.store.page(query));
  return archivesPage(page, q, after);
}

/** Archives: the list, a version, push and delete. */
function mountArchives(app: ApiApp, deps: AppDeps, { render, act, field }: Kit): void {
  app.get('/ui/archives', async (c) =>
    render(
      c,
      { title: 'Archives', active: 'archives' },
      await archivesListing(deps, c.req.query('q') ?? '', c.req.query('after')),
    ),
  );
  app.get('/ui/archives/:id', async (c) =>
    act(c, async () => {
      const v = await deps.engine.store.find(c.req.param('id'));
      const [signers, details] = await Promise.all([
        versionSigners(deps.engine, v).catch(() => new Map<string, string>()),
        // A page without them rather than none: a blob the store lost is for verify to say.
        versionDetails(deps.engine, v).catch(() => undefined),
      ]);
      return render(
        c,
        { title: `${v.repository}:${v.tag}`, active: 'archives' },
        versionPage(v, c.get('session'), signers, details),
      );
    }),
  );
  app.post('/ui/archives/:id/push', async (c) =>
    act(c, async () => {
      need(c.get('session'), 'push');
      const r = await startPush(
        deps,
        { archive: c.req.param('id'), destination: await field(c, 'destination') },
        c.get('token').name,
      );
      return c.redirect(`/ui/jobs/${r.job.id}`, 303);
    }),
  );
  app.post('/ui/archives/:id/delete', async (c) =>
    act(c, async () => {
      need(c.get('session'), 'admin');
      const v = await deleteVersion(deps.engine, c.req.param('id'));
      return render(
        c,
        {
          title: 'Archives',
          active: 'archives',
          flash: { text: `Deleted version ${v.id} of ${v.repository}:${v.tag}.` },
        },
        await archivesListing(deps, '', undefined),
      );
    }),
  );
}

/** Jobs: the live list, one job, cancel, and starting a pull. */
function mountJobs(app: ApiApp, deps: AppDeps, { render, act, field }: Kit): void {
  app.get('/ui/jobs', async (c) =>
    render(
      c,
      { title: 'Jobs', active: 'jobs' },
      jobsPage(await deps.jobs.list({ limit: 50 }), c.get('session')),
    ),
  );
  app.get('/ui/jobs/stream', (c) =>
    streamSSE(c, async (stream) => {
      let last = '';
      let open = true;
      stream.onAbort(() => {
        open = false;
      });
      // The rows as rendered, sent when they change: the same HTML with or without JavaScript.
      while (open) {
        const rows = String(await jobRows(await deps.jobs.list({ limit: 50 })));
        if (rows !== last) {
          last = rows;
          await stream.writeSSE({ event: 'rows', data: JSON.stringify({ html: rows }) });
        }
        await stream.sleep(1000);
      }
    }),
  );
  app.get('/ui/jobs/:id', async (c) =>
    act(c, async () => {
      const job = await deps.jobs.get(c.req.param('id'));
      if (!job) throw new StowageError('NOT_FOUND', `no job ${c.req.param('id')}`);
      return render(
        c,
        { title: `Job ${job.id}`, active: 'jobs' },
        jobPage(job, await eventsSoFar(deps, job), c.get('session')),
      );
    }),
  );
  app.post('/ui/jobs/:id/cancel', async (c) =>
    act(c, async () => {
      const job = await cancelJob(deps, c.req.param('id'), c.get('token'));
      return c.redirect(`/ui/jobs/${job.id}`, 303);
    }),
  );
  app.post('/ui/pulls', async (c) =>
    act(c, async () => {
      need(c.get('session'), 'pull');
      const refs = (await field(c, 'ref')).split(/\s+/).filter(Boolean);
      const p = (await field(c, 'platforms')) || 'all';
      const platforms =
        p === 'all'
          ? 'all'
          : p
              .split(',')
              .map((x) => x.trim())
              .filter(Boolean);
      const r = await startPull(deps, { refs, platforms }, c.get('token').name, c.req.raw.signal);
      return c.redirect(`/ui/jobs/${r.job.id}`, 303);
    }),
  );
}

/** Sync jobs (and running one now), storage and the API reference. */
function mountOthers(app: ApiApp, deps: AppDeps, { render, act, field }: Kit): void {
  app.get('/ui/syncs', async (c) =>
    render(
      c,
      { title: 'Sync jobs', active: 'syncs' },
      syncsPage(
        deps.engine.config.jobs,
        await deps.jobs.list({ kind: 'sync', limit: 200 }),
        c.get('session'),
      ),
    ),
  );
  app.post('/ui/syncs/run', async (c) =>
    act(c, async () => {
      need(c.get('session'), 'sync');
      const r = await startSync(deps, [await field(c, 'job')], c.get('token').name);
      return c.redirect(`/ui/jobs/${r.job.id}`, 303);
    }),
  );
  app.get('/ui/bundles', async (c) => {
    const records = await deps.engine.store.bundles().list();
    const views = await Promise.all(records.map((r) => bundleView(deps, r)));
    const jobs = deps.engine.config.jobs.map((j) => j.name);
    return render(c, { title: 'Bundles', active: 'bundles' }, bundlesPage(views, jobs, c.get('session')));
  });
  app.post('/ui/bundles', async (c) =>
    act(c, async () => {
      need(c.get('session'), 'sync');
      const since = await field(c, 'since');
      const job = await field(c, 'job');
      const versions = (await field(c, 'versions')) === 'newest' ? 'newest' : 'all';
      const body = { versions, ...(since ? { since } : {}), ...(job ? { jobs: [job] } : {}) } as const;
      const r = await startBundle(deps, body, c.get('token').name);
      return c.redirect(`/ui/jobs/${r.job.id}`, 303);
    }),
  );
  app.get('/ui/events', async (c) => {
    const bus = deps.events;
    const hooks = await Promise.all(
      bus.webhooks.map(async (h) => ({
        ...webhookView(h, undefined),
        deliveries: await bus.log.history(h.name, 20),
      })),
    );
    return render(
      c,
      { title: 'Events', active: 'events' },
      eventsPage(hooks, await bus.log.recent(50), c.get('session')),
    );
  });
  app.post('/ui/webhooks/:name/deliveries/:id/retry', async (c) =>
    act(c, async () => {
      need(c.get('session'), 'admin');
      const hook = hookNamed(deps.events, c.req.param('name'));
      const d = await deps.events.redeliver(hook.name, Number(c.req.param('id')));
      if (!d)
        throw new StowageError('NOT_FOUND', `webhook "${hook.name}" has no delivery ${c.req.param('id')}`);
      return c.redirect('/ui/events', 303);
    }),
  );
  app.get('/ui/storage', async (c) =>
    render(
      c,
      { title: 'Storage', active: 'storage' },
      storagePage(await diskUsage(deps.engine.store, deps.engine.config), pullThroughCounts(deps.engine)),
    ),
  );
  app.get('/ui/api', (c) =>
    render(
      c,
      {
        title: 'API',
        active: 'api',
        styles: ['/ui/assets/swagger/swagger-ui.css'],
        scripts: ['/ui/assets/swagger/swagger-ui-bundle.js', '/ui/assets/api.js'],
      },
      apiPage(),
    ),
  );
}

/** The scope check of a console action (the API's routes check it in their middleware). */
function need(session: Session, scope: 'pull' | 'push' | 'sync' | 'admin'): void {
  if (!allows(session.token, scope)) {
    throw new StowageError('DENIED', `token "${session.token.name}" lacks the "${scope}" scope this needs`);
  }
}

/** A job's events so far (for the page as rendered; live ones come over SSE). */
async function eventsSoFar(deps: AppDeps, job: Job): Promise<JobEvent[]> {
  const events: JobEvent[] = [];
  const stop = await deps.jobs.subscribe(
    job.id,
    0,
    (e) => events.push(e),
    () => {},
  );
  stop();
  return events;
}

/** The pull-through's counts, where [server.registry] pull-through names upstreams. */
function pullThroughCounts(engine: AppDeps['engine']): PullThroughCounts | undefined {
  const upstreams = engine.config.server.registry?.['pull-through'] ?? [];
  if (!upstreams.length) return undefined;
  const c = engine.counters;
  return { upstreams, hits: c.pullThroughHits, misses: c.pullThroughMisses, stale: c.pullThroughStale };
}
