/**
 * Wiring for `stowage serve`: configuration, the store, the engine's context, the job manager with
 * its history, cron schedules of the sync jobs, the HTTP server, and a graceful stop on SIGTERM (no
 * new requests or jobs, running jobs aborted and cleaned up, the history written).
 */

import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { type ServerType, serve as serveHttp } from '@hono/node-server';
import pino, { type Logger } from 'pino';
import { createApp } from './api/app.js';
import { type ApiToken, newToken, tokenHash } from './api/auth.js';
import { Sessions } from './api/session.js';
import type { ApiApp } from './api/shared.js';
import { databasePassword, replicaName } from './config/replicas.js';
import {
  blobLocationsPath,
  DEFAULT_LISTEN,
  durationMs,
  loadStowageConfig,
  parseSize,
  type StowageConfig,
} from './config/stowage.js';
import { mountConsole } from './console/app.js';
import { writeFileAtomic } from './core/atomic.js';
import { needPackages, PG_JOBS_PACKAGES } from './core/optional.js';
import { sweepLeftovers, tmpPid } from './core/partials.js';
import { mountRegistry } from './distribution/mount.js';
import { StowageError } from './errors.js';
import { EventBus } from './events/bus.js';
import type { EventLog } from './events/log.js';
import { MemoryEventLog } from './events/memory-log.js';
import { resolveWebhooks, type Webhook } from './events/webhooks.js';
import { Context } from './registry/context.js';
import { type BundleRequest, runBundle } from './service/bundles.js';
import { type Engine, newCounters, outboundGuard, pathRedactor, webhookAllowed } from './service/engine.js';
import { JobManager } from './service/in-process-jobs.js';
import { type Job, type JobKind, type JobSystem, type Runner, TERMINAL } from './service/job-system.js';
import { createMetrics, type Metrics } from './service/metrics.js';
import { runPull, runPush, runSync } from './service/operations.js';
import { openStore } from './store/open.js';
import { LocalRenditions } from './store/renditions.js';
import { diskUsage } from './store/usage.js';

export interface ServeOptions {
  config?: string | undefined;
  store?: string | undefined;
  state?: string | undefined;
  listen?: string | undefined;
  registriesConf?: string | undefined;
  authfile?: string | undefined;
  tlsVerify?: boolean | undefined;
  certDir?: string | undefined;
  logLevel?: string | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  version: string;
}

export interface RunningServer {
  url: string;
  /** The file holding the generated admin token, when no tokens are configured. */
  tokenFile?: string | undefined;
  logger: Logger;
  close(): Promise<void>;
}

/** Where job history and caches live: $STOWAGE_STATE, else ~/.local/share/stowage/state. */
export function defaultStatePath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.STOWAGE_STATE) return env.STOWAGE_STATE;
  return join(env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local/share'), 'stowage/state');
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `--listen "${listen}": give HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080`,
    );
  }
  return { host: (m[1] ?? m[2])!, port };
}

/** The configured tokens, or one admin token kept in STATE/api-token (made on first start, mode 0600). */
async function loadTokens(
  config: StowageConfig,
  state: string,
): Promise<{ tokens: ApiToken[]; tokenFile?: string }> {
  if (config.server.token?.length) return { tokens: config.server.token };
  const tokenFile = join(state, 'api-token');
  let token = (await readFile(tokenFile, 'utf8').catch(() => '')).trim();
  if (!token) {
    token = newToken();
    await writeFileAtomic(tokenFile, `${token}\n`, 0o600);
  } else {
    const mode = (await stat(tokenFile)).mode & 0o077;
    if (mode) {
      throw new StowageError(
        'INVALID_CONFIG',
        `${tokenFile} is readable by other users; chmod 600 it (or delete it for a new token)`,
      );
    }
  }
  return { tokens: [{ name: 'local-admin', sha256: tokenHash(token), scopes: ['admin'] }], tokenFile };
}

