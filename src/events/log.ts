/**
 * Where events and their deliveries are kept, whoever keeps them: this process (memory-log.ts, a file
 * in the state directory) or PostgreSQL (pg-log.ts, shared by replicas, so each event is delivered once
 * however many replicas run). Each webhook's deliveries go in order: only its oldest undelivered one is
 * ever handed out, and with replicas only to the one replica that holds the webhook's lease.
 */
import type { CloudEvent } from './event.js';

export type DeliveryState = 'pending' | 'delivered' | 'failed';

export interface Delivery {
  /** Increasing per store: the order deliveries go in. */
  id: number;
  webhook: string;
  /** The event's id and type (its body is in the log). */
  event: string;
  type: string;
  subject?: string | undefined;
  state: DeliveryState;
  attempts: number;
  /** The receiver's last status code. */
  status?: number | undefined;
  /** Why the last attempt failed. */
  error?: string | undefined;
  createdAt: string;
  updatedAt: string;
  /** When the next attempt is due (a pending delivery that failed before). */
  nextAt?: string | undefined;
}

export interface LoggedEvent {
  /** Increasing per store: the event stream's id (Last-Event-ID). */
  seq: number;
  event: CloudEvent;
}

export interface EventLog {
  /** Keeps the event and a pending delivery for each of `webhooks`; its seq. */
  append(event: CloudEvent, webhooks: string[]): Promise<number>;
  /** Events after `seq`, oldest first, at most `limit`. */
  since(seq: number, limit: number): Promise<LoggedEvent[]>;
  /** The newest `limit` events, oldest first. */
  recent(limit: number): Promise<LoggedEvent[]>;
  lastSeq(): Promise<number>;
  /**
   * The webhook's oldest pending delivery and its event, for this process to attempt; undefined when it
   * has none, or (replicas) another replica holds the webhook for `leaseMs` more.
   */
  next(webhook: string, leaseMs: number): Promise<{ delivery: Delivery; event: CloudEvent } | undefined>;
  /** Records an attempt's outcome (state, attempts, status, error, nextAt of `d`). */
  settle(d: Delivery): Promise<void>;
  /** The webhook's newest deliveries, newest first. */
  history(webhook: string, limit: number): Promise<Delivery[]>;
  /** A new pending delivery of the event delivery `id` carried, behind those waiting; undefined: no such delivery. */
  redeliver(webhook: string, id: number): Promise<Delivery | undefined>;
  /** Called when events were appended elsewhere (another replica); in process, never. */
  onRemoteAppend(listener: () => void): void;
  close(): Promise<void>;
}

/** Events kept for the event stream (those with a delivery still pending are kept beyond this). */
export const KEEP_EVENTS = 10_000;
