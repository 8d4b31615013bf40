import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { drained } from './streams.js';

describe('waiting for a stream to drain', () => {
  it('ends when the stream drains, and when it fails instead (a wait on drain alone never would)', async () => {
    let release: () => void = () => {};
    const slow = new Writable({
      highWaterMark: 1,
      write: (_c, _e, cb) => {
        release = cb;
      },
    });
    expect(slow.write('x')).toBe(false);
    const waiting = drained(slow);
    release();
    await waiting;
    const failing = new Writable({ highWaterMark: 1, write: (_c, _e, cb) => cb(new Error('ENOSPC')) });
    failing.on('error', () => {});
    failing.write('x');
    await drained(failing);
    expect(failing.listenerCount('drain')).toBe(0);
  });
});