export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const env = opts.env ?? process.env;
  const logger = pino({
    level: opts.logLevel ?? env.STOWAGE_LOG_LEVEL ?? 'info',
    base: { service: 'stowage' },
    // "level":"info" and an ISO time: what log pipelines read without a pino-specific mapping.
    formatters: { level: (label) => ({ level: label }) },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
  const loaded = await loadStowageConfig(opts.config, env);
  const config: StowageConfig = opts.store ? { ...loaded, storePath: opts.store } : loaded;
  // A webhook that names no event type, or a host outside the allow-list, stops the start.
  const hooks = await resolveWebhooks(config.server, (host) => webhookAllowed(config.server, host));
  const state = opts.state ?? config.server.state ?? defaultStatePath(env);
  await mkdir(state, { recursive: true, mode: 0o700 });
  const { host, port } = parseListen(opts.listen ?? config.server.listen ?? DEFAULT_LISTEN);
  const { tokens, tokenFile } = await loadTokens(config, state);
  const maxUpload = parseSize(config.server['max-upload'] ?? '20GiB');

  const ctx = await Context.create({
    limits: config.limits,
    registriesConf: opts.registriesConf,
    authFile: opts.authfile,
    tlsVerify: opts.tlsVerify,
    certDir: opts.certDir,
    guard: outboundGuard(config.server),
    locationsDir: blobLocationsPath(env),
    env,
  });
  const replica = config.s3 ? replicaName(env, hostname(), process.pid) : undefined;
  const store = await openStore(config, { sweep: true, env, replica });
  await sweepServiceLeftovers(join(state, 'tmp'), join(state, 'cache'));
  const engine: Engine = {
    ctx,
    store,
    config,
    tmpDir: join(state, 'tmp'),
    cacheDir: join(state, 'cache'),
    renditions: store.renditions?.(join(state, 'tmp')) ?? new LocalRenditions(join(state, 'cache')),
    counters: newCounters(),
  };
  // A policy.json that does not parse stops the start, naming the file, rather than every pull.
  const policy = await ctx.policy();
  const redact = pathRedactor({
    store: config.storePath,
    state,
    policy: policy?.path,
    configFiles: [...ctx.conf.sources, ...(config.path ? [config.path] : [])],
  });
  engine.redact = redact;
  let events: EventBus;
  try {
    events = await openEvents({ config, state, env, store: store.path, replica, hooks, logger });
  } catch (e) {
    await store.close?.();
    await ctx.close();
    throw e;
  }
  engine.events = events;
  events.start();
  const runners: Record<JobKind, Runner> = {
    pull: (run) => runPull(engine, run.job.request as { refs: string[]; platforms?: 'all' | string[] }, run),
    push: (run) => runPush(engine, run.job.request as { archive: string; destination: string }, run),
    // A sync with failed tags fails the job and keeps its report as the result.
    sync: (run) => runSync(engine, (run.job.request as { jobs?: string[] }).jobs, run),
    bundle: (run) => runBundle(engine, run.job.request as BundleRequest, run),
  };
  let metrics: Metrics | undefined;
  const onChange = (job: Job) => {
    if (job.state === 'failed') logger.warn({ job: job.id, kind: job.kind, error: job.error }, 'job failed');
    else logger.info({ job: job.id, kind: job.kind, state: job.state }, 'job');
    metrics?.observeJob(job);
    // Where the job's blobs went is kept as each job ends, not only at shutdown (a crash keeps it too).
    if (TERMINAL.has(job.state)) void ctx.blobLocations.save();
  };
  let jobs: JobSystem;
  try {
    jobs = await openJobs({
      config,
      state,
      env,
      store: store.path,
      replica,
      runners,
      onChange,
      redact,
      logger,
    });
  } catch (e) {
    await events.close();
    await store.close?.();
    await ctx.close();
    throw e;
  }
  metrics = createMetrics(engine, jobs, {
    replica,
    version: opts.version,
    usage: () => diskUsage(store, config),
    deliveries: () => events.attemptCounts(),
  });

  // Schedules: each job with `schedule` queues a sync of itself (a run still going is shared); with
  // replicas sharing PostgreSQL, once per slot across them all.
  const schedules = config.jobs.filter((j) => j.schedule).map((j) => ({ job: j.name, cron: j.schedule! }));
  await jobs.schedule(schedules, (job, e) =>
    logger.warn({ job, err: e.message }, 'scheduled sync not queued'),
  );

  let ready = false;
  const key = await sessionKey(config, state);
  const sessions = new Sessions(key);
  const deps = {
    engine,
    events,
    jobs,
    metrics,
    tokens,
    logger,
    version: opts.version,
    replica,
    ready: () => ready,
    maxUpload,
    redact,
    sessions,
  };
  const app = createApp(deps);
  // The store as a registry, on the same listener: tokens signed with a key of this deployment.
  mountRegistry(app, { engine, config, tokens, key, logger, redact });
  mountConsole(app, deps);
  const server = await listenOn(app.fetch, host, port);
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  ready = true;
  logger.info(
    {
      url,
      store: config.s3 ? store.path : config.storePath,
      mode: { store: config.s3 ? 's3' : 'local', jobs: jobs.mode, ...(replica ? { replica } : {}) },
      state,
      config: config.path ?? null,
      jobs: config.jobs.length,
      schedules: schedules.length,
      webhooks: hooks.length,
      ...(tokenFile ? { tokenFile } : { tokens: tokens.length }),
    },
    'listening',
  );

  const grace = config.server['shutdown-grace'] ? durationMs(config.server['shutdown-grace']) : 0;
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      ready = false;
      if (grace > 0) {
        // /readyz answers 503 meanwhile, and everything else is still served.
        logger.info({ graceMs: grace }, 'stopping: not ready; still serving during shutdown-grace');
        await new Promise((r) => setTimeout(r, grace));
      }
      logger.info('shutting down: no new requests; running jobs are aborted and cleaned up');
      const closed = new Promise<void>((r) => server.close(() => r()));
      await jobs.shutdown();
      // Deliveries in flight are stopped and stay pending: the next start sends them.
      await events.close();
      // Open event streams and downloads are cut after the jobs have ended.
      (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      await closed;
      metrics.close();
      await ctx.close();
      await store.close?.();
      logger.info('stopped');
      logger.flush?.();
    })();
    return closing;
  };
  return { url, tokenFile, logger, close };
}

