/**
 * A transfer's rate and time left, as the CLI's progress and the service's job events both give them:
 * a moving average over the last seconds, not the mean since the start, so time left follows the
 * transfer as it is now; while nothing arrives the transfer is "stalled" and time left is unknown
 * rather than growing.
 */

/** The rate is measured over this much of the recent past. */
const RATE_WINDOW_MS = 10_000;
/** No byte for this long: stalled (time left unknown). */
const STALLED_AFTER_MS = 3_000;

/** The rate part of a progress snapshot (the CLI's `--progress=json` lines, the service's progress events). */
export interface RateFigures {
  /** Bytes a second over the last seconds (0 while stalled or before the first bytes). */
  bytesPerSecond: number;
  /** Seconds left at that rate; null when it cannot be said (stalled, or nothing known yet). */
  secondsLeft: number | null;
  stalled: boolean;
}

/** Samples of bytes done over time, and what they say about the rate. */
export class RateWindow {
  /** (time, bytesDone) samples over the window, oldest first. */
  private readonly samples: [number, number][] = [];
  private lastChange: number;
  private done = 0;

  constructor(private readonly now: () => number = () => performance.now()) {
    this.lastChange = now();
    this.samples.push([this.lastChange, 0]);
  }

  /** Something arrived: the bytes done so far (a running total). */
  moved(bytesDone: number): void {
    const t = this.now();
    this.done = bytesDone;
    this.lastChange = t;
    this.samples.push([t, bytesDone]);
    while (this.samples.length > 2 && t - this.samples[1]![0] > RATE_WINDOW_MS) this.samples.shift();
  }

  /** Nothing arrived for a while, with bytes still to come. */
  stalled(total: number): boolean {
    return this.done < total && this.now() - this.lastChange > STALLED_AFTER_MS;
  }

  /** Bytes a second over the window, to now (so a transfer that slows down shows it). */
  speed(total: number): number {
    if (this.stalled(total)) return 0;
    const [t0, b0] = this.samples[0]!;
    const s = (this.now() - t0) / 1000;
    return s > 0 ? (this.done - b0) / s : 0;
  }

  /** Seconds left at the recent speed, if it can be said. */
  eta(total: number): number | undefined {
    const left = total - this.done;
    const speed = this.speed(total);
    if (left <= 0) return total > 0 ? 0 : undefined;
    return speed > 0 ? left / speed : undefined;
  }

  figures(total: number): RateFigures {
    const eta = this.eta(total);
    return {
      bytesPerSecond: Math.round(this.speed(total)),
      secondsLeft: eta === undefined ? null : Math.ceil(eta),
      stalled: this.stalled(total),
    };
  }
}
