import type cliProgressType from 'cli-progress';
import type { ProgressEvent, ProgressListener } from '../core/progress.js';
import { formatBytes } from './format.js';

/** Totals of a transfer, from its events: what the bars and the log lines show. */
class Totals {
  blobs = 0;
  blobsDone = 0;
  bytes = 0;
  private readonly done = new Map<string, number>();
  private readonly started = performance.now();

  add(e: ProgressEvent): void {
    if (e.type === 'plan') {
      this.blobs = e.blobs;
      this.bytes = e.totalBytes;
    } else if (e.type === 'blob-progress') {
      this.done.set(e.digest, e.bytes);
    } else if (e.type === 'blob-done') {
      this.done.set(e.digest, e.size);
      this.blobsDone++;
    }
  }

  get bytesDone(): number {
    let n = 0;
    for (const b of this.done.values()) n += b;
    return n;
  }

  /** Bytes a second so far. */
  get speed(): number {
    const s = (performance.now() - this.started) / 1000;
    return s > 0 ? this.bytesDone / s : 0;
  }

  /** Seconds left at the speed so far, if it can be said. */
  get eta(): number | undefined {
    const left = this.bytes - this.bytesDone;
    return this.speed > 0 && left >= 0 ? left / this.speed : undefined;
  }

  line(): string {
    const pct = this.bytes ? ` (${Math.floor((this.bytesDone / this.bytes) * 100)}%)` : '';
    const eta = this.eta;
    return `progress: ${formatBytes(this.bytesDone)} of ${formatBytes(this.bytes)}${pct}, ${this.blobsDone} of ${this.blobs} blobs, ${formatBytes(this.speed)}/s${eta !== undefined ? `, ${Math.ceil(eta)} s left` : ''}`;
  }
}

/** How often a line is written when stderr is not a terminal (a CI log): STOWAGE_PROGRESS_INTERVAL seconds. */
function logInterval(env: NodeJS.ProcessEnv): number {
  const s = Number(env.STOWAGE_PROGRESS_INTERVAL);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 5000;
}

/**
 * Renders engine progress events on stderr: on a terminal, a bar per blob under one for the whole
 * transfer with its speed and time left; elsewhere (CI logs), one line every few seconds with the
 * same totals, so a long transfer shows it is alive without flooding the log. Returns a stop function.
 */
export async function progressRenderer(
  stream: NodeJS.WriteStream,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ listener: ProgressListener; stop: () => void }> {
  const totals = new Totals();
  if (!stream.isTTY) {
    const timer = setInterval(() => {
      if (totals.bytes > 0) stream.write(`${totals.line()}\n`);
    }, logInterval(env));
    timer.unref();
    return { listener: (e) => totals.add(e), stop: () => clearInterval(timer) };
  }
  // Loaded only for a terminal: it is not needed otherwise.
  const cliProgress = (await import('cli-progress')).default;
  const multi = new cliProgress.MultiBar(
    {
      stream,
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
  const updateTotal = () => {
    const eta = totals.eta;
    total?.update(totals.bytesDone, {
      done: formatBytes(totals.bytesDone),
      extra: `  ${formatBytes(totals.speed)}/s${eta !== undefined ? `  ${Math.ceil(eta)} s left` : ''}`,
    });
  };
  const listener = (e: ProgressEvent) => {
    totals.add(e);
    if (e.type === 'plan') {
      total = multi.create(Math.max(1, e.totalBytes), 0, {
        name: 'total       ',
        done: formatBytes(0),
        size: formatBytes(e.totalBytes),
        extra: '',
      });
    } else if (e.type === 'blob-start') {
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
  const stop = () => {
    if (stopped) return;
    stopped = true;
    multi.stop();
  };
  return { listener, stop };
}
