/**
 * What the service's operations tell other systems (see events/event.ts for the catalogue): each tag of
 * a sync or pull as it is done, a sync's end with its summary, refusals by the trust policy, bundles,
 * and pull-through misses. Messages go through the service's redactor: no server path leaves in an event.
 */
import type { EventType } from '../events/event.js';
import type { StoredVersion } from '../store/store.js';
import type { SyncReport, TagOutcome } from '../sync/report.js';
import type { Engine } from './engine.js';
import type { Job } from './job-system.js';

/** The source of an event a job caused. */
export const jobSource = (job: Pick<Job, 'id'>) => `/stowage/jobs/${job.id}`;

type Publishing = Pick<Engine, 'events' | 'redact'>;

function publish(
  engine: Publishing,
  type: EventType,
  source: string,
  subject: string | undefined,
  data: Record<string, unknown>,
): void {
  engine.events?.publish({ type, source, subject, data });
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
  if (o.archive === 'stored' && o.version) {
    publish(engine, 'io.stowage.version.stored', source, subject, {
      repository,
      tag: o.tag,
      digest: o.version.digest,
      sourceDigest: o.digest,
      previousDigest: o.previous ?? null,
      source: `${repository}:${o.tag}`,
      platforms: o.version.platforms,
      version: o.version.id,
      ...origin,
    });
    if (o.previous && o.previous !== o.digest) {
      publish(engine, 'io.stowage.tag.moved', source, subject, {
        repository,
        tag: o.tag,
        from: o.previous,
        to: o.digest,
        version: o.version.id,
        ...origin,
      });
    }
  }
  if (o.mirror === 'pushed' && e.mirror) {
    publish(engine, 'io.stowage.mirror.tag.written', source, `${e.mirror}:${o.tag}`, {
      mirror: e.mirror,
      tag: o.tag,
      digest: o.digest,
      source: subject,
      ...origin,
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
  publish(engine, 'io.stowage.signature.refused', source, data.reference, {
    ...data,
    reason: data.reason ? redacted(engine, data.reason) : undefined,
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
      publish(engine, 'io.stowage.version.pruned', source, `${j.source}:${p.tag}`, {
        repository: j.source,
        tag: p.tag,
        digest: p.digest,
        version: p.id,
        taken: p.taken,
        job: job.id,
        syncJob: j.name,
      });
    }
    for (const d of j.mirrorDeleted) {
      publish(engine, 'io.stowage.mirror.tag.deleted', source, `${j.mirror}:${d.tag}`, {
        mirror: j.mirror,
        tag: d.tag,
        digest: d.digest ?? null,
        job: job.id,
        syncJob: j.name,
      });
    }
  }
  const failed = error !== undefined || (report?.failed ?? 0) > 0;
  publish(engine, failed ? 'io.stowage.sync.failed' : 'io.stowage.sync.finished', source, job.id, {
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
  });
}

/** A bundle made, or imported into the store. */
export function publishBundle(
  engine: Publishing,
  source: string,
  kind: 'created' | 'imported',
  bundle: { id: string; [k: string]: unknown },
): void {
  publish(
    engine,
    kind === 'created' ? 'io.stowage.bundle.created' : 'io.stowage.bundle.imported',
    source,
    bundle.id,
    bundle,
  );
}

/** A pull through the registry found the upstream's tag newer than the store's (or the store without it). */
export function publishPullThroughMiss(
  engine: Publishing,
  data: { repository: string; tag?: string | undefined; digest: string; stored: boolean },
): void {
  const subject = `${data.repository}${data.tag ? `:${data.tag}` : `@${data.digest}`}`;
  publish(engine, 'io.stowage.pullthrough.miss', '/stowage/registry', subject, data);
}

/** A version the registry stored as a client pulled it through (the tag new, or moved upstream). */
export function publishPulledThrough(
  engine: Publishing,
  v: StoredVersion,
  before: StoredVersion | undefined,
): void {
  const subject = `${v.repository}:${v.tag}`;
  const previous = before ? (before.sourceDigest ?? before.descriptor.digest) : undefined;
  publish(engine, 'io.stowage.version.stored', '/stowage/registry', subject, {
    repository: v.repository,
    tag: v.tag,
    digest: v.descriptor.digest,
    sourceDigest: v.sourceDigest ?? v.descriptor.digest,
    previousDigest: previous ?? null,
    source: v.source,
    platforms: v.platforms,
    version: v.id,
    kind: 'pull-through',
  });
  if (previous && previous !== v.descriptor.digest) {
    publish(engine, 'io.stowage.tag.moved', '/stowage/registry', subject, {
      repository: v.repository,
      tag: v.tag,
      from: previous,
      to: v.descriptor.digest,
      version: v.id,
      kind: 'pull-through',
    });
  }
}
