/**
 * The parts of undici the registry client uses, loaded from their own modules. undici's index loads
 * fetch, WebSocket, caches and mocks too: about 50 ms and 8 MB more at every start of the CLI, for
 * nothing we use. The package has no "exports" map, so these paths are public; undici.test.ts fails if an
 * upgrade moves them.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const require = createRequire(import.meta.url);

// What undici's index does to every dispatcher: the request API as methods.
Object.assign(require('undici/lib/dispatcher/dispatcher.js').prototype, {
  request: require('undici/lib/api/api-request.js'),
});

export const Agent: typeof Undici.Agent = require('undici/lib/dispatcher/agent.js');
export const interceptors: Pick<typeof Undici.interceptors, 'retry' | 'redirect'> = {
  retry: require('undici/lib/interceptor/retry.js'),
  redirect: require('undici/lib/interceptor/redirect.js'),
};
export type Agent = Undici.Agent;
