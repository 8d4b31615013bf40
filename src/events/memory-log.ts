/**
 * The event log of a service on one machine: in memory, saved to STATE/events.json (atomically, at
 * most twice a second) so that deliveries still pending when the service stops go out after it
 * starts again, and the history survives a restart. Every step costs the same however many events and
 * deliveries are kept: each webhook's pending deliveries are a queue, its finished ones a bounded list,
 * and an event is kept while the stream or a delivery still refers to it (counted, not searched for).
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../core/atomic.js';
import type { CloudEvent } from './event.js';
import type { Delivery, EventLog, LoggedEvent } from './log.js';

/** Events kept for the stream in process (more are kept while a delivery refers to them). */
const KEEP_STREAM = 1000;
/** Pending deliveries one webhook may have; past it the oldest are failed (a receiver gone for good). */
export const MAX_PENDING = 10_000;
const SAVE_EVERY_MS = 500;

interface Saved {
  seq: number;
  delivery: number;
  /** The stream's events, oldest first. */
  events: LoggedEvent[];
  /** Events only deliveries refer to (older than the stream). */
  others?: LoggedEvent[];
  deliveries: Delivery[];
}

interface Queues {
  /** Oldest first: the head is the one to attempt. */
  pending: Delivery[];
  /** Oldest first, at most `keep`. */
  finished: Delivery[];
}

export class MemoryEventLog implements EventLog {
  private seq = 0;
  private deliveryId = 0;
  /** The newest KEEP_STREAM events, oldest first (seqs increasing). */
  private stream: LoggedEvent[] = [];
  /** Every event kept, by id, with how many of the stream and the deliveries refer to it. */
  private readonly kept = new Map<string, { logged: LoggedEvent; refs: number }>();
  private readonly hooks = new Map<string, Queues>();
  private saving: Promise<void> | undefined;
  private dirty = false;

