/**
 * Events and webhooks: the events the service published (listed, or followed as Server-Sent Events),
 * the configured webhooks with each one's delivery history, and a delivery sent again.
 */
import { createRoute, z } from '@hono/zod-openapi';
import type { Context as HonoContext } from 'hono';
import { streamSSE } from 'hono/streaming';
import { StowageError } from '../errors.js';
import type { EventBus } from '../events/bus.js';
import { typeMatches } from '../events/event.js';
import type { Delivery, LoggedEvent } from '../events/log.js';
import type { Webhook } from '../events/webhooks.js';
import { need, newApi } from './middleware.js';
import { DeliverySchema, EventSchema, WebhookSchema } from './schemas.js';
import { type ApiApp, type AppDeps, type Env, errorResponses, json, security } from './shared.js';
import { orderedStream } from './sse.js';

const typesQuery = z
  .string()
  .max(1024)
  .optional()
  .openapi({ description: 'types or prefixes, comma-separated ("version,sync.failed"); default: all' });

const listEventsRoute = createRoute({
  method: 'get',
  path: '/v1/events',
  operationId: 'listEvents',
  tags: ['Events'],
  summary: 'The events the service published, oldest first',
  description:
    'CloudEvents 1.0, each with its seq (the order they happened in). `after` gives those after a seq; without it, the newest `limit`.',
  security,
  middleware: [need('read')] as const,
  request: {
    query: z.object({
      after: z.coerce.number().int().nonnegative().optional(),
      limit: z.coerce.number().int().positive().max(1000).optional(),
      type: typesQuery,
    }),
  },
  responses: { 200: json('events', z.object({ events: z.array(EventSchema) })), ...errorResponses },
});

const streamEventsRoute = createRoute({
  method: 'get',
  path: '/v1/events/stream',
  operationId: 'streamEvents',
  tags: ['Events'],
  summary: 'Events as Server-Sent Events, as they happen',
  description:
    'Each SSE event has the seq as its id, the CloudEvent type as its event name, and the CloudEvent (JSON) as its data. New events only, unless `after` (or Last-Event-ID, to resume) gives a seq to start after.',
  security,
  middleware: [need('read')] as const,
  request: {
    query: z.object({ after: z.coerce.number().int().nonnegative().optional(), type: typesQuery }),
    headers: z.object({
      'last-event-id': z.string().optional().openapi({ description: 'resume after this seq' }),
    }),
  },
  responses: {
    200: { description: 'text/event-stream', content: { 'text/event-stream': { schema: z.string() } } },
    ...errorResponses,
  },
});

const listWebhooksRoute = createRoute({
  method: 'get',
  path: '/v1/webhooks',
  operationId: 'listWebhooks',
  tags: ['Events'],
  summary: "The configured webhooks ([[server.webhook]]), each with its newest delivery's state",
  security,
  middleware: [need('read')] as const,
  responses: { 200: json('webhooks', z.object({ webhooks: z.array(WebhookSchema) })), ...errorResponses },
});

const NameParam = z.object({ name: z.string().min(1).max(128) });

const deliveriesRoute = createRoute({
  method: 'get',
  path: '/v1/webhooks/{name}/deliveries',
  operationId: 'listDeliveries',
  tags: ['Events'],
  summary: "A webhook's deliveries, newest first: state, attempts, the receiver's last status code",
  security,
  middleware: [need('read')] as const,
  request: {
    params: NameParam,
    query: z.object({ limit: z.coerce.number().int().positive().max(1000).optional() }),
  },
  responses: {
    200: json('deliveries', z.object({ deliveries: z.array(DeliverySchema) })),
    ...errorResponses,
  },
});

const retryRoute = createRoute({
  method: 'post',
  path: '/v1/webhooks/{name}/deliveries/{id}/retry',
  operationId: 'retryDelivery',
  tags: ['Events'],
  summary: "Send a delivery's event again (a new delivery, behind those waiting)",
  security,
  middleware: [need('admin')] as const,
  request: { params: NameParam.extend({ id: z.coerce.number().int().positive() }) },
  responses: { 202: json('queued', DeliverySchema), ...errorResponses },
});

