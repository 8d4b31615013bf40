/**
 * Delivers each webhook's events in order, one at a time: the oldest pending delivery is attempted, and
 * on failure attempted again after a backoff (1 s doubling to 5 min, or the receiver's Retry-After) until
 * the webhook's retry-for has passed since it was made; then it is recorded as failed and the next goes.
 * Nothing here is awaited by the operations that publish: a receiver that never answers holds back only
 * its own webhook's deliveries.
 */
import type { EventLog } from './log.js';
import { backoffMs, type Sender, type Webhook } from './webhooks.js';

/** Without a wake-up, a deliverer looks again this often (a lapsed lease, an event of another replica). */
const IDLE_MS = 2000;
/** A lease outlives an attempt by this much, so it cannot lapse while its holder is still waiting for an answer. */
const LEASE_MARGIN_MS = 15_000;

export type AttemptOutcome = 'delivered' | 'failed' | 'retried';

export interface DispatcherOptions {
  log: EventLog;
  hooks: Webhook[];
  sender: Sender;
  /** A failure of the log itself (the database away), said once per failing turn. */
  onError?: ((webhook: string, e: Error) => void) | undefined;
  /** Each attempt's outcome (delivered, failed for good after retry-for, or to be tried again), and why not delivered. */
  onAttempt?: ((webhook: string, outcome: AttemptOutcome, error: string | undefined) => void) | undefined;
  now?: () => number;
}

export class Dispatcher {
  private running = false;
  private readonly stop = new AbortController();
  private readonly waiting = new Set<() => void>();
  private loops: Promise<void>[] = [];

  constructor(private readonly o: DispatcherOptions) {}

  start(): void {
    this.running = true;
    this.loops = this.o.hooks.map((h) => this.loop(h));
  }

  /** New deliveries may be waiting: every idle deliverer looks now. */
  wake(): void {
    for (const w of [...this.waiting]) w();
  }

  async close(): Promise<void> {
    this.running = false;
    this.stop.abort();
    this.wake();
    await Promise.all(this.loops);
  }

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  private idle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiting.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.waiting.add(done);
    });
  }

  private async loop(hook: Webhook): Promise<void> {
    let failing = false;
    while (this.running) {
      try {
        const waitMs = await this.turn(hook);
        failing = false;
        if (waitMs > 0 && this.running) await this.idle(Math.min(waitMs, IDLE_MS));
      } catch (e) {
        // Said once when the log fails (the database away), not at every turn until it is back.
        if (!failing) this.o.onError?.(hook.name, e as Error);
        failing = true;
        if (this.running) await this.idle(IDLE_MS);
      }
    }
  }

  /** One step of a webhook's queue; how long to wait before the next (0: at once). */
  private async turn(hook: Webhook): Promise<number> {
    const next = await this.o.log.next(hook.name, hook.timeoutMs + LEASE_MARGIN_MS);
    if (!next) return IDLE_MS;
    const { delivery: d, event } = next;
    const due = d.nextAt ? Date.parse(d.nextAt) - this.now() : 0;
    if (due > 0) return due;
    const r = await this.o.sender.attempt(hook, event, d.id, this.stop.signal);
    if (!this.running && !r.ok) return 0; // stopped mid-attempt: pending still, tried after the restart
    d.attempts++;
    d.status = r.status;
    d.error = r.ok ? undefined : r.error;
    if (r.ok) {
      d.state = 'delivered';
      d.nextAt = undefined;
    } else {
      const wait = backoffMs(d.attempts, r.retryAfterMs);
      if (this.now() + wait - Date.parse(d.createdAt) > hook.retryForMs) {
        d.state = 'failed';
        d.nextAt = undefined;
      } else {
        d.nextAt = new Date(this.now() + wait).toISOString();
      }
    }
    await this.o.log.settle(d);
    this.o.onAttempt?.(hook.name, d.state === 'pending' ? 'retried' : d.state, d.error);
    return 0;
  }
}
