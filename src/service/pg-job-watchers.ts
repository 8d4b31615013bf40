/**
 * Subscribers of jobs' events on a replica (the API's Server-Sent Events), read from the events table
 * in order: woken by a NOTIFY when a job's events are written, and every few seconds without one (a
 * notification missed while the listening connection was away).
 */
import type pg from 'pg';
import type { JobEvent } from './job-system.js';

/** Subscribers read the table this often even without a notification (a listener reconnecting). */
const BACKSTOP_MS = 3000;

interface Watcher {
  id: string;
  last: number;
  listener: (e: JobEvent) => void;
  onEnd: () => void;
  ended: boolean;
  reading: Promise<void>;
}

type Query = (text: string, values: unknown[]) => Promise<pg.QueryResult<JobEvent>>;

export class JobWatchers {
  private readonly watchers = new Map<string, Set<Watcher>>();
  private readonly backstop: NodeJS.Timeout;

  constructor(private readonly query: Query) {
    this.backstop = setInterval(() => {
      for (const set of this.watchers.values()) for (const w of set) this.catchUp(w);
    }, BACKSTOP_MS);
    this.backstop.unref();
  }

  /** Sends a job's events after `from`, then the new ones as they are written, until its end event. */
  async subscribe(
    id: string,
    from: number,
    listener: (e: JobEvent) => void,
    onEnd: () => void,
  ): Promise<() => void> {
    const w: Watcher = { id, last: from, listener, onEnd, ended: false, reading: Promise.resolve() };
    const set = this.watchers.get(id) ?? new Set();
    this.watchers.set(id, set);
    set.add(w);
    this.catchUp(w);
    await w.reading;
    return () => this.unwatch(w);
  }

  /** A job's events were written: its subscribers read them. */
  wake(id: string): void {
    for (const w of this.watchers.get(id) ?? []) this.catchUp(w);
  }

  close(): void {
    clearInterval(this.backstop);
  }

  private unwatch(w: Watcher): void {
    const set = this.watchers.get(w.id);
    set?.delete(w);
    if (set?.size === 0) this.watchers.delete(w.id);
  }

  /** Reads a subscriber's events past the last it had, in order; the end event ends it. */
  private catchUp(w: Watcher): void {
    w.reading = w.reading.then(async () => {
      if (w.ended) return;
      const r = await this.query(
        'select seq, type, data from stowage_job_events where job_id = $1 and seq > $2 order by seq',
        [w.id, w.last],
      ).catch(() => undefined);
      for (const e of r?.rows ?? []) {
        w.last = e.seq;
        w.listener(e);
        if (e.type === 'end') {
          w.ended = true;
          this.unwatch(w);
          w.onEnd();
          return;
        }
      }
    });
  }
}
