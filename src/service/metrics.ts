/**
 * Prometheus metrics (prom-client, a registry of the service's own, no process-global state), named as
 * Prometheus asks (unit last, `_total` on counters): bytes pulled and pushed, blobs fetched and blobs
 * the store already held, finished jobs by kind and outcome with their duration, the last successful
 * run of each sync job, the store's logical and stored bytes, jobs kept in the history by state,
 * registry requests by host, method and status with their latency, the API's own requests, webhook
 * delivery attempts, build info,
 * and prom-client's process and Node metrics.
 */

import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { REGISTRY_REQUESTS_CHANNEL, type RegistryRequestRecord } from '../registry/client.js';
import type { Engine } from './engine.js';
import { type Job, type JobSystem, TERMINAL } from './job-system.js';

export interface Metrics {
  registry: Registry;
  observeApi(method: string, route: string, status: number, seconds: number): void;
  /** A job that changed state: a finished one is counted, timed and, for a sync, its jobs' success noted. */
  observeJob(job: Job): void;
  close(): void;
}

export interface MetricsOptions {
  replica?: string | undefined;
  version?: string | undefined;
  /** Webhook delivery attempts made by this process. */
  deliveries?: (() => { webhook: string; outcome: string; count: number }[]) | undefined;
  /** The store's logical and stored bytes (read at most once a minute). */
  usage?: (() => Promise<{ logicalBytes: number; diskBytes: number }>) | undefined;
}

/** How long the store's byte counts are reused: reading them walks every version. */
const USAGE_TTL_MS = 60_000;

