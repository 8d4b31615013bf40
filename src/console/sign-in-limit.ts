/**
 * Sign-in attempts limited per client address: after `max` refused tokens within `windowMs`, that
 * address is refused (429) until the oldest of them is older than the window. A right token clears the
 * address's count. Memory is bounded: the least recently seen addresses are forgotten first.
 */
export interface SignInLimitOptions {
  max?: number;
  windowMs?: number;
  /** Addresses remembered at most. */
  clients?: number;
  now?: () => number;
}

export class SignInLimit {
  private readonly failures = new Map<string, number[]>();
  private readonly max: number;
  private readonly windowMs: number;
  private readonly clients: number;
  private readonly now: () => number;

  constructor(opts: SignInLimitOptions = {}) {
    this.max = opts.max ?? 10;
    this.windowMs = opts.windowMs ?? 10 * 60_000;
    this.clients = opts.clients ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  /** Milliseconds the address must wait before its next attempt, or 0 when it may try now. */
  waitFor(client: string): number {
    const recent = this.recent(client);
    if (recent.length < this.max) return 0;
    return Math.max(1, recent[0]! + this.windowMs - this.now());
  }

  refused(client: string): void {
    const recent = this.recent(client);
    recent.push(this.now());
    this.failures.delete(client);
    this.failures.set(client, recent);
    if (this.failures.size > this.clients) this.failures.delete(this.failures.keys().next().value!);
  }

  accepted(client: string): void {
    this.failures.delete(client);
  }

  private recent(client: string): number[] {
    const since = this.now() - this.windowMs;
    return (this.failures.get(client) ?? []).filter((t) => t > since);
  }
}
