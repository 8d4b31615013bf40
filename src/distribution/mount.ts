/**
 * The registry put on the service's listener from `[server.registry]`: who may pull, and the
 * pull-through upstreams (each one the service may reach: allow-registries is checked here, at start,
 * so a typo fails the start and not the first pull).
 */
import type { Hono } from 'hono';
import type { Logger } from 'pino';
import type { ApiToken } from '../api/auth.js';
import type { Env } from '../api/shared.js';
import { durationMs, type StowageConfig } from '../config/stowage.js';
import { StowageError } from '../errors.js';
import { type Engine, hostMatches } from '../service/engine.js';
import { registryApi } from './app.js';
import { PullThrough } from './pull-through.js';
import { RegistryTokens } from './tokens.js';

const DEFAULT_TAG_TTL = '5m';

export interface MountRegistryOptions {
  engine: Engine;
  config: StowageConfig;
  tokens: ApiToken[];
  /** The deployment's key (the session key), from which registry tokens are signed. */
  key: Buffer;
  logger: Logger;
  redact?: ((text: string) => string) | undefined;
}

export function mountRegistry(app: Hono<Env>, o: MountRegistryOptions): void {
  const settings = o.config.server.registry ?? {};
  const upstreams = settings['pull-through'] ?? [];
  checkUpstreams(upstreams, o.config.server['allow-registries']);
  const pullThrough = upstreams.length
    ? new PullThrough({
        engine: o.engine,
        hosts: upstreams,
        tagTtlMs: durationMs(settings['tag-ttl'] ?? DEFAULT_TAG_TTL),
        warn: (message, fields) => o.logger.warn(fields, message),
      })
    : undefined;
  app.route(
    '/',
    registryApi({
      store: o.engine.store,
      rules: {
        tokens: o.tokens,
        registryTokens: new RegistryTokens(o.key),
        anonymousPull: settings['anonymous-pull'] ?? false,
      },
      pullThrough,
      redact: o.redact,
    }),
  );
}

function checkUpstreams(upstreams: string[], allow: string[] | undefined): void {
  for (const host of upstreams) {
    if (!/^[a-z0-9.-]+(:\d+)?$/i.test(host)) {
      throw new StowageError(
        'INVALID_CONFIG',
        `[server.registry] pull-through: "${host}" is not a registry host; give HOST or HOST:PORT, as references spell it`,
      );
    }
    if (allow && !allow.some((p) => hostMatches(p, host))) {
      throw new StowageError(
        'INVALID_CONFIG',
        `[server.registry] pull-through: ${host} is not in [server] allow-registries; add it there, or take it out of pull-through`,
      );
    }
  }
}
