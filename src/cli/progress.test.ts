import { describe, expect, it } from 'vitest';
import { describeWait } from '../registry/waits.js';
import { formatBytes, formatRate, formatTimeLeft, plural } from './format.js';
import { effectiveMode, parseProgressMode, Totals } from './progress.js';

describe('figures a person reads', () => {
  it('writes sizes in decimal units, whole bytes below 1 kB and one decimal above, rates rounded', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(34.594634621251615)).toBe('35 B');
    expect(formatRate(34.594634621251615)).toBe('35 B/s');
    expect(formatBytes(1000)).toBe('1.0 kB');
    expect(formatBytes(999_960)).toBe('1.0 MB');
    expect(formatBytes(30_000_000)).toBe('30.0 MB');
    expect(formatBytes(4.5e12)).toBe('4.5 TB');
    expect(formatBytes(Number.NaN)).toBe('-');
    expect(plural(1, 'layer')).toBe('1 layer');
    expect(plural(3, 'repository', 'repositories')).toBe('3 repositories');
  });

  it('says time left in seconds, minutes or hours, and unknown when it cannot be said', () => {
    expect(formatTimeLeft(4.2)).toBe('5 s left');
    expect(formatTimeLeft(600)).toBe('10 min left');
    expect(formatTimeLeft(3 * 3600 + 20 * 60)).toBe('3 h 20 min left');
    expect(formatTimeLeft(undefined)).toBe('time left unknown');
  });

  it('says what a registry wait is for and when the next try comes', () => {
    expect(
      describeWait({ host: '127.0.0.1:5000', reason: 'ECONNREFUSED', attempt: 2, attempts: 6, delayMs: 250 }),
    ).toBe('127.0.0.1:5000: connection refused; trying again in 0.3 s (2 of 6)');
    expect(describeWait({ host: 'r.test', reason: '503', attempt: 3, attempts: 6, delayMs: 2000 })).toBe(
      'r.test: answered 503; trying again in 2.0 s (3 of 6)',
    );
    expect(describeWait({ host: 'r.test', reason: '429', attempt: 2, attempts: 6, delayMs: 30_000 })).toBe(
      'r.test: answered 429 Too Many Requests; trying again in 30 s (2 of 6)',
    );
  });
});

describe('progress totals', () => {
  const clock = () => {
    let t = 0;
    return { now: () => t, advance: (ms: number) => (t += ms) };
  };

  it('takes the rate over the last seconds, so a transfer that slows down shows it', () => {
    const c = clock();
    const totals = new Totals(c.now);
    totals.add({ type: 'plan', blobs: 2, totalBytes: 300_000_000 });
    // 100 MB/s for 20 s would be 2 GB: here 10 MB/s for 10 s, then 1 MB/s for 12 s.
    for (let i = 1; i <= 10; i++) {
      c.advance(1000);
      totals.add({ type: 'blob-progress', digest: 'sha256:a', bytes: i * 10_000_000, size: 200_000_000 });
    }
    expect(Math.round(totals.speed)).toBe(10_000_000);
    for (let i = 1; i <= 12; i++) {
      c.advance(1000);
      totals.add({
        type: 'blob-progress',
        digest: 'sha256:a',
        bytes: 100_000_000 + i * 1_000_000,
        size: 200_000_000,
      });
    }
    // The window holds the slow seconds only (plus the sample before them): about 1 MB/s, not the mean since the start.
    expect(totals.speed).toBeLessThan(2_500_000);
    expect(totals.speed).toBeGreaterThan(900_000);
    expect(totals.eta).toBeGreaterThan(80);
    expect(totals.summary()).toMatch(
      /^112\.0 MB of 300\.0 MB \(37%\), 0 of 2 blobs, [\d.]+ MB\/s, \d+ (s|min) left$/,
    );
  });

  it('calls a transfer with no bytes for a few seconds stalled, time left unknown instead of growing', () => {
    const c = clock();
    const totals = new Totals(c.now);
    totals.add({ type: 'plan', blobs: 1, totalBytes: 10_000_000 });
    c.advance(1000);
    totals.add({ type: 'blob-progress', digest: 'sha256:a', bytes: 1_000_000, size: 10_000_000 });
    expect(totals.eta).toBeCloseTo(9, 0);
    c.advance(5000);
    expect(totals.stalled).toBe(true);
    expect(totals.eta).toBeUndefined();
    expect(totals.figures()).toMatchObject({
      bytesDone: 1_000_000,
      bytesPerSecond: 0,
      secondsLeft: null,
      stalled: true,
    });
    expect(totals.summary()).toBe('1.0 MB of 10.0 MB (10%), 0 of 1 blobs, stalled, time left unknown');
    c.advance(1000);
    totals.add({ type: 'blob-done', digest: 'sha256:a', size: 10_000_000 });
    expect(totals.stalled).toBe(false);
    expect(totals.figures()).toMatchObject({
      blobs: 1,
      blobsDone: 1,
      bytes: 10_000_000,
      bytesDone: 10_000_000,
      secondsLeft: 0,
    });
  });

  it("counts sync's blobs as tags plan them and as they are fetched or found in the store", () => {
    const totals = new Totals();
    totals.addBlob({ type: 'planned', digest: 'sha256:a', size: 10 });
    totals.addBlob({ type: 'planned', digest: 'sha256:b', size: 20 });
    totals.addBlob({ type: 'cached', digest: 'sha256:a', size: 10 });
    totals.addBlob({ type: 'fetched', digest: 'sha256:b', size: 20 });
    expect(totals.figures()).toMatchObject({ blobs: 2, blobsDone: 2, bytes: 30, bytesDone: 30 });
  });
});

describe('progress modes', () => {
  it('resolves auto by the stream, silenced by -q and --json, and never overrides a mode asked for', () => {
    expect(effectiveMode(undefined, { isTTY: true })).toBe('tty');
    expect(effectiveMode('auto', { isTTY: false })).toBe('plain');
    expect(effectiveMode(undefined, { isTTY: true }, { quiet: true })).toBe('none');
    expect(effectiveMode(undefined, { isTTY: false }, { json: true })).toBe('none');
    expect(effectiveMode('json', { isTTY: false }, { json: true })).toBe('json');
    expect(effectiveMode('plain', { isTTY: true }, { quiet: true })).toBe('plain');
    expect(parseProgressMode('json')).toBe('json');
    expect(() => parseProgressMode('bars')).toThrow(/auto, tty, plain, json, none/);
  });
});
