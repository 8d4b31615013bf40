/**
 * Every registry request, as it ends, on a diagnostics channel (as undici publishes its own): whoever
 * wants them subscribes (the service's metrics, the CLI's --debug), and nothing is kept when no one does.
 */
import { channel } from 'node:diagnostics_channel';
import type { Step } from './chain.js';

/** What is published on REGISTRY_REQUESTS_CHANNEL for each registry request. */
export interface RegistryRequestRecord {
  host: string;
  method: string;
  /** 0 when no answer came (a connection failure). */
  status: number;
  seconds: number;
}

export const REGISTRY_REQUESTS_CHANNEL = 'stowage:registry:request';
const REGISTRY_REQUESTS = channel(REGISTRY_REQUESTS_CHANNEL);

function record(host: string, method: string, status: number, started: number): void {
  if (!REGISTRY_REQUESTS.hasSubscribers) return;
  const r: RegistryRequestRecord = { host, method, status, seconds: (performance.now() - started) / 1000 };
  REGISTRY_REQUESTS.publish(r);
}

/** Publishes each attempt sent to `host` (the registry's name as references spell it). */
export function publish(host: string): Step {
  return async (req, next) => {
    const started = performance.now();
    try {
      const res = await next(req);
      record(host, req.method, res.statusCode, started);
      return res;
    } catch (e) {
      record(host, req.method, 0, started);
      throw e;
    }
  };
}
