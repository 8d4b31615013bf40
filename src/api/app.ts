/**
 * The HTTP API put together: the middleware (middleware.ts) in front of one app per resource (health,
 * jobs, archives, registries), each mounted with app.route(), and the OpenAPI document of them all.
 * The work is in service/ and the engine; createApp takes everything it uses, so tests drive it with
 * app.request() or over a socket.
 */
import { archivesApi } from './archives.js';
import { healthApi } from './health.js';
import { jobsApi } from './jobs.js';
import { authenticate, errorHandler, need, newApi, notFound, requestLog } from './middleware.js';
import { registriesApi } from './registries.js';
import type { ApiApp, AppDeps } from './shared.js';

export type { AppDeps } from './shared.js';

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
  app.use('/openapi.json', need('read'));
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'stowage',
      version: deps.version,
      description:
        'Registry-to-tarball sync gateway: pulls into a versioned archive store, downloads, pushes and syncs.',
    },
  });
  return app;
}
