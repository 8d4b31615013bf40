/**
 * The service's events, put together: operations publish (never waiting, never failing for it), each
 * event is logged in order with a delivery for every webhook whose `events` take it, the deliverers are
 * woken, and the event stream's followers (GET /v1/events/stream, `stowage events --follow`) are sent it.
 */

import { type AttemptOutcome, Dispatcher } from './dispatcher.js';
import { type CloudEvent, type EventPublisher, makeEvent, type NewEvent, typeMatches } from './event.js';
import type { Delivery, EventLog, LoggedEvent } from './log.js';
import { Sender, type Webhook } from './webhooks.js';

/** Events read from the log per page while a follower catches up. */
const PAGE = 500;
/** Followers read the log this often without a wake-up (a NOTIFY missed while its connection was away). */
const BACKSTOP_MS = 3000;
/** How long an event waits for the log to come back (PostgreSQL restarting) before it is given up. */
const APPEND_PATIENCE_MS = 120_000;

export interface EventBusOptions {
  log: EventLog;
  hooks: Webhook[];
  /** Said when an event could not be logged, or a delivery failed for good. */
  warn: (message: string, fields: Record<string, unknown>) => void;
}

interface Follower {
  last: number;
  types: string[] | undefined;
  listener: (e: LoggedEvent) => void;
  reading: Promise<void>;
}

export class EventBus implements EventPublisher {
  private readonly dispatcher: Dispatcher;
  private readonly sender = new Sender();
  private readonly followers = new Set<Follower>();
  private chain: Promise<unknown> = Promise.resolve();
  private readonly backstop: NodeJS.Timeout;
  private closing = false;
  /** Attempts made by this process, by webhook and outcome (the metrics read them). */
  private readonly attempts = new Map<string, Record<AttemptOutcome, number>>();

  constructor(private readonly o: EventBusOptions) {
    this.dispatcher = new Dispatcher({
      log: o.log,
      hooks: o.hooks,
      sender: this.sender,
      onError: (webhook, e) => o.warn('webhook deliveries paused', { webhook, err: e.message }),
      onAttempt: (webhook, outcome, error) => {
        if (outcome === 'failed') o.warn('webhook delivery failed for good', { webhook, err: error });
        let counts = this.attempts.get(webhook);
        if (!counts) {
          counts = { delivered: 0, retried: 0, failed: 0 };
          this.attempts.set(webhook, counts);
        }
        counts[outcome]++;
      },
    });
    o.log.onRemoteAppend(() => this.woken());
    this.backstop = setInterval(() => this.catchUpAll(), BACKSTOP_MS);
    this.backstop.unref();
  }

  get webhooks(): readonly Webhook[] {
    return this.o.hooks;
  }

  get log(): EventLog {
    return this.o.log;
  }

  start(): void {
    this.dispatcher.start();
  }

  /** This process's delivery attempts so far, by webhook and outcome. */
  attemptCounts(): { webhook: string; outcome: AttemptOutcome; count: number }[] {
    return [...this.attempts].flatMap(([webhook, counts]) =>
      (Object.keys(counts) as AttemptOutcome[])
        .filter((outcome) => counts[outcome] > 0)
        .map((outcome) => ({ webhook, outcome, count: counts[outcome] })),
    );
  }

  /** Logged in the order published; an event the log cannot take is said in the log, not thrown. */
  publish(e: NewEvent): void {
    const event = makeEvent(e);
    const to = this.o.hooks.filter((h) => typeMatches(h.events, event.type)).map((h) => h.name);
    this.chain = this.chain
      .then(() => this.append(event, to))
      .then(
        () => this.woken(),
        (err: Error) => this.o.warn('event not recorded', { type: event.type, err: err.message }),
      );
  }

  /**
   * Appends, trying again while the log is away (the database restarting) for up to APPEND_PATIENCE_MS:
   * the events published meanwhile wait behind it, in order, rather than being lost.
   */
  private async append(event: CloudEvent, to: string[]): Promise<void> {
    const until = Date.now() + APPEND_PATIENCE_MS;
    for (let wait = 250; ; wait = Math.min(wait * 2, 5000)) {
      try {
        await this.o.log.append(event, to);
        return;
      } catch (e) {
        if (this.closing || Date.now() + wait > until) throw e;
        await new Promise((r) => setTimeout(r, wait).unref());
      }
    }
  }

  /** Resolves when everything published so far is logged. */
  async flushed(): Promise<void> {
    await this.chain;
  }

  /** A new pending delivery of a delivery's event, behind those waiting; undefined: no such delivery. */
  async redeliver(webhook: string, id: number): Promise<Delivery | undefined> {
    const d = await this.o.log.redeliver(webhook, id);
    if (d) this.dispatcher.wake();
    return d;
  }

  /**
   * Sends the events after `from` (of `types`, or all), then new ones as they are logged, in order;
   * the returned function stops it.
   */
  follow(from: number, types: string[] | undefined, listener: (e: LoggedEvent) => void): () => void {
    const f: Follower = { last: from, types, listener, reading: Promise.resolve() };
    this.followers.add(f);
    this.catchUp(f);
    return () => this.followers.delete(f);
  }

  private woken(): void {
    this.dispatcher.wake();
    this.catchUpAll();
  }

  private catchUpAll(): void {
    for (const f of this.followers) this.catchUp(f);
  }

  private catchUp(f: Follower): void {
    f.reading = f.reading.then(async () => {
      for (;;) {
        if (!this.followers.has(f)) return;
        const page = await this.o.log.since(f.last, PAGE).catch(() => [] as LoggedEvent[]);
        for (const e of page) {
          f.last = e.seq;
          if (typeMatches(f.types, e.event.type) && this.followers.has(f)) f.listener(e);
        }
        if (page.length < PAGE) return;
      }
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.backstop);
    this.followers.clear();
    await this.chain;
    await this.dispatcher.close();
    await this.sender.close();
    await this.o.log.close();
  }
}

export type { CloudEvent, LoggedEvent };