/** Splits ?type= into entries. */
function types(q: string | undefined): string[] | undefined {
  const list = q
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return list?.length ? list : undefined;
}

const eventView = (e: LoggedEvent) => ({ seq: e.seq, ...e.event });

/** A webhook as the API shows it: where it sends (without any query string, which may hold a key). */
export function webhookView(h: Webhook, last: Delivery | undefined) {
  return {
    name: h.name,
    url: `${h.url.origin}${h.url.pathname}`,
    events: h.events ?? ['*'],
    mode: h.mode,
    signed: h.secret !== undefined,
    timeoutSeconds: h.timeoutMs / 1000,
    retryForSeconds: h.retryForMs / 1000,
    ...(last ? { last } : {}),
  };
}

export function hookNamed(bus: EventBus, name: string): Webhook {
  const hook = bus.webhooks.find((h) => h.name === name);
  if (!hook) {
    throw new StowageError(
      'NOT_FOUND',
      `no webhook "${name}" is configured; list them with GET /v1/webhooks`,
    );
  }
  return hook;
}

export function eventsApi(deps: AppDeps): ApiApp {
  const api = newApi();
  const bus = deps.events;
  api.openapi(listEventsRoute, async (c) => {
    const q = c.req.valid('query');
    const limit = q.limit ?? 100;
    const wanted = types(q.type);
    const page = q.after !== undefined ? await bus.log.since(q.after, limit) : await bus.log.recent(limit);
    return c.json({ events: page.filter((e) => typeMatches(wanted, e.event.type)).map(eventView) }, 200);
  });
  api.openapi(streamEventsRoute, async (c) => {
    const q = c.req.valid('query');
    // Last-Event-ID (a client resuming) before ?after=, before "from now on".
    const resume = /^\d+$/.exec(c.req.header('last-event-id') ?? '')?.[0];
    const from = resume !== undefined ? Number(resume) : (q.after ?? (await bus.log.lastSeq()));
    return follow(c, bus, from, types(q.type));
  });
  api.openapi(listWebhooksRoute, async (c) => {
    const hooks = await Promise.all(
      bus.webhooks.map(async (h) => webhookView(h, (await bus.log.history(h.name, 1))[0])),
    );
    return c.json({ webhooks: hooks }, 200);
  });
  api.openapi(deliveriesRoute, async (c) => {
    const hook = hookNamed(bus, c.req.valid('param').name);
    const limit = c.req.valid('query').limit ?? 100;
    return c.json({ deliveries: await bus.log.history(hook.name, limit) }, 200);
  });
  api.openapi(retryRoute, async (c) => {
    const { name, id } = c.req.valid('param');
    const hook = hookNamed(bus, name);
    const d = await bus.redeliver(hook.name, id);
    if (!d)
      throw new StowageError(
        'NOT_FOUND',
        `webhook "${name}" has no delivery ${id} (or its event is no longer kept)`,
      );
    return c.json(d, 202);
  });
  return api;
}

/** The events after `from` as Server-Sent Events, then live ones, kept alive, until the client goes. */
function follow(c: HonoContext<Env>, bus: EventBus, from: number, wanted: string[] | undefined): Response {
  return streamSSE(c, async (stream) => {
    const out = orderedStream(stream);
    const stop = bus.follow(from, wanted, (e) =>
      out.send(() =>
        stream.writeSSE({ id: String(e.seq), event: e.event.type, data: JSON.stringify(e.event) }),
      ),
    );
    // A first comment, so a client sees the stream open before any event.
    out.send(() => stream.write(': following\n\n'));
    await new Promise<void>((resolve) => stream.onAbort(resolve));
    out.stop();
    stop();
  });
}