/** Starts the HTTP server; a taken or forbidden address is an error that names it. */
function listenOn(fetch: ApiApp['fetch'], host: string, port: number): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const s = serveHttp({ fetch, hostname: host, port }, () => resolve(s));
    // Idle keep-alive connections outlive the proxies' and clients' own (load balancers keep theirs
    // 60 s): with Node's 5 s default, the server may close a connection just as a client reuses it,
    // and that request fails ("other side closed"), as the replica tests saw after a 5 s pause.
    const http = s as unknown as { keepAliveTimeout: number; headersTimeout: number };
    http.keepAliveTimeout = 65_000;
    http.headersTimeout = 66_000;
    s.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new StowageError(
          'IO',
          e.code === 'EADDRINUSE'
            ? `cannot listen on ${host}:${port}: the address is in use; choose another with --listen`
            : `cannot listen on ${host}:${port}: ${e.message}`,
        ),
      ),
    );
  });
}

/**
 * The key console sessions are signed with: [server] session-key-file (replicas share one, from a
 * secret, so a session made by one is good on all), else STATE/session-key, made on first start.
 */
async function sessionKey(config: StowageConfig, state: string): Promise<Buffer> {
  const file = config.server['session-key-file'];
  if (file) {
    const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new StowageError(
        'INVALID_CONFIG',
        `[server] session-key-file ${file}: cannot read it (${e.code})`,
      );
    });
    if (text.trim().length < 32) {
      throw new StowageError(
        'INVALID_CONFIG',
        `[server] session-key-file ${file}: needs at least 32 characters of random text (openssl rand -hex 32 makes one)`,
      );
    }
    return Buffer.from(text.trim());
  }
  const path = join(state, 'session-key');
  const have = (await readFile(path, 'utf8').catch(() => '')).trim();
  if (have.length >= 64) return Buffer.from(have);
  const made = randomBytes(32).toString('hex');
  await writeFileAtomic(path, `${made}\n`, 0o600);
  return Buffer.from(made);
}

