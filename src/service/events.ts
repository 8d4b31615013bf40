/**
 * What the service's operations tell other systems (see events/event.ts for the catalogue): each tag of
 * a sync or pull as it is done, a sync's end with its summary, refusals by the trust policy, bundles,
 * and pull-through misses. Messages go through the service's redactor: no server path leaves in an event.
 */
import type { NewEvent } from '../events/event.js';
import type { StoredVersion } from '../store/store.js';
import type { SyncReport, TagOutcome } from '../sync/report.js';
import type { Engine } from './engine.js';
import type { Job } from './job-system.js';

/** The source of an event a job caused. */
export const jobSource = (job: Pick<Job, 'id'>) => `/stowage/jobs/${job.id}`;

type Publishing = Pick<Engine, 'events' | 'redact'>;

function publish(engine: Publishing, e: NewEvent): void {
  engine.events?.publish(e);
}

/** What version.stored (and tag.moved) say of a version, wherever it was stored from. */
interface StoredFacts {
  repository: string;
  tag: string;
  /** As stored. */
  digest: string;
  /** As the source had it (differs from `digest` where platforms were chosen). */
  sourceDigest: string;
  /** The source digest the tag's newest version had before, if the store had the tag. */
  previous: string | undefined;
  source: string;
  platforms: string[];
  version: string;
}

/** A version stored, and, when the tag pointed elsewhere before, the tag moved; `extra` goes in both. */
function publishStored(
  engine: Publishing,
  source: string,
  v: StoredFacts,
  extra: Record<string, unknown>,
): void {
  const subject = `${v.repository}:${v.tag}`;
  publish(engine, {
    type: 'io.stowage.version.stored',
    source,
    subject,
    data: {
      repository: v.repository,
      tag: v.tag,
      digest: v.digest,
      sourceDigest: v.sourceDigest,
      previousDigest: v.previous ?? null,
      source: v.source,
      platforms: v.platforms,
      version: v.version,
      ...extra,
    },
  });
  if (v.previous && v.previous !== v.sourceDigest) {
    publish(engine, {
      type: 'io.stowage.tag.moved',
      source,
      subject,
      data: {
        repository: v.repository,
        tag: v.tag,
        from: v.previous,
        to: v.sourceDigest,
        version: v.version,
        ...extra,
      },
    });
  }
}

/** What one tag of a sync or pull did: a version stored (and a tag moved), a mirror tag written, a refusal. */
export function publishTag(
  engine: Publishing,
  job: Job,
  e: { job?: string | undefined; repository: string; outcome: TagOutcome; mirror?: string | undefined },
): void {
  const { outcome: o, repository } = e;
  const source = jobSource(job);
  const subject = `${repository}:${o.tag}`;
  // A pull runs as an ad-hoc sync job of its own (pull-0): only a sync's job names mean something.
  const origin = { job: job.id, kind: job.kind, ...(e.job && job.kind === 'sync' ? { syncJob: e.job } : {}) };
  if (o.archive === 'stored' && o.version && o.digest) {
    const { id, digest, platforms } = o.version;
    publishStored(
      engine,
      source,
      {
        repository,
        tag: o.tag,
        digest,
        sourceDigest: o.digest,
        previous: o.previous,
        source: subject,
        platforms,
        version: id,
      },
      origin,
    );
  }
  if (o.mirror === 'pushed' && e.mirror) {
    publish(engine, {
      type: 'io.stowage.mirror.tag.written',
      source,
      subject: `${e.mirror}:${o.tag}`,
      data: {
        mirror: e.mirror,
        tag: o.tag,
        digest: o.digest,
        source: subject,
        ...origin,
      },
    });
  }
  if (o.action === 'failed' && o.code === 'POLICY_REJECTED') {
    publishRefusal(engine, source, {
      reference: subject,
      digest: o.digest,
      reason: o.error,
      where: job.kind,
      ...origin,
    });
  }
}