export function createMetrics(engine: Engine, jobs: JobSystem, opts: MetricsOptions = {}): Metrics {
  const registry = new Registry();
  // Replicas sharing a store are told apart by this label on every series.
  if (opts.replica) registry.setDefaultLabels({ replica: opts.replica });
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'stowage_build_info',
    help: 'Always 1; the version of stowage and of Node as labels',
    labelNames: ['version', 'node'],
    registers: [registry],
  }).set({ version: opts.version ?? 'unknown', node: process.versions.node }, 1);
  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        // Counters read from the engine's running totals.
        this.reset();
        this.inc(read());
      },
    });
  counter(
    'stowage_pulled_bytes_total',
    'Blob bytes fetched from registries',
    () => engine.counters.bytesPulled,
  );
  counter(
    'stowage_pushed_bytes_total',
    'Blob bytes uploaded to registries',
    () => engine.counters.bytesPushed,
  );
  counter(
    'stowage_store_deduplicated_blobs_total',
    'Blobs a pull or sync needed that the store already held (not fetched again)',
    () => engine.counters.blobCacheHits,
  );
  counter(
    'stowage_store_fetched_blobs_total',
    'Blobs fetched from registries into the store',
    () => engine.counters.blobCacheMisses,
  );
  new Counter({
    name: 'stowage_registry_pull_through_total',
    help: "The registry's pull-through: answered from the store (hit), fetched upstream (miss), or served from the store while the upstream could not be reached (stale)",
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ result: 'hit' }, engine.counters.pullThroughHits);
      this.inc({ result: 'miss' }, engine.counters.pullThroughMisses);
      this.inc({ result: 'stale' }, engine.counters.pullThroughStale);
    },
  });
  new Counter({
    name: 'stowage_webhook_attempts_total',
    help: 'Webhook delivery attempts by this replica: delivered (2xx), retried (to be tried again) or failed (given up after retry-for)',
    labelNames: ['webhook', 'outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (const d of opts.deliveries?.() ?? [])
        this.inc({ webhook: d.webhook, outcome: d.outcome }, d.count);
    },
  });
  const observeJob = jobMetrics(registry);
  let usage: { at: number; value: Promise<{ logicalBytes: number; diskBytes: number }> } | undefined;
  const readUsage = () => {
    if (!opts.usage) return undefined;
    if (!usage || Date.now() - usage.at > USAGE_TTL_MS) {
      const value = opts.usage();
      value.catch(() => {
        usage = undefined;
      });
      usage = { at: Date.now(), value };
    }
    return usage.value;
  };
  const usageGauge = (name: string, help: string, pick: 'logicalBytes' | 'diskBytes') =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        const u = await readUsage()?.catch(() => undefined);
        if (u) this.set(u[pick]);
      },
    });
  usageGauge(
    'stowage_store_logical_bytes',
    'What every stored version would take as its own archive',
    'logicalBytes',
  );
  usageGauge('stowage_store_stored_bytes', 'What the store holds (each blob once)', 'diskBytes');
  new Gauge({
    name: 'stowage_jobs',
    help: 'Jobs in the history kept, by kind and state (older ones are pruned: count finished jobs with stowage_jobs_finished_total)',
    labelNames: ['kind', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      // Replicas sharing PostgreSQL count the shared history: the same numbers on every replica.
      for (const [kind, states] of Object.entries(await jobs.counts())) {
        for (const [state, n] of Object.entries(states)) this.set({ kind, state }, n);
      }
    },
  });
  const requests = new Counter({
    name: 'stowage_registry_requests_total',
    help: 'Requests to registries by host, method and status (0: no answer)',
    labelNames: ['host', 'method', 'status'],
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'stowage_registry_request_duration_seconds',
    help: 'Time to the response headers of a registry request',
    labelNames: ['host', 'method'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const api = new Counter({
    name: 'stowage_http_requests_total',
    help: 'API requests by method, route and status',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  const apiLatency = new Histogram({
    name: 'stowage_http_request_duration_seconds',
    help: 'API request time to the response headers',
    labelNames: ['method', 'route'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [registry],
  });
  const observer = (message: unknown) => {
    const r = message as RegistryRequestRecord;
    requests.inc({ host: r.host, method: r.method, status: String(r.status) });
    latency.observe({ host: r.host, method: r.method }, r.seconds);
  };
  subscribe(REGISTRY_REQUESTS_CHANNEL, observer);
  return {
    registry,
    observeApi(method, route, status, seconds) {
      api.inc({ method, route, status: String(status) });
      apiLatency.observe({ method, route }, seconds);
    },
    observeJob,
    close() {
      unsubscribe(REGISTRY_REQUESTS_CHANNEL, observer);
    },
  };
}

/** Finished jobs counted and timed, and each sync job's last success: what observeJob records. */
function jobMetrics(registry: Registry): (job: Job) => void {
  const finished = new Counter({
    name: 'stowage_jobs_finished_total',
    help: 'Jobs this process finished, by kind and outcome (succeeded, failed, canceled)',
    labelNames: ['kind', 'outcome'],
    registers: [registry],
  });
  const duration = new Histogram({
    name: 'stowage_job_duration_seconds',
    help: 'From a job starting to its end, by kind and outcome',
    labelNames: ['kind', 'outcome'],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
    registers: [registry],
  });
  const lastSync = new Gauge({
    name: 'stowage_sync_last_success_timestamp_seconds',
    help: 'When each sync job of stowage.toml last finished without a failure (Unix time)',
    labelNames: ['job'],
    registers: [registry],
  });
  return (job) => {
    if (!TERMINAL.has(job.state)) return;
    finished.inc({ kind: job.kind, outcome: job.state });
    if (job.startedAt && job.finishedAt) {
      const seconds = (Date.parse(job.finishedAt) - Date.parse(job.startedAt)) / 1000;
      duration.observe({ kind: job.kind, outcome: job.state }, Math.max(0, seconds));
    }
    if (job.kind === 'sync' && job.state === 'succeeded') {
      const at = Date.parse(job.finishedAt ?? new Date().toISOString()) / 1000;
      for (const name of (job.request as { jobs?: string[] }).jobs ?? []) lastSync.set({ job: name }, at);
    }
  };
}