  constructor(
    private readonly o: {
      file?: string | undefined;
      /** Finished deliveries kept per webhook. */
      keep: number;
      /** The configured webhooks: deliveries saved for others (a webhook since removed) are dropped at load. */
      webhooks?: string[] | undefined;
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
    for (const e of saved.others ?? []) this.kept.set(e.event.id, { logged: e, refs: 0 });
    for (const e of saved.events.slice(-KEEP_STREAM)) {
      this.kept.set(e.event.id, { logged: e, refs: 0 });
      this.keepInStream(e);
    }
    const configured = this.o.webhooks && new Set(this.o.webhooks);
    for (const d of saved.deliveries) {
      if (!this.kept.has(d.event) || (configured && !configured.has(d.webhook))) continue;
      this.ref(d.event, 1);
      const q = this.queues(d.webhook);
      (d.state === 'pending' ? q.pending : q.finished).push(d);
    }
    for (const q of this.hooks.values()) q.pending.sort((a, b) => a.id - b.id);
    for (const [id, k] of this.kept) if (k.refs <= 0) this.kept.delete(id);
  }

  private now(): Date {
    return this.o.now?.() ?? new Date();
  }

  private queues(webhook: string): Queues {
    let q = this.hooks.get(webhook);
    if (!q) {
      q = { pending: [], finished: [] };
      this.hooks.set(webhook, q);
    }
    return q;
  }

  /** Counts a reference to an event more (1) or less (-1); an event nothing refers to is let go. */
  private ref(id: string, by: 1 | -1): void {
    const k = this.kept.get(id);
    if (!k) return;
    k.refs += by;
    if (k.refs <= 0) this.kept.delete(id);
  }

  private keepInStream(logged: LoggedEvent): void {
    this.stream.push(logged);
    this.ref(logged.event.id, 1);
    if (this.stream.length > KEEP_STREAM) this.ref(this.stream.shift()!.event.id, -1);
  }

  async append(event: CloudEvent, webhooks: string[]): Promise<number> {
    const logged = { seq: ++this.seq, event };
    this.kept.set(event.id, { logged, refs: 0 });
    for (const w of webhooks) this.add(w, event);
    this.keepInStream(logged);
    this.save();
    return logged.seq;
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
    const q = this.queues(webhook);
    q.pending.push(d);
    this.ref(event.id, 1);
    // Bounded: a receiver gone for good must not grow the log (and its file) without end.
    if (q.pending.length > MAX_PENDING) {
      const old = q.pending.shift()!;
      this.finish(q, {
        ...old,
        state: 'failed',
        error: `dropped: more than ${MAX_PENDING} deliveries were waiting`,
        updatedAt: at,
      });
    }
    return d;
  }

  /** A delivery done with, into the webhook's bounded history. */
  private finish(q: Queues, d: Delivery): void {
    q.finished.push(d);
    if (q.finished.length > this.o.keep) this.ref(q.finished.shift()!.event, -1);
  }

  async since(seq: number, limit: number): Promise<LoggedEvent[]> {
    // Seqs increase along the stream: the first after `seq` by binary search.
    let lo = 0;
    let hi = this.stream.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.stream[mid]!.seq <= seq) lo = mid + 1;
      else hi = mid;
    }
    return this.stream.slice(lo, lo + limit);
  }

  async recent(limit: number): Promise<LoggedEvent[]> {
    return this.stream.slice(-limit);
  }

  async lastSeq(): Promise<number> {
    return this.seq;
  }

  async next(webhook: string): Promise<{ delivery: Delivery; event: CloudEvent } | undefined> {
    const d = this.hooks.get(webhook)?.pending[0];
    if (!d) return undefined;
    return { delivery: { ...d }, event: this.kept.get(d.event)!.logged.event };
  }

  async settle(d: Delivery): Promise<void> {
    const q = this.hooks.get(d.webhook);
    // The one settled is the queue's head but for a redelivery's rare race: looked for from the front.
    const i = q?.pending.findIndex((x) => x.id === d.id) ?? -1;
    if (!q || i < 0) return;
    const updated = { ...q.pending[i]!, ...pick(d), updatedAt: this.now().toISOString() };
    if (d.state === 'pending') q.pending[i] = updated;
    else {
      q.pending.splice(i, 1);
      this.finish(q, updated);
    }
    this.save();
  }

  async history(webhook: string, limit: number): Promise<Delivery[]> {
    const q = this.hooks.get(webhook);
    if (!q) return [];
    // Newest first: the pending ones (newer ids than any finished but a redelivered event's), then the rest.
    return [...q.pending, ...q.finished]
      .sort((a, b) => b.id - a.id)
      .slice(0, limit)
      .map((d) => ({ ...d }));
  }

  async redeliver(webhook: string, id: number): Promise<Delivery | undefined> {
    const q = this.hooks.get(webhook);
    const d = q?.finished.find((x) => x.id === id) ?? q?.pending.find((x) => x.id === id);
    const kept = d && this.kept.get(d.event);
    if (!kept) return undefined;
    const again = this.add(webhook, kept.logged.event);
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
    const from = this.stream[0]?.seq ?? Number.POSITIVE_INFINITY;
    const saved: Saved = {
      seq: this.seq,
      delivery: this.deliveryId,
      events: this.stream,
      others: [...this.kept.values()].map((k) => k.logged).filter((e) => e.seq < from),
      deliveries: [...this.hooks.values()].flatMap((q) => [...q.finished, ...q.pending]),
    };
    await writeFileAtomic(this.o.file!, `${JSON.stringify(saved)}\n`, 0o600).catch(() => {
      // Kept for the next save (a full disk, say); the log in memory is whole meanwhile.
      this.dirty = true;
    });
  }
}

/** What an attempt changes of a delivery. */
function pick(d: Delivery): Partial<Delivery> {
  return { state: d.state, attempts: d.attempts, status: d.status, error: d.error, nextAt: d.nextAt };
}
