import { basename } from 'node:path';
/**
 * What the gateway may reach: the effective registries.conf, tags and inspect.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { parsePlatform } from '../image/platform.js';
import { parseReference, parseRepository, withDefaultTag } from '../reference/reference.js';
import { checkReachable } from '../service/engine.js';
import { inspect, listTags } from '../transfer/inspect.js';
import { need, newApi } from './middleware.js';
import { TagsSchema } from './schemas.js';
import { type ApiApp, type AppDeps, errorResponses, json, registryResponses, security } from './shared.js';

const registriesRoute = createRoute({
  method: 'get',
  path: '/v1/registries',
  operationId: 'getRegistries',
  tags: ['Registries'],
  summary: 'The effective registries.conf (no credentials) and the allow-list',
  security,
  middleware: [need('read')] as const,
  responses: {
    200: json('configuration', z.record(z.string(), z.unknown())),
    ...errorResponses,
    ...registryResponses,
  },
});

const tagsRoute = createRoute({
  method: 'get',
  path: '/v1/tags',
  operationId: 'listTags',
  tags: ['Registries'],
  summary: "A repository's tags",
  security,
  middleware: [need('read')] as const,
  request: { query: z.object({ repository: z.string().min(1).max(512) }) },
  responses: {
    200: json('tags', TagsSchema),
    ...errorResponses,
    ...registryResponses,
  },
});

const inspectRoute = createRoute({
  method: 'get',
  path: '/v1/inspect',
  operationId: 'inspectImage',
  tags: ['Registries'],
  summary: 'Inspect an image in a registry (as skopeo inspect)',
  security,
  middleware: [need('read')] as const,
  request: {
    query: z.object({
      ref: z.string().min(1).max(512),
      raw: z.enum(['true', 'false']).optional(),
      platform: z.string().max(64).optional(),
    }),
  },
  responses: {
    200: json('the image', z.record(z.string(), z.unknown())),
    ...errorResponses,
    ...registryResponses,
  },
});

export function registriesApi(deps: AppDeps): ApiApp {
  const { engine } = deps;
  const api = newApi();
  api.openapi(registriesRoute, (c) => {
    const conf = engine.ctx.conf;
    return c.json(
      {
        // The files by name: where they are on the server is not the API's to say.
        files: conf.sources.map((f) => basename(f)),
        unqualifiedSearchRegistries: conf.unqualifiedSearchRegistries,
        shortNameMode: conf.shortNameMode,
        registries: conf.registries,
        aliases: conf.aliases,
        allowRegistries: engine.config.server['allow-registries'] ?? null,
      },
      200,
    );
  });

  api.openapi(tagsRoute, async (c) => {
    const input = c.req.valid('query').repository;
    checkReachable(engine, withDefaultTag(parseRepository(input)));
    const r = await listTags(engine.ctx, input, c.req.raw.signal);
    return c.json({ repository: r.Repository, tags: r.Tags }, 200);
  });

  api.openapi(inspectRoute, async (c) => {
    const q = c.req.valid('query');
    checkReachable(engine, withDefaultTag(parseReference(q.ref)));
    const r = await inspect(engine.ctx, q.ref, {
      raw: q.raw === 'true',
      platform: q.platform ? parsePlatform(q.platform) : undefined,
      tags: false,
      signal: c.req.raw.signal,
    });
    if (r.kind === 'raw')
      return c.json(JSON.parse(r.bytes.toString('utf8')) as Record<string, unknown>, 200, {
        'docker-content-digest': r.digest,
      });
    if (r.kind === 'summary') return c.json(r.summary, 200);
    return c.json(JSON.parse(r.bytes.toString('utf8')) as Record<string, unknown>, 200);
  });
  return api;
}
