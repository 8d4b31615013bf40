/**
 * The service's jobs on one machine (the JobSystem of job-system.ts, in process): a bounded queue run a few at a time, each job cancellable through its
 * AbortSignal, its events kept for Server-Sent Events subscribers (replayed from the start, then
 * live), and the history written to a JSON file so a restart keeps it (jobs that were queued or
 * running when the process stopped are shown as failed). Identical requests made while a job for
 * them is queued or running share that job.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Cron } from 'croner';
import { writeFileAtomic } from '../core/atomic.js';
import { StowageError, toStowageError } from '../errors.js';
import {
  emptyCounts,
  type Job,
  type JobEvent,
  JobFailure,
  type JobFilter,
  type JobKind,
  type JobState,
  type JobSystem,
  progressReporter,
  type Runner,
  type Schedule,
  summary,
  syncKey,
  TERMINAL,
} from './job-system.js';

export interface JobManagerOptions {
  /** The history file (JSON); none: history in memory only. */
  stateFile?: string | undefined;
  concurrency: number;
  maxQueued: number;
  keep: number;
  runners: Record<JobKind, Runner>;
  onChange?: ((job: Job) => void) | undefined;
  /** Takes the server's own paths out of results and error messages before anyone sees them. */
  redact?: ((text: string) => string) | undefined;
}

interface Live {
  events: JobEvent[];
  listeners: Set<(e: JobEvent) => void>;
  controller: AbortController;
  key?: string | undefined;
  /** The last sequence number given. */
  seq: number;
}

/** Events kept per job for replay; progress events past this are coalesced. */
const MAX_EVENTS = 2000;

export class JobManager implements JobSystem {
  readonly mode = 'in-process' as const;
  private crons: Cron[] = [];
  private readonly jobs = new Map<string, Job>();
  private readonly live = new Map<string, Live>();
  private readonly byKey = new Map<string, string>();
  private readonly queue: string[] = [];
  private running = 0;
  private accepting = true;
  private saving: Promise<void> = Promise.resolve();
  private saveScheduled = false;
  private idle: (() => void)[] = [];

  constructor(private readonly opts: JobManagerOptions) {}

