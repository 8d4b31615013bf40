import { describe, expect, it } from 'vitest';
import { Limiter, mapLimited } from './limiter.js';

describe('mapLimited', () => {
  it('maps every item in order with no more than the limit under way', async () => {
    let running = 0;
    let most = 0;
    const out = await mapLimited(
      Array.from({ length: 50 }, (_, i) => i),
      4,
      async (i) => {
        running++;
        most = Math.max(most, running);
        await new Promise((r) => setTimeout(r, (i * 7) % 5));
        running--;
        return i * 2;
      },
    );
    expect(out).toEqual(Array.from({ length: 50 }, (_, i) => i * 2));
    expect(most).toBe(4);
    expect(await mapLimited([], 4, async () => 1)).toEqual([]);
  });

  it('fails with the first failure, and takes no item after it', async () => {
    const seen: number[] = [];
    await expect(
      mapLimited([1, 2, 3, 4, 5, 6], 2, async (i) => {
        seen.push(i);
        if (i === 2) throw new Error('two');
        await new Promise((r) => setTimeout(r, 5));
        return i;
      }),
    ).rejects.toThrow('two');
    await new Promise((r) => setTimeout(r, 30));
    expect(seen).toEqual([1, 2]);
  });
});

describe('Limiter', () => {
  it('runs at most the limit at once', async () => {
    const l = new Limiter(2);
    let running = 0;
    let most = 0;
    await Promise.all(
      [1, 2, 3, 4, 5].map(() =>
        l.run(async () => {
          running++;
          most = Math.max(most, running);
          await new Promise((r) => setTimeout(r, 2));
          running--;
        }),
      ),
    );
    expect(most).toBe(2);
  });
});
