import { describe, expect, it } from 'vitest';
import { watchStalls } from './client.js';

/** A body that sends `parts` at their times and, as undici's does, fails its read once `cut` aborts. */
async function* timed(
  parts: { bytes: number; afterMs: number }[],
  cut?: AbortController,
): AsyncGenerator<Uint8Array> {
  for (const p of parts) {
    await new Promise((resolve, reject) => {
      const t = setTimeout(resolve, p.afterMs);
      cut?.signal.addEventListener('abort', () => {
        clearTimeout(t);
        reject(new Error('request aborted'));
      });
    });
    yield new Uint8Array(p.bytes);
  }
}

async function drain(body: AsyncIterable<Uint8Array>, holdMs = 0): Promise<number> {
  let n = 0;
  for await (const c of body) {
    n += c.byteLength;
    if (holdMs) await new Promise((r) => setTimeout(r, holdMs));
  }
  return n;
}

describe('watchStalls', () => {
  const rule = { windowMs: 200, minBytesPerSecond: 1000 };

  it('passes a body that keeps up', async () => {
    const cut = new AbortController();
    const parts = Array.from({ length: 10 }, () => ({ bytes: 100, afterMs: 20 }));
    expect(await drain(watchStalls(timed(parts), rule, cut))).toBe(1000);
    expect(cut.signal.aborted).toBe(false);
  });

  it('passes a body that keeps up over many windows, pauses shorter than a window included', async () => {
    const cut = new AbortController();
    const parts = Array.from({ length: 30 }, (_, i) => ({ bytes: 100, afterMs: i === 15 ? 120 : 20 }));
    expect(await drain(watchStalls(timed(parts), rule, cut))).toBe(3000);
    expect(cut.signal.aborted).toBe(false);
  });

  it('cuts a body that trickles, and one that goes silent', async () => {
    const trickle = new AbortController();
    const slow = Array.from({ length: 20 }, () => ({ bytes: 1, afterMs: 50 }));
    await expect(drain(watchStalls(timed(slow), rule, trickle))).rejects.toThrow(/low-speed limit/);
    expect(trickle.signal.aborted).toBe(true);
    const silent = new AbortController();
    await expect(
      drain(
        watchStalls(
          timed(
            [
              { bytes: 500, afterMs: 0 },
              { bytes: 1, afterMs: 5000 },
            ],
            silent,
          ),
          rule,
          silent,
        ),
      ),
    ).rejects.toThrow(/low-speed limit/);
  });

  it('does not count the time the consumer holds a chunk (a slow disk is not a stalled registry)', async () => {
    const cut = new AbortController();
    const parts = Array.from({ length: 5 }, () => ({ bytes: 200, afterMs: 0 }));
    expect(await drain(watchStalls(timed(parts), rule, cut), 150)).toBe(1000);
  });
});