/** The trust policy refused something: an image (sync, pull, pull-through) or a bundle. */
export function publishRefusal(
  engine: Publishing,
  source: string,
  data: { reference: string; reason?: string | undefined; where: string; [k: string]: unknown },
): void {
  publish(engine, {
    type: 'io.stowage.signature.refused',
    source,
    subject: data.reference,
    data: {
      ...data,
      reason: data.reason ? redacted(engine, data.reason) : undefined,
    },
  });
}

function redacted(engine: Publishing, text: string): string {
  return engine.redact?.(text) ?? text;
}

/** What a sync job did, at its end: pruned versions, deleted mirror tags, then finished or failed. */
export function publishSyncEnd(
  engine: Publishing,
  job: Job,
  report: SyncReport | undefined,
  error?: string,
): void {
  const source = jobSource(job);
  for (const j of report?.jobs ?? []) {
    for (const p of j.pruned) {
      publish(engine, {
        type: 'io.stowage.version.pruned',
        source,
        subject: `${j.source}:${p.tag}`,
        data: {
          repository: j.source,
          tag: p.tag,
          digest: p.digest,
          version: p.id,
          taken: p.taken,
          job: job.id,
          syncJob: j.name,
        },
      });
    }
    for (const d of j.mirrorDeleted) {
      publish(engine, {
        type: 'io.stowage.mirror.tag.deleted',
        source,
        subject: `${j.mirror}:${d.tag}`,
        data: {
          mirror: j.mirror,
          tag: d.tag,
          digest: d.digest ?? null,
          job: job.id,
          syncJob: j.name,
        },
      });
    }
  }
  const failed = error !== undefined || (report?.failed ?? 0) > 0;
  publish(engine, {
    type: failed ? 'io.stowage.sync.failed' : 'io.stowage.sync.finished',
    source,
    subject: job.id,
    data: {
      job: job.id,
      requestedBy: job.requestedBy,
      ...(error ? { error: redacted(engine, error) } : {}),
      failed: report?.failed ?? null,
      fetchedBytes: report?.fetchedBytes ?? 0,
      jobs: (report?.jobs ?? []).map((j) => ({
        name: j.name,
        source: j.source,
        ...(j.mirror ? { mirror: j.mirror } : {}),
        ...(j.error ? { error: redacted(engine, j.error) } : {}),
        tags: j.tags.map((t) => ({
          tag: t.tag,
          action: t.action,
          ...(t.digest ? { digest: t.digest } : {}),
          ...(t.archive ? { archive: t.archive } : {}),
          ...(t.mirror ? { mirror: t.mirror } : {}),
          ...(t.error ? { error: redacted(engine, t.error), code: t.code } : {}),
        })),
        pruned: j.pruned.length,
        mirrorDeleted: j.mirrorDeleted.length,
      })),
    },
  });
}

/** A bundle made, or imported into the store. */
export function publishBundle(
  engine: Publishing,
  source: string,
  kind: 'created' | 'imported',
  bundle: { id: string; [k: string]: unknown },
): void {
  const type = kind === 'created' ? 'io.stowage.bundle.created' : 'io.stowage.bundle.imported';
  publish(engine, { type, source, subject: bundle.id, data: bundle });
}

/** A pull through the registry found the upstream's tag newer than the store's (or the store without it). */
export function publishPullThroughMiss(
  engine: Publishing,
  data: { repository: string; tag?: string | undefined; digest: string; stored: boolean },
): void {
  const subject = `${data.repository}${data.tag ? `:${data.tag}` : `@${data.digest}`}`;
  publish(engine, { type: 'io.stowage.pullthrough.miss', source: '/stowage/registry', subject, data });
}

/** A version the registry stored as a client pulled it through (the tag new, or moved upstream). */
export function publishPulledThrough(
  engine: Publishing,
  v: StoredVersion,
  before: StoredVersion | undefined,
): void {
  const facts = {
    repository: v.repository,
    tag: v.tag,
    digest: v.descriptor.digest,
    sourceDigest: v.sourceDigest ?? v.descriptor.digest,
    previous: before ? (before.sourceDigest ?? before.descriptor.digest) : undefined,
    source: v.source,
    platforms: v.platforms,
    version: v.id,
  };
  publishStored(engine, '/stowage/registry', facts, { kind: 'pull-through' });
}
