/**
 * Progress on stderr for every command that moves blobs (pull, push, copy, sync, export, bundle), in
 * the mode `--progress` names:
 *
 * - tty: a bar per blob under one for the whole transfer, with its speed and time left;
 * - plain: a line of the same totals every few seconds (STOWAGE_PROGRESS_INTERVAL, default 5), for a
 *   CI log: a long transfer shows it is alive without flooding the log;
 * - json: one JSON object a line, the fields of the service's job `progress` events (blobs, blobsDone,
 *   bytes, bytesDone) and the rate and time left, for a wrapper script that draws its own;
 * - none: nothing; auto: tty on a terminal, plain elsewhere (none with -q or --json).
 *
 * The rate and time left are core/rate.ts's, as the service's job events give them.
 */
import { subscribe } from 'node:diagnostics_channel';
import type cliProgressType from 'cli-progress';
import { InvalidArgumentError, Option } from 'commander';
import { printable } from '../core/printable.js';
import type { ProgressEvent, ProgressListener } from '../core/progress.js';
import { type RateFigures, RateWindow } from '../core/rate.js';
import { describeWait, REGISTRY_WAITS_CHANNEL, type RegistryWait } from '../registry/waits.js';
import type { JobProgress } from '../service/job-system.js';
import type { BlobEvent } from '../sync/report.js';
import { formatBytes, formatRate, formatTimeLeft } from './format.js';

export const PROGRESS_MODES = ['auto', 'tty', 'plain', 'json', 'none'] as const;
export type ProgressMode = (typeof PROGRESS_MODES)[number];

export const PROGRESS_HELP = `progress on stderr: ${PROGRESS_MODES.join(', ')} (auto: bars on a terminal, a line every 5 s elsewhere; json: a JSON object a line)`;

export function parseProgressMode(v: string): ProgressMode {
  if ((PROGRESS_MODES as readonly string[]).includes(v)) return v as ProgressMode;
  throw new InvalidArgumentError(`expected one of ${PROGRESS_MODES.join(', ')}`);
}

/** What a snapshot of a transfer says, as the json mode writes it: the service's job progress event. */
export interface ProgressFigures extends JobProgress, RateFigures {}

/** Totals of a transfer, from its events: what the bars, the lines and the JSON objects show. */
export class Totals {
  blobs = 0;
  blobsDone = 0;
  bytes = 0;
  private doneBytes = 0;
  private readonly inFlight = new Map<string, number>();
  private readonly rate: RateWindow;

  constructor(now: () => number = () => performance.now()) {
    this.rate = new RateWindow(now);
  }

  /** An engine event (pull, push, copy, export, bundle). */
  add(e: ProgressEvent): void {
    if (e.type === 'plan') {
      this.blobs = e.blobs;
      this.bytes = e.totalBytes;
    } else if (e.type === 'blob-progress') {
      this.inFlight.set(e.digest, e.bytes);
      this.rate.moved(this.bytesDone);
    } else if (e.type === 'blob-done') {
      this.inFlight.delete(e.digest);
      this.doneBytes += e.size;
      this.blobsDone++;
      this.rate.moved(this.bytesDone);
    }
  }

  /** A sync event: a tag plans its blobs as it goes, and each is fetched or found in the store. */
  addBlob(e: BlobEvent): void {
    if (e.type === 'planned') {
      this.blobs++;
      this.bytes += e.size;
    } else {
      this.doneBytes += e.size;
      this.blobsDone++;
      this.rate.moved(this.bytesDone);
    }
  }

  get bytesDone(): number {
    let n = this.doneBytes;
    for (const b of this.inFlight.values()) n += b;
    return n;
  }

  get stalled(): boolean {
    return this.rate.stalled(this.bytes);
  }

  /** Bytes a second over the window, to now (so a transfer that slows down shows it). */
  get speed(): number {
    return this.rate.speed(this.bytes);
  }

  /** Seconds left at the recent speed, if it can be said. */
  get eta(): number | undefined {
    return this.rate.eta(this.bytes);
  }

