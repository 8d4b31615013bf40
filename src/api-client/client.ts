/**
 * A typed client of the stowage API for TypeScript, on openapi-fetch and the types generated from
 * openapi.json (src/api-client/openapi.ts): paths, bodies, parameters and answers are checked by the
 * compiler. The project's own API tests use it.
 *
 *   const api = stowageClient({ baseUrl: 'http://127.0.0.1:8080', token });
 *   const { data, error } = await api.POST('/v1/pulls', { body: { ref: 'registry:5000/app:1.4' } });
 */
import createClient, { type Client } from 'openapi-fetch';
import type { paths } from './openapi.js';

export type { components, paths } from './openapi.js';

export function stowageClient(opts: {
  baseUrl: string;
  token?: string | undefined;
  /** How requests are sent (default: fetch); tests pass the app's own request(). */
  fetch?: ((request: Request) => Promise<Response>) | undefined;
}): Client<paths> {
  return createClient<paths>({
    baseUrl: opts.baseUrl,
    headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  });
}
