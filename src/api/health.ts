/**
 * Health, readiness and metrics: GET /healthz and /readyz (anonymous), /metrics.
 */
import { createRoute, z } from '@hono/zod-openapi';

import { type ApiApp, type AppDeps, errorResponses, type Need, security } from './shared.js';

export function healthRoutes(app: ApiApp, deps: AppDeps, need: Need): void {
  app.openapi(
    createRoute({
      method: 'get',
      path: '/healthz',
      summary: 'Liveness: the process answers',
      responses: {
        200: {
          description: 'alive',
          content: { 'application/json': { schema: z.object({ status: z.string() }) } },
        },
      },
    }),
    (c) => c.json({ status: 'ok' }, 200),
  );
  app.openapi(
    createRoute({
      method: 'get',
      path: '/readyz',
      summary: 'Readiness: the store is open and jobs are accepted',
      responses: {
        200: {
          description: 'ready',
          content: { 'application/json': { schema: z.object({ status: z.string() }) } },
        },
        503: {
          description: 'starting or shutting down',
          content: { 'application/json': { schema: z.object({ status: z.string() }) } },
        },
      },
    }),
    (c) => (deps.ready() ? c.json({ status: 'ready' }, 200) : c.json({ status: 'not ready' }, 503)),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/metrics',
      summary: 'Prometheus metrics',
      security,
      middleware: [need('read')] as const,
      responses: {
        200: { description: 'Prometheus text format', content: { 'text/plain': { schema: z.string() } } },
        ...errorResponses,
      },
    }),
    async (c) => {
      const text = await deps.metrics.registry.metrics();
      return c.text(text, 200, { 'content-type': deps.metrics.registry.contentType });
    },
  );
}
