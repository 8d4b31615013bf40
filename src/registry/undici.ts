/**
 * The parts of undici the registry client uses, loaded from their own modules. undici's index loads
 * fetch, WebSocket, caches and mocks too: about 50 ms and 8 MB more at every start of the CLI, for
 * nothing we use. The package has no "exports" map, so these paths are public; undici.test.ts fails if an
 * upgrade moves them. Plain imports (typed in undici-parts.d.ts), so that the CLI bundle holds them.
 */
import type * as Undici from 'undici';
import apiRequest from 'undici/lib/api/api-request.js';
import AgentClass from 'undici/lib/dispatcher/agent.js';
import Dispatcher from 'undici/lib/dispatcher/dispatcher.js';
import retry from 'undici/lib/interceptor/retry.js';

// What undici's index does to every dispatcher: the request API as methods.
Object.assign(Dispatcher.prototype, { request: apiRequest });

export const Agent: typeof Undici.Agent = AgentClass;
export const interceptors: Pick<typeof Undici.interceptors, 'retry'> = { retry };
export type Agent = Undici.Agent;
