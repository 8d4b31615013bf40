/**
 * Health, readiness and metrics: GET /healthz and /readyz (anonymous), /metrics.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { need, newApi } from './middleware.js';
import { type ApiApp, type AppDeps, errorResponses, json, security } from './shared.js';

const healthzRoute = createRoute({
  method: 'get',
  path: '/healthz',
  summary: 'Liveness: the process answers',
  responses: {
    200: json('alive', z.object({ status: z.string() })),
  },
});

const readyzRoute = createRoute({
  method: 'get',
  path: '/readyz',
  summary: 'Readiness: the store is open and jobs are accepted',
  responses: {
    200: json('ready', z.object({ status: z.string() })),
    503: json('starting or shutting down', z.object({ status: z.string() })),
  },
});

const metricsRoute = createRoute({
  method: 'get',
  path: '/metrics',
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

  api.openapi(readyzRoute, (c) =>
    deps.ready() ? c.json({ status: 'ready' }, 200) : c.json({ status: 'not ready' }, 503),
  );

  api.openapi(metricsRoute, async (c) => {
    const text = await deps.metrics.registry.metrics();
    return c.text(text, 200, { 'content-type': deps.metrics.registry.contentType });
  });
  return api;
}
