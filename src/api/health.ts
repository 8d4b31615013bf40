/**
 * Health, readiness and metrics: GET /healthz and /readyz (anonymous), /metrics.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { need, newApi } from './middleware.js';
import { type ApiApp, type AppDeps, errorResponses, json, security } from './shared.js';

const healthzRoute = createRoute({
  method: 'get',
  path: '/healthz',
  operationId: 'getHealth',
  tags: ['Health'],
  summary: 'Liveness: the process answers',
  responses: {
    200: json('alive', z.object({ status: z.string() })),
  },
});

/** Where this replica keeps what it shares: the store (a local directory, or S3 and PostgreSQL) and its jobs. */
const modeSchema = z.object({
  store: z.enum(['local', 's3']),
  jobs: z.enum(['in-process', 'postgres']),
  /** This replica's name, when replicas share PostgreSQL. */
  replica: z.string().optional(),
});
const readySchema = z.object({
  status: z.string(),
  mode: modeSchema,
  /** Why not ready, when it is not for a reason other than starting or stopping (its database away). */
  reason: z.string().optional(),
});

const readyzRoute = createRoute({
  method: 'get',
  path: '/readyz',
  operationId: 'getReadiness',
  tags: ['Health'],
  summary: 'Readiness: the store is open and jobs are accepted',
  responses: {
    200: json('ready', readySchema),
    503: json('starting, shutting down, or its database unreachable', readySchema),
  },
});

const metricsRoute = createRoute({
  method: 'get',
  path: '/metrics',
  operationId: 'getMetrics',
  tags: ['Health'],
  summary: 'Prometheus metrics',
  security,
  middleware: [need('read')] as const,
  responses: {
    200: { description: 'Prometheus text format', content: { 'text/plain': { schema: z.string() } } },
    ...errorResponses,
  },
});

export function healthApi(deps: AppDeps): ApiApp {
  const api = newApi();
  api.openapi(healthzRoute, (c) => c.json({ status: 'ok' }, 200));

  const mode = {
    store: deps.engine.config.s3 ? ('s3' as const) : ('local' as const),
    jobs: deps.jobs.mode,
    ...(deps.replica ? { replica: deps.replica } : {}),
  };
  api.openapi(readyzRoute, async (c) => {
    if (!deps.ready()) return c.json({ status: 'not ready', mode }, 503);
    // A replica whose database is away takes no jobs: a load balancer sends requests to the others.
    const reason = await deps.jobs.unavailable?.();
    if (reason) return c.json({ status: 'not ready', mode, reason }, 503);
    return c.json({ status: 'ready', mode }, 200);
  });

  api.openapi(metricsRoute, async (c) => {
    const text = await deps.metrics.registry.metrics();
    return c.text(text, 200, { 'content-type': deps.metrics.registry.contentType });
  });
  return api;
}
