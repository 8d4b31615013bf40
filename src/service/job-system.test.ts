import { describe, expect, it } from 'vitest';
import { type Job, progressReporter } from './job-system.js';

function job(): Job {
  return {
    id: 'j1',
    kind: 'pull',
    state: 'running',
    progress: { blobs: 0, blobsDone: 0, bytes: 0, bytesDone: 0 },
    createdAt: new Date(0).toISOString(),
    request: {},
  } as unknown as Job;
}

describe('progressReporter (the job systems’ progress events)', () => {
  it('keeps the job’s totals and emits them with the rate and time left the CLI gives', () => {
    let t = 0;
    const events: unknown[] = [];
    const j = job();
    const report = progressReporter(
      j,
      (type, data) => events.push({ type, data }),
      () => t,
    );
    report({ blobs: 2, bytes: 10_000_000 });
    t = 1000;
    report({ bytesDone: 1_000_000 });
    t = 2000;
    report({ bytesDone: 2_000_000, blobsDone: 1 });
    expect(j.progress).toEqual({ blobs: 2, blobsDone: 1, bytes: 10_000_000, bytesDone: 2_000_000 });
    expect(events.at(-1)).toEqual({
      type: 'progress',
      data: {
        blobs: 2,
        blobsDone: 1,
        bytes: 10_000_000,
        bytesDone: 2_000_000,
        bytesPerSecond: 1_000_000,
        secondsLeft: 8,
        stalled: false,
      },
    });
    // Nothing new for longer than the stall limit: no rate, time left unknown, said as stalled.
    t = 6000;
    report({ blobsDone: 1 });
    expect(events.at(-1)).toMatchObject({
      data: { bytesDone: 2_000_000, bytesPerSecond: 0, secondsLeft: null, stalled: true },
    });
    // Done: nothing left.
    t = 7000;
    report({ bytesDone: 10_000_000, blobsDone: 2 });
    expect(events.at(-1)).toMatchObject({ data: { secondsLeft: 0, stalled: false } });
  });
});
