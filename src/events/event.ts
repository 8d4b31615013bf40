/**
 * What the gateway tells other systems it did, as CloudEvents 1.0 (https://cloudevents.io): the
 * catalogue of event types, the envelope, and how a webhook's `events` list chooses among them.
 * Operations publish through an EventPublisher; they never wait for a delivery.
 */
import { randomUUID } from 'node:crypto';

/** Every type starts with this (reverse-DNS, as CloudEvents asks); configuration may leave it out. */
export const TYPE_PREFIX = 'io.stowage.';

/** The types the gateway emits, and what causes each (the README's table is this). */
export const EVENT_TYPES = {
  'io.stowage.version.stored': 'a new version of a tag entered the store (sync, pull, upload, pull-through)',
  'io.stowage.tag.moved': 'a tag the store already had points at a different image now',
  'io.stowage.version.pruned': 'retention removed a version',
  'io.stowage.mirror.tag.written': 'a sync wrote a tag to its mirror',
  'io.stowage.mirror.tag.deleted': 'a sync deleted a mirror tag gone from the source (prune = true)',
  'io.stowage.sync.finished': 'a sync job ended with every tag done (a summary per tag)',
  'io.stowage.sync.failed': 'a sync job ended with tags or jobs failed, or was stopped',
  'io.stowage.signature.refused': 'the trust policy refused an image or a bundle',
  'io.stowage.bundle.created': 'an air-gap bundle was made',
  'io.stowage.bundle.imported': 'an air-gap bundle was imported into the store',
  'io.stowage.pullthrough.miss': 'a pull through the registry fetched a manifest the store lacked',
} as const;

export type EventType = keyof typeof EVENT_TYPES;

/** A CloudEvent in structured JSON mode, as delivered and as the event stream shows it. */
export interface CloudEvent {
  specversion: '1.0';
  /** Unique per event (a receiver that is sent one twice, after a replica died mid-delivery, dedupes by it). */
  id: string;
  /** Where it happened: /stowage/jobs/ID, /stowage/registry, /stowage/api. */
  source: string;
  type: EventType;
  /** What it is about: REPOSITORY:TAG, a bundle id, a job id. */
  subject?: string | undefined;
  time: string;
  datacontenttype: 'application/json';
  data: Record<string, unknown>;
}

/** What an operation says happened; the publisher makes the envelope. */
export interface NewEvent {
  type: EventType;
  source: string;
  subject?: string | undefined;
  data: Record<string, unknown>;
}

/** Where operations report events; publishing never throws and never waits for a receiver. */
export interface EventPublisher {
  publish(e: NewEvent): void;
}

export function makeEvent(e: NewEvent, now = new Date()): CloudEvent {
  return {
    specversion: '1.0',
    id: randomUUID(),
    source: e.source,
    type: e.type,
    ...(e.subject !== undefined ? { subject: e.subject } : {}),
    time: now.toISOString(),
    datacontenttype: 'application/json',
    data: e.data,
  };
}

/** A configured type or prefix in full: "sync" → "io.stowage.sync". */
export function fullType(entry: string): string {
  return entry.startsWith(TYPE_PREFIX) ? entry : `${TYPE_PREFIX}${entry}`;
}

/** Whether `type` is one of `entries` (types, or prefixes of whole name parts: "version" takes version.stored). */
export function typeMatches(entries: readonly string[] | undefined, type: string): boolean {
  if (!entries) return true;
  return entries.some((raw) => {
    const e = fullType(raw).replace(/[.*]+$/, '');
    return type === e || type.startsWith(`${e}.`);
  });
}

/** The entries that choose no type at all (a misspelling): configuration refuses them. */
export function unknownEntries(entries: readonly string[]): string[] {
  const types = Object.keys(EVENT_TYPES);
  return entries.filter((e) => !types.some((t) => typeMatches([e], t)));
}
