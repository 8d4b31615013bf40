/**
 * The engine of a service in this process, for the route tests that use `app.request()`: a real store
 * in `dir`, an empty registries.conf, and a job manager whose runners must never run.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseStowageConfig } from '../../src/config/stowage.js';
import { EventBus } from '../../src/events/bus.js';
import { MemoryEventLog } from '../../src/events/memory-log.js';
import type { Webhook } from '../../src/events/webhooks.js';
import { Context } from '../../src/registry/context.js';
import { type Engine, newCounters } from '../../src/service/engine.js';
import { JobManager } from '../../src/service/in-process-jobs.js';
import type { JobKind, Runner } from '../../src/service/job-system.js';
import { LocalRenditions } from '../../src/store/renditions.js';
import { Store } from '../../src/store/store.js';

export async function inProcessEngine(
  dir: string,
  opts: {
    policy?: string | undefined;
    maxQueued?: number;
    /** Runners that do run (the rest throw), made for the engine. */
    runners?: (engine: Engine) => Partial<Record<JobKind, Runner>>;
    /** Webhooks the events go to (default none). */
    hooks?: Webhook[];
  } = {},
): Promise<{ engine: Engine; store: Store; jobs: JobManager; events: EventBus }> {
  const conf = join(dir, 'registries.conf');
  await writeFile(conf, '');
  const store = await Store.open(join(dir, 'store'));
  const config = parseStowageConfig(
    `[store]\npath = "${join(dir, 'store')}"\n`,
    join(dir, 'stowage.toml'),
    {},
  );
  const engine: Engine = {
    ctx: await Context.create({ registriesConf: conf, env: {}, policy: opts.policy }),
    store,
    config,
    tmpDir: join(dir, 'state', 'tmp'),
    cacheDir: join(dir, 'state', 'cache'),
    renditions: new LocalRenditions(join(dir, 'state', 'cache')),
    counters: newCounters(),
  };
  const events = new EventBus({
    log: new MemoryEventLog({ keep: 100 }),
    hooks: opts.hooks ?? [],
    warn: () => {},
  });
  engine.events = events;
  const never = async () => {
    throw new Error('no job runs in these tests');
  };
  const jobs = new JobManager({
    concurrency: 1,
    maxQueued: opts.maxQueued ?? 1,
    keep: 10,
    runners: { pull: never, push: never, sync: never, bundle: never, ...opts.runners?.(engine) },
  });
  return { engine, store, jobs, events };
}
