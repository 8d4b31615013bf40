/**
 * The event log of a service on one machine: in memory, saved to STATE/events.json (atomically, at
 * most a few times a second) so that deliveries still pending when the service stops go out after it
 * starts again, and the history survives a restart.
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../core/atomic.js';
import type { CloudEvent } from './event.js';
import type { Delivery, EventLog, LoggedEvent } from './log.js';

/** Events kept for the stream in process (more are kept while a delivery of them is pending). */
const KEEP_STREAM = 1000;
/** Pending deliveries one webhook may have; past it the oldest are failed (a receiver gone for good). */
export const MAX_PENDING = 10_000;
const SAVE_EVERY_MS = 200;

interface Saved {
  seq: number;
  delivery: number;
  events: LoggedEvent[];
  deliveries: Delivery[];
}

export class MemoryEventLog implements EventLog {
  private seq = 0;
  private deliveryId = 0;
  private events: LoggedEvent[] = [];
  /** Per webhook, oldest first. */
  private readonly deliveries = new Map<string, Delivery[]>();
  private saving: Promise<void> | undefined;
  private dirty = false;

  constructor(
    private readonly o: {
      file?: string | undefined;
      /** Finished deliveries kept per webhook. */
      keep: number;
      now?: () => Date;
    },
  ) {}

  /** Reads the saved log, if there is one (a file that does not parse is started afresh). */
  async load(): Promise<void> {
    if (!this.o.file) return;
    const text = await readFile(this.o.file, 'utf8').catch(() => undefined);
    if (!text) return;
    let saved: Saved;
    try {
      saved = JSON.parse(text) as Saved;
    } catch {
      return;
    }
    this.seq = saved.seq;
    this.deliveryId = saved.delivery;
    this.events = saved.events;
    for (const d of saved.deliveries) this.list(d.webhook).push(d);
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  private list(webhook: string): Delivery[] {
    let l = this.deliveries.get(webhook);
    if (!l) {
      l = [];
      this.deliveries.set(webhook, l);
    }
    return l;
  }

  async append(event: CloudEvent, webhooks: string[]): Promise<number> {
    const seq = ++this.seq;
    this.events.push({ seq, event });
    for (const w of webhooks) this.add(w, event);
    this.trim();
    this.save();
    return seq;
  }

  private add(webhook: string, event: CloudEvent): Delivery {
    const at = this.now().toISOString();
    const d: Delivery = {
      id: ++this.deliveryId,
      webhook,
      event: event.id,
      type: event.type,
      subject: event.subject,
      state: 'pending',
      attempts: 0,
      createdAt: at,
      updatedAt: at,
    };
    const l = this.list(webhook);
    l.push(d);
    const pending = l.filter((x) => x.state === 'pending');
    // Bounded: a receiver gone for good must not grow the log (and its file) without end.
    for (const old of pending.slice(0, Math.max(0, pending.length - MAX_PENDING))) {
      Object.assign(old, {
        state: 'failed',
        error: `dropped: more than ${MAX_PENDING} deliveries were waiting`,
        updatedAt: at,
      });
    }
    return d;
  }

  /** Finished deliveries past `keep`, and events neither recent nor waiting to be delivered. */
  private trim(): void {
    for (const l of this.deliveries.values()) {
      let finished = l.filter((d) => d.state !== 'pending').length;
      if (finished <= this.o.keep) continue;
      for (let i = 0; i < l.length && finished > this.o.keep; ) {
        if (l[i]!.state === 'pending') i++;
        else {
          l.splice(i, 1);
          finished--;
        }
      }
    }
    if (this.events.length <= KEEP_STREAM) return;
    const needed = new Set<string>();
    for (const l of this.deliveries.values()) for (const d of l) needed.add(d.event);
    const cut = this.events.length - KEEP_STREAM;
    this.events = this.events.filter((e, i) => i >= cut || needed.has(e.event.id));
  }

  async since(seq: number, limit: number): Promise<LoggedEvent[]> {
    const from = this.events.findIndex((e) => e.seq > seq);
    return from < 0 ? [] : this.events.slice(from, from + limit);
  }

  async recent(limit: number): Promise<LoggedEvent[]> {
    return this.events.slice(-limit);
  }

  async lastSeq(): Promise<number> {
    return this.seq;
  }

  async next(webhook: string): Promise<{ delivery: Delivery; event: CloudEvent } | undefined> {
    const d = this.deliveries.get(webhook)?.find((x) => x.state === 'pending');
    if (!d) return undefined;
    const logged = this.events.find((e) => e.event.id === d.event);
    if (!logged) {
      // Cannot happen while trim() keeps the events of pending deliveries; fail it rather than stall.
      await this.settle({ ...d, state: 'failed', error: 'the event is no longer kept' });
      return this.next(webhook);
    }
    return { delivery: { ...d }, event: logged.event };
  }

  async settle(d: Delivery): Promise<void> {
    const l = this.deliveries.get(d.webhook);
    const mine = l?.find((x) => x.id === d.id);
    if (!mine) return;
    Object.assign(mine, {
      state: d.state,
      attempts: d.attempts,
      status: d.status,
      error: d.error,
      nextAt: d.nextAt,
      updatedAt: this.now().toISOString(),
    });
    this.trim();
    this.save();
  }

  async history(webhook: string, limit: number): Promise<Delivery[]> {
    return (this.deliveries.get(webhook) ?? []).slice(-limit).reverse();
  }

  async redeliver(webhook: string, id: number): Promise<Delivery | undefined> {
    const d = this.deliveries.get(webhook)?.find((x) => x.id === id);
    const logged = d && this.events.find((e) => e.event.id === d.event);
    if (!logged) return undefined;
    const again = this.add(webhook, logged.event);
    this.save();
    return { ...again };
  }

  onRemoteAppend(): void {}

  async close(): Promise<void> {
    await this.saving;
    if (this.dirty) await this.write();
  }

  /** Saves soon: one write at a time, the changes made meanwhile in the next. */
  private save(): void {
    if (!this.o.file) return;
    this.dirty = true;
    if (this.saving) return;
    this.saving = (async () => {
      while (this.dirty) {
        await new Promise((r) => setTimeout(r, SAVE_EVERY_MS).unref());
        await this.write();
      }
      this.saving = undefined;
    })();
  }

  private async write(): Promise<void> {
    this.dirty = false;
    const saved: Saved = {
      seq: this.seq,
      delivery: this.deliveryId,
      events: this.events,
      deliveries: [...this.deliveries.values()].flat(),
    };
    await writeFileAtomic(this.o.file!, `${JSON.stringify(saved)}\n`, 0o600).catch(() => {
      this.dirty = true;
    });
  }
}
