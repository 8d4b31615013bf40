/**
 * Bundles made by the service (POST /v1/bundles): the same planning and writing as `stowage bundle
 * create`, the file kept as a rendition (on this disk, or in the shared bucket for replicas) under the
 * bundle's id, so any replica serves its download and a bundle asked for twice is written once.
 */
import { unlink, writeFile } from 'node:fs/promises';
import type { BundleResult } from '../bundle/create.js';
import type { ImportResult } from '../bundle/import.js';
import type { VersionChoice } from '../bundle/manifest.js';
import { StowageError } from '../errors.js';
import type { Rendition } from '../store/renditions.js';
import type { Engine } from './engine.js';
import { jobSource, publishBundle, publishRefusal } from './events.js';
import type { JobRun } from './job-system.js';
import { withSpooled } from './operations.js';

/** Renditions of bundles are kept apart from versions' under this name. */
const BUNDLES = 'bundles';

export interface BundleRequest {
  /** A recorded bundle's id (or a prefix), or a time: never a path on the server. */
  since?: string | undefined;
  repository?: string | undefined;
  tag?: string | undefined;
  versions?: VersionChoice | undefined;
  jobs?: string[] | undefined;
}

export type ServiceBundle = Omit<BundleResult, 'files'> & { file: string };

const hex12 = (id: string) => id.slice(7, 19);

/** The kept file of a bundle the service made, if it is still kept. */
export function keptBundle(engine: Engine, id: string): Promise<Rendition | undefined> {
  if (!/^(sha256:)?[0-9a-f]{12,64}$/.test(id)) return Promise.resolve(undefined);
  return engine.renditions.get(BUNDLES, id.replace(/^sha256:/, '').slice(0, 12));
}

export function jobsFor(engine: Engine, names: string[] | undefined) {
  return (names ?? []).map((name) => {
    const job = engine.config.jobs.find((j) => j.name === name);
    if (!job) throw new StowageError('INVALID_ARGUMENT', `no sync job "${name}" is configured`);
    return job;
  });
}

export async function runBundle(engine: Engine, req: BundleRequest, run: JobRun): Promise<ServiceBundle> {
  const { createBundle, planBundle } = await import('../bundle/create.js');
  const filter = {
    versions: req.versions ?? 'all',
    repository: req.repository,
    tag: req.tag,
    jobs: jobsFor(engine, req.jobs),
  };
  const planned = await planBundle(engine.store, { since: req.since, filter, sinceFiles: false });
  const name = hex12(planned.id);
  const file = `bundle-${name}.tar`;
  const kept = await engine.renditions.get(BUNDLES, name);
  const manifest = planned.manifest;
  const summary = {
    id: planned.id,
    versions: manifest.versions.length,
    blobs: planned.carried.length,
    bytes: planned.carried.reduce((n, b) => n + b.size, 0),
    assumes: manifest.assumes.length,
    bases: manifest.bases,
    skipped: planned.skipped,
    signed: false,
    file,
  };
  // Reproducible: the same store state and request make the same bytes, so one kept is the one asked for.
  if (kept) return { ...summary, sha256: kept.sha256, size: kept.size };
  const path = await engine.renditions.workPath(BUNDLES, name);
  const progress = { blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 };
  const made = await createBundle(
    engine.store,
    {
      output: path,
      recordAs: file,
      filter,
      signal: run.signal,
      onProgress: (e) => {
        if (e.type === 'plan') {
          progress.blobs = e.blobs;
          progress.bytes = e.totalBytes;
        } else if (e.type === 'blob-done') {
          progress.blobsDone++;
          progress.bytesDone += e.size;
        } else return;
        run.progress(progress);
      },
    },
    planned,
  );
  await engine.renditions.keep(BUNDLES, name, { path, size: made.size, sha256: made.sha256 });
  const result = { ...summary, sha256: made.sha256, size: made.size };
  publishBundle(engine, jobSource(run.job), 'created', { ...result, job: run.job.id });
  return result;
}

export type ImportedBundle = ImportResult;

/**
 * A bundle uploaded (POST /v1/bundles/imports) imported into the store: spooled within max-upload, its
 * signature (base64, as `cosign sign-blob` writes it) judged by the service's trust policy as
 * `stowage bundle import --policy` judges NAME.sig, every blob checked on its way in.
 */
export async function importUploadedBundle(
  engine: Engine,
  body: AsyncIterable<Uint8Array>,
  opts: {
    limit: number;
    signature?: string | undefined;
    requestedBy: string;
    signal?: AbortSignal | undefined;
  },
): Promise<ImportedBundle> {
  const { importBundles } = await import('../bundle/import.js');
  return withSpooled(
    engine,
    body,
    { limit: opts.limit, what: 'bundle', signal: opts.signal },
    async (spool) => {
      const named = (text: string) => text.replaceAll(spool, 'the uploaded bundle');
      try {
        if (opts.signature) await writeFile(`${spool}.sig`, `${opts.signature}\n`, { mode: 0o600 });
        const [r] = await importBundles(
          [{ name: spool, parts: [spool] }],
          { store: engine.store },
          {
            policy: await engine.ctx.policy(),
            tmpDir: engine.tmpDir,
            signal: opts.signal,
          },
        );
        const result = { ...r!, name: 'the uploaded bundle' };
        publishBundle(engine, '/stowage/api', 'imported', { ...result, requestedBy: opts.requestedBy });
        return result;
      } catch (e) {
        if (!(e instanceof StowageError)) throw e;
        if (e.code === 'POLICY_REJECTED') {
          publishRefusal(engine, '/stowage/api', {
            reference: 'the uploaded bundle',
            reason: named(e.message),
            where: 'bundle',
          });
        }
        throw new StowageError(e.code, named(e.message), { cause: e });
      } finally {
        await unlink(`${spool}.sig`).catch(() => {});
      }
    },
  );
}