  /** Loads the history; jobs a previous process left queued or running are marked failed. */
  async load(): Promise<void> {
    const file = this.opts.stateFile;
    if (!file) return;
    await mkdir(dirname(file), { recursive: true });
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw toStowageError(e);
    }
    let list: Job[];
    try {
      list = JSON.parse(text) as Job[];
      if (!Array.isArray(list)) throw new Error('not a list');
    } catch (e) {
      throw new StowageError(
        'INVALID_CONFIG',
        `the job history ${file} is not valid JSON (${(e as Error).message}); move it aside to start afresh`,
      );
    }
    const now = new Date().toISOString();
    for (const j of list) {
      if (!TERMINAL.has(j.state)) {
        j.state = 'failed';
        j.finishedAt = now;
        j.error = {
          code: 'INTERRUPTED',
          message: 'the service stopped while this job was queued or running',
        };
      }
      this.jobs.set(j.id, j);
    }
    this.save();
  }

  /** Queues a job, or returns the queued or running one with the same key. */
  submit(kind: JobKind, request: unknown, requestedBy: string, key?: string): { job: Job; shared: boolean } {
    if (!this.accepting)
      throw new StowageError('UNAVAILABLE', 'the service is shutting down; try again later');
    if (key) {
      const id = this.byKey.get(key);
      const existing = id ? this.jobs.get(id) : undefined;
      if (existing && !TERMINAL.has(existing.state)) return { job: existing, shared: true };
    }
    if (this.queue.length >= this.opts.maxQueued) {
      throw new StowageError(
        'RATE_LIMITED',
        `${this.queue.length} jobs are waiting already (server.max-queued); try again when some have finished`,
      );
    }
    const job: Job = {
      id: `${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`,
      kind,
      state: 'queued',
      request,
      requestedBy,
      createdAt: new Date().toISOString(),
      progress: { blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 },
    };
    this.jobs.set(job.id, job);
    this.live.set(job.id, {
      events: [],
      listeners: new Set(),
      controller: new AbortController(),
      key,
      seq: 0,
    });
    if (key) this.byKey.set(key, job.id);
    this.queue.push(job.id);
    this.emit(job.id, 'state', { state: job.state });
    this.changed(job);
    this.pump();
    return { job, shared: false };
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  /** Newest first. */
  list(filter: JobFilter = {}): Job[] {
    return [...this.jobs.values()]
      .filter((j) => (!filter.kind || j.kind === filter.kind) && (!filter.state || j.state === filter.state))
      .reverse()
      .slice(0, filter.limit ?? Number.POSITIVE_INFINITY);
  }

  counts(): Record<JobKind, Record<JobState, number>> {
    const out = emptyCounts();
    for (const j of this.jobs.values()) out[j.kind][j.state]++;
    return out;
  }

  /** Cancels a queued or running job; a running one ends when its operation has cleaned up. */
  cancel(id: string): Job {
    const job = this.jobs.get(id);
    if (!job) throw new StowageError('NOT_FOUND', `no job ${id}`);
    if (TERMINAL.has(job.state)) return job;
    const live = this.live.get(id)!;
    if (job.state === 'queued') {
      this.queue.splice(this.queue.indexOf(id), 1);
      this.finish(job, 'canceled', undefined, { code: 'ABORTED', message: 'canceled before it started' });
    } else {
      live.controller.abort();
    }
    return job;
  }

  /**
   * Events of a job: those so far, then live ones until the job ends. `from` skips events up to
   * that sequence number (SSE Last-Event-ID). Returns an unsubscribe function.
   */
  subscribe(id: string, from: number, listener: (e: JobEvent) => void, onEnd: () => void): () => void {
    const job = this.jobs.get(id);
    if (!job) throw new StowageError('NOT_FOUND', `no job ${id}`);
    const live = this.live.get(id);
    if (!live) {
      // A job from the history: its outcome is all there is.
      listener({ seq: 1, type: 'end', data: summary(job) });
      onEnd();
      return () => {};
    }
    for (const e of live.events) if (e.seq > from) listener(e);
    if (TERMINAL.has(job.state)) {
      onEnd();
      return () => {};
    }
    const l = (e: JobEvent) => {
      listener(e);
      if (e.type === 'end') onEnd();
    };
    live.listeners.add(l);
    return () => live.listeners.delete(l);
  }

  /** Cron schedules in this process (`protect`: a run still going when the next fires is shared). */
  schedule(schedules: Schedule[], onError: (job: string, e: Error) => void): void {
    for (const c of this.crons) c.stop();
    this.crons = schedules.map(
      (s) =>
        new Cron(s.cron, { protect: true }, () => {
          try {
            this.submit('sync', { jobs: [s.job] }, 'schedule', syncKey([s.job]));
          } catch (e) {
            onError(s.job, e as Error);
          }
        }),
    );
  }

  /** Stops taking jobs, cancels the queued ones and aborts the running ones; resolves when all ended. */
  async shutdown(): Promise<void> {
    this.accepting = false;
    for (const c of this.crons) c.stop();
    for (const id of this.queue.splice(0)) {
      const job = this.jobs.get(id)!;
      this.finish(job, 'canceled', undefined, { code: 'ABORTED', message: 'the service shut down' });
    }
    for (const [id, live] of this.live) if (this.jobs.get(id)?.state === 'running') live.controller.abort();
    if (this.running > 0) await new Promise<void>((r) => this.idle.push(r));
    await this.flush();
  }

  /** Waits until the history file holds every change so far. */
  async flush(): Promise<void> {
    await this.saving;
    if (this.saveScheduled) await this.write();
  }

  private pump(): void {
    while (this.running < this.opts.concurrency && this.queue.length > 0) {
      const id = this.queue.shift()!;
      const job = this.jobs.get(id)!;
      this.running++;
      void this.start(job).finally(() => {
        this.running--;
        if (this.running === 0) for (const r of this.idle.splice(0)) r();
        this.pump();
      });
    }
  }

  private async start(job: Job): Promise<void> {
    const live = this.live.get(job.id)!;
    job.state = 'running';
    job.startedAt = new Date().toISOString();
    this.emit(job.id, 'state', { state: job.state });
    this.changed(job);
    try {
      const result = await this.opts.runners[job.kind]({
        job,
        signal: live.controller.signal,
        emit: (type, data) => this.emit(job.id, type, data),
        progress: progressReporter(job, (type, data) => this.emit(job.id, type, data)),
      });
      if (live.controller.signal.aborted) {
        this.finish(job, 'canceled', undefined, { code: 'ABORTED', message: 'canceled' });
      } else {
        this.finish(job, 'succeeded', result);
      }
    } catch (e) {
      const err = toStowageError(e);
      if (live.controller.signal.aborted) {
        this.finish(job, 'canceled', undefined, {
          code: 'ABORTED',
          message: 'canceled; nothing partial was left',
        });
      } else {
        const result = e instanceof JobFailure ? e.result : undefined;
        this.finish(job, 'failed', result, { code: err.code, message: err.message });
      }
    }
  }

  private finish(job: Job, state: JobState, result?: unknown, error?: Job['error']): void {
    job.state = state;
    job.finishedAt = new Date().toISOString();
    const redact = this.opts.redact;
    if (result !== undefined) job.result = redact ? JSON.parse(redact(JSON.stringify(result))) : result;
    if (error) job.error = redact ? { ...error, message: redact(error.message) } : error;
    const live = this.live.get(job.id);
    if (live?.key && this.byKey.get(live.key) === job.id) this.byKey.delete(live.key);
    this.emit(job.id, 'state', { state });
    this.emit(job.id, 'end', summary(job));
    this.changed(job);
    this.trim();
  }

  private emit(id: string, type: string, data: unknown): void {
    const live = this.live.get(id);
    if (!live) return;
    const e: JobEvent = { seq: ++live.seq, type, data };
    // Progress is a running total: past the cap, the newest one replaces the last kept.
    if (live.events.length >= MAX_EVENTS && type === 'progress' && live.events.at(-1)?.type === 'progress') {
      live.events[live.events.length - 1] = e;
    } else {
      live.events.push(e);
    }
    for (const l of [...live.listeners]) l(e);
  }

  private changed(job: Job): void {
    this.opts.onChange?.(job);
    this.save();
  }

  /** Drops the oldest finished jobs beyond `keep`. */
  private trim(): void {
    const finished = [...this.jobs.values()].filter((j) => TERMINAL.has(j.state));
    for (const j of finished.slice(0, Math.max(0, finished.length - this.opts.keep))) {
      this.jobs.delete(j.id);
      this.live.delete(j.id);
    }
  }

  private save(): void {
    if (!this.opts.stateFile || this.saveScheduled) return;
    this.saveScheduled = true;
    // Changes made while a write runs go into the next one together.
    this.saving = this.saving.then(() => this.write());
  }

  private async write(): Promise<void> {
    this.saveScheduled = false;
    const list = [...this.jobs.values()];
    try {
      await writeFileAtomic(this.opts.stateFile!, `${JSON.stringify(list)}\n`);
    } catch {
      // The history is best effort: a full disk must not fail the jobs themselves.
    }
  }
}
