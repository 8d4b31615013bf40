/**
 * Prometheus metrics (prom-client, a registry of the service's own, no process-global state): bytes
 * pulled and pushed, jobs by kind and state, blob cache hits, registry requests by host, method and
 * status with their latency, and the API's own requests.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { type RegistryRequestRecord, registryRequestObservers } from '../registry/client.js';
import type { JobSystem } from './jobs.js';
import type { Engine } from './operations.js';

export interface Metrics {
  registry: Registry;
  observeApi(method: string, route: string, status: number, seconds: number): void;
  close(): void;
}

export function createMetrics(
  engine: Engine,
  jobs: JobSystem,
  opts: { replica?: string | undefined } = {},
): Metrics {
  const registry = new Registry();
  // Replicas sharing a store are told apart by this label on every series.
  if (opts.replica) registry.setDefaultLabels({ replica: opts.replica });
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
    'stowage_bytes_pulled_total',
    'Blob bytes fetched from registries',
    () => engine.counters.bytesPulled,
  );
  counter(
    'stowage_bytes_pushed_total',
    'Blob bytes uploaded to registries',
    () => engine.counters.bytesPushed,
  );
  counter(
    'stowage_blob_cache_hits_total',
    'Blobs the store already held (not fetched)',
    () => engine.counters.blobCacheHits,
  );
  counter(
    'stowage_blob_cache_misses_total',
    'Blobs fetched into the store',
    () => engine.counters.blobCacheMisses,
  );
  new Gauge({
    name: 'stowage_jobs',
    help: 'Jobs by kind and state (the history kept)',
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
  const observer = (r: RegistryRequestRecord) => {
    requests.inc({ host: r.host, method: r.method, status: String(r.status) });
    latency.observe({ host: r.host, method: r.method }, r.seconds);
  };
  registryRequestObservers.add(observer);
  return {
    registry,
    observeApi(method, route, status, seconds) {
      api.inc({ method, route, status: String(status) });
      apiLatency.observe({ method, route }, seconds);
    },
    close() {
      registryRequestObservers.delete(observer);
    },
  };
}
