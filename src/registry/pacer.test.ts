import { describe, expect, it } from 'vitest';
import { type Clock, Pacer } from './pacer.js';

/** A clock that moves only when a sleeper asks it to: what the pacer does is counted, not timed. */
function fakeClock(): Clock & { slept: number[] } {
  let t = 1_000_000;
  const slept: number[] = [];
  return {
    slept,
    now: () => t,
    sleep: async (ms) => {
      slept.push(ms);
      t += ms;
    },
  };
}

describe('Pacer', () => {
  it('hands out requests-per-second as slots 1/rate apart, in order', async () => {
    const clock = fakeClock();
    const pacer = new Pacer({ host: 'r.test', requestsPerSecond: 10, maxPauseMs: 60_000, clock });
    const started: number[] = [];
    for (let i = 0; i < 5; i++) {
      await pacer.turn();
      started.push(clock.now());
    }
    const gaps = started.slice(1).map((t, i) => t - started[i]!);
    expect(gaps).toEqual([100, 100, 100, 100]);
  });

  it('lets requests through at once without a rate, and after a long enough gap', async () => {
    const clock = fakeClock();
    await new Pacer({ host: 'r.test', maxPauseMs: 1, clock }).turn();
    const paced = new Pacer({ host: 'r.test', requestsPerSecond: 2, maxPauseMs: 1, clock });
    await paced.turn();
    await clock.sleep(700);
    clock.slept.length = 0;
    await paced.turn();
    expect(clock.slept).toEqual([]);
  });

  it('waits out the registry’s own limit, and refuses one over the cap at once', async () => {
    const clock = fakeClock();
    const pacer = new Pacer({ host: 'r.test', maxPauseMs: 30_000, clock });
    pacer.pauseFor(5);
    await pacer.turn();
    expect(clock.slept).toEqual([5000]);
    pacer.pauseFor(3600);
    await expect(pacer.turn()).rejects.toThrow(/r\.test says its rate limit is used up for 3600 s more/);
  });
});