/**
 * The job system: in this process with its history in STATE/jobs.json, or, for replicas sharing the
 * store on S3, in PostgreSQL (pg-boss, which needs Node 22.12+; loaded only then).
 */
async function openJobs(o: {
  config: StowageConfig;
  state: string;
  env: NodeJS.ProcessEnv;
  store: string;
  replica: string | undefined;
  runners: Record<JobKind, Runner>;
  onChange: (job: Job) => void;
  redact: (text: string) => string;
  logger: Logger;
}): Promise<JobSystem> {
  const server = o.config.server;
  const common = {
    concurrency: server['concurrent-jobs'] ?? 2,
    maxQueued: server['max-queued'] ?? 100,
    keep: server['keep-jobs'] ?? 1000,
    runners: o.runners,
    onChange: o.onChange,
    redact: o.redact,
  };
  if (o.config.s3 && server.database) {
    needPackages(PG_JOBS_PACKAGES, 'jobs in PostgreSQL ([server] database)');
    const { PgJobs } = await import('./service/pg-jobs.js');
    return PgJobs.open({
      ...common,
      url: server.database,
      password: await databasePassword(server, o.env),
      store: o.store,
      replica: o.replica!,
      heartbeatSeconds: server['job-heartbeat'] ? durationMs(server['job-heartbeat']) / 1000 : undefined,
      onWarning: (message) => o.logger.warn({ err: o.redact(message) }, 'job system'),
    });
  }
  const jobs = new JobManager({ ...common, stateFile: join(o.state, 'jobs.json') });
  await jobs.load();
  return jobs;
}

/**
 * The events' log: in PostgreSQL with the jobs for replicas (each event delivered once, by one of them),
 * else in this process, kept in STATE/events.json.
 */
async function openEvents(o: {
  config: StowageConfig;
  state: string;
  env: NodeJS.ProcessEnv;
  store: string;
  replica: string | undefined;
  hooks: Webhook[];
  logger: Logger;
}): Promise<EventBus> {
  const server = o.config.server;
  const keep = server['keep-deliveries'] ?? 100;
  let log: EventLog;
  if (o.config.s3 && server.database) {
    const { PgEventLog } = await import('./events/pg-log.js');
    log = await PgEventLog.open({
      url: server.database,
      password: await databasePassword(server, o.env),
      store: o.store,
      replica: o.replica!,
      keep,
    });
  } else {
    const memory = new MemoryEventLog({
      file: join(o.state, 'events.json'),
      keep,
      webhooks: o.hooks.map((h) => h.name),
    });
    await memory.load();
    log = memory;
  }
  return new EventBus({ log, hooks: o.hooks, warn: (message, fields) => o.logger.warn(fields, message) });
}

/**
 * Uploads spooled and docker-archives being made when an earlier service was killed: removed at start
 * (only those whose process is gone, so a second service sharing the state loses nothing).
 */
async function sweepServiceLeftovers(tmpDir: string, cacheDir: string): Promise<void> {
  await sweepLeftovers(tmpDir, tmpPid);
  const versions = await readdir(cacheDir).catch(() => [] as string[]);
  for (const v of versions) await sweepLeftovers(join(cacheDir, v));
}
