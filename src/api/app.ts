/**
 * The HTTP API put together: the middleware (middleware.ts) in front of one app per resource (health,
 * jobs, archives, registries), each mounted with app.route(), and the OpenAPI document of them all.
 * The work is in service/ and the engine; createApp takes everything it uses, so tests drive it with
 * app.request() or over a socket.
 */
import { archivesApi } from './archives.js';
import { bundlesApi } from './bundles.js';
import { eventsApi } from './events.js';
import { healthApi } from './health.js';
import { jobsApi } from './jobs.js';
import { authenticate, errorHandler, need, newApi, notFound, requestLog } from './middleware.js';
import { registriesApi } from './registries.js';
import type { ApiApp, AppDeps } from './shared.js';

export type { AppDeps } from './shared.js';

/** The OpenAPI document's own parts (the routes add theirs); openapi.json at the repository root is it, committed. */
export function openApiConfig(version: string): Parameters<ApiApp['doc31']>[1] {
  return {
    openapi: '3.1.0',
    info: {
      title: 'stowage',
      version,
      description:
        'Registry-to-tarball sync gateway: pulls into a versioned archive store, downloads, pushes and syncs. Every route but /healthz and /readyz needs an API token (Authorization: Bearer TOKEN); this document too.',
    },
    servers: [
      // Relative: the console's "Try it out" and any reader resolve it against where they read the
      // document, so it is the address that served it, whatever that is.
      { url: '/', description: 'the service this document was read from' },
      { url: 'http://127.0.0.1:8080', description: "stowage serve's default address (yours may differ)" },
    ],
    tags: [
      {
        name: 'Jobs',
        description: 'Pulls, pushes and syncs run as jobs: started, listed, followed (SSE) and canceled',
      },
      {
        name: 'Archives',
        description: 'The versions in the archive store: listed, uploaded, downloaded, deleted',
      },
      { name: 'Registries', description: 'What the service may reach, and what registries hold' },
      { name: 'Bundles', description: 'Air-gap bundles: made as jobs, listed, downloaded' },
      {
        name: 'Events',
        description: 'What the service did, as CloudEvents: listed, streamed, and delivered to webhooks',
      },
      { name: 'Health', description: 'Liveness, readiness and metrics' },
    ],
  };
}

export function createApp(deps: AppDeps): ApiApp {
  const app = newApi();
  app.use('*', requestLog(deps));
  app.use('*', authenticate(deps.tokens, deps.sessions));
  app.onError(errorHandler(deps));
  app.notFound(notFound);
  app.openAPIRegistry.registerComponent('securitySchemes', 'Bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API token from stowage.toml [[server.token]] (stowage token makes one)',
  });
  app.route('/', healthApi(deps));
  app.route('/', jobsApi(deps));
  app.route('/', archivesApi(deps));
  app.route('/', registriesApi(deps));
  app.route('/', bundlesApi(deps));
  app.route('/', eventsApi(deps));
  app.use('/openapi.json', need('read'));
  app.doc31('/openapi.json', openApiConfig(deps.version));
  return app;
}