  figures(): ProgressFigures {
    return {
      blobs: this.blobs,
      blobsDone: this.blobsDone,
      bytes: this.bytes,
      bytesDone: this.bytesDone,
      ...this.rate.figures(this.bytes),
    };
  }

  /** "1.2 MB of 3.8 MB (31%), 1 of 4 blobs, 512.0 kB/s, 5 s left" */
  summary(): string {
    const pct = this.bytes ? ` (${Math.floor((this.bytesDone / this.bytes) * 100)}%)` : '';
    const pace = this.stalled ? 'stalled' : formatRate(this.speed);
    return `${formatBytes(this.bytesDone)} of ${formatBytes(this.bytes)}${pct}, ${this.blobsDone} of ${this.blobs} blobs, ${pace}, ${formatTimeLeft(this.eta)}`;
  }
}

/** A renderer: a listener for engine events, one for sync's, and stop() once the command is done. */
export interface ProgressRenderer {
  listener: ProgressListener;
  blobListener: (e: BlobEvent) => void;
  stop: () => void;
}

/** How often a line is written in plain mode: STOWAGE_PROGRESS_INTERVAL seconds. */
function logInterval(env: NodeJS.ProcessEnv, fallbackMs: number): number {
  const s = Number(env.STOWAGE_PROGRESS_INTERVAL);
  return Number.isFinite(s) && s > 0 ? s * 1000 : fallbackMs;
}

/** The mode in effect: auto resolved by the stream; -q and --json silence auto (not a mode asked for). */
export function effectiveMode(
  asked: ProgressMode | undefined,
  stream: { isTTY?: boolean },
  opts: { quiet?: boolean | undefined; json?: boolean | undefined } = {},
): Exclude<ProgressMode, 'auto'> {
  const mode = asked ?? 'auto';
  if (mode !== 'auto') return mode;
  if (opts.quiet || opts.json) return 'none';
  return stream.isTTY ? 'tty' : 'plain';
}

/**
 * Renders progress on `stream` in `mode` (see the top of the file); undefined for none. `quiet` and
 * `json` are the command's -q and --json: they silence auto, not a mode given with --progress.
 */
async function progressRenderer(
  stream: NodeJS.WriteStream,
  opts: { mode?: ProgressMode | undefined; quiet?: boolean | undefined; json?: boolean | undefined },
): Promise<ProgressRenderer | undefined> {
  const mode = effectiveMode(opts.mode, stream, opts);
  const env = process.env;
  if (mode === 'none') return undefined;
  if (mode === 'json') return jsonRenderer(stream, env);
  if (mode === 'plain') return plainRenderer(stream, env);
  return barRenderer(stream);
}

function plainRenderer(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv): ProgressRenderer {
  const totals = new Totals();
  const timer = setInterval(
    () => {
      if (totals.bytes > 0) stream.write(`progress: ${totals.summary()}\n`);
    },
    logInterval(env, 5000),
  );
  timer.unref();
  return {
    listener: (e) => totals.add(e),
    blobListener: (e) => totals.addBlob(e),
    stop: () => clearInterval(timer),
  };
}

/**
 * One object a line: on each blob planned or done at once, and while bytes flow at most every
 * STOWAGE_PROGRESS_INTERVAL seconds (default a quarter of a second); a last one when the command ends.
 */
function jsonRenderer(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv): ProgressRenderer {
  const totals = new Totals();
  const every = logInterval(env, 250);
  let last = 0;
  let stopped = false;
  const write = () => {
    last = performance.now();
    stream.write(`${JSON.stringify({ type: 'progress', ...totals.figures() })}\n`);
  };
  const maybe = (now: boolean) => {
    if (!stopped && (now || performance.now() - last >= every)) write();
  };
  // A stalled transfer still says so, without a new event to prompt it.
  const timer = setInterval(() => maybe(false), every);
  timer.unref();
  return {
    listener: (e) => {
      totals.add(e);
      maybe(e.type === 'plan' || e.type === 'blob-done');
    },
    blobListener: (e) => {
      totals.addBlob(e);
      maybe(true);
    },
    stop: () => {
      if (stopped) return;
      clearInterval(timer);
      if (totals.blobs > 0) write();
      stopped = true;
    },
  };
}

async function barRenderer(stream: NodeJS.WriteStream): Promise<ProgressRenderer> {
  const totals = new Totals();
  // Loaded only for a terminal: it is not needed otherwise.
  const cliProgress = (await import('cli-progress')).default;
  const multi = new cliProgress.MultiBar(
    {
      stream,
      // Drawn when asked for (--progress tty) into a pipe too: a wrapper that reads a pseudo-terminal.
      noTTYOutput: true,
      notTTYSchedule: 1000,
      clearOnComplete: false,
      hideCursor: true,
      format: ' {name} [{bar}] {percentage}% {done}/{size}{extra}',
      barsize: 30,
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  let total: cliProgressType.SingleBar | undefined;
  const bars = new Map<string, cliProgressType.SingleBar>();
  const totalBar = () => {
    total ??= multi.create(Math.max(1, totals.bytes), 0, {
      name: 'total       ',
      done: formatBytes(0),
      size: formatBytes(totals.bytes),
      extra: '',
    });
    return total;
  };
  const updateTotal = () => {
    const bar = totalBar();
    bar.setTotal(Math.max(1, totals.bytes));
    const pace = totals.stalled ? 'stalled' : formatRate(totals.speed);
    bar.update(totals.bytesDone, {
      done: formatBytes(totals.bytesDone),
      size: formatBytes(totals.bytes),
      extra: `  ${pace}  ${formatTimeLeft(totals.eta)}`,
    });
  };
  const listener = (e: ProgressEvent) => {
    totals.add(e);
    if (e.type === 'plan') updateTotal();
    else if (e.type === 'blob-start') {
      bars.set(
        e.digest,
        multi.create(e.size, 0, {
          name: e.digest.slice(7, 19),
          done: formatBytes(0),
          size: formatBytes(e.size),
          extra: '',
        }),
      );
    } else if (e.type === 'blob-progress' || e.type === 'blob-done') {
      const bytes = e.type === 'blob-done' ? e.size : e.bytes;
      bars.get(e.digest)?.update(bytes, { done: formatBytes(bytes) });
      updateTotal();
    }
  };
  let stopped = false;
  return {
    listener,
    // Sync plans blobs tag by tag: the total grows, and one bar shows them (a bar a blob would be
    // thousands for a namespace).
    blobListener: (e) => {
      totals.addBlob(e);
      updateTotal();
    },
    stop: () => {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}

/** The command-line side: `--progress MODE` on a command, and the renderer its options ask for. */
export function progressOption(): Option {
  return new Option('--progress <mode>', PROGRESS_HELP).argParser(parseProgressMode);
}

export function progressFor(opts: {
  progress?: ProgressMode | undefined;
  quiet?: boolean | undefined;
  json?: boolean | undefined;
}): Promise<ProgressRenderer | undefined> {
  return progressRenderer(process.stderr, { mode: opts.progress, quiet: opts.quiet, json: opts.json });
}

/**
 * Says on stderr what a registry wait is for and when the next try comes (see registry/waits.ts): a
 * line for a person, or with --progress json a `{"type":"wait",...}` object; nothing with -q or
 * --progress none. Called once the command's options are known.
 */
export function reportWaits(opts: {
  quiet?: boolean | undefined;
  progress?: ProgressMode | undefined;
}): void {
  if (opts.quiet || opts.progress === 'none') return;
  const json = opts.progress === 'json';
  // Requests in parallel to one registry (HTTPS and HTTP probes, blobs) wait together: said once.
  const said = new Map<string, number>();
  subscribe(REGISTRY_WAITS_CHANNEL, (m) => {
    const w = m as RegistryWait;
    const key = `${w.host} ${w.reason} ${w.attempt}`;
    const now = performance.now();
    if ((said.get(key) ?? Number.NEGATIVE_INFINITY) > now - Math.max(1000, w.delayMs)) return;
    said.set(key, now);
    process.stderr.write(
      json
        ? `${JSON.stringify({ type: 'wait', ...w })}\n`
        : `stowage: waiting: ${printable(describeWait(w))}\n`,
    );
  });
}
