import { describe, expect, it } from 'vitest';
import { cronSlot, giveUp, lostHolders } from './pg-job-rows.js';

const running = (replica: string) => ({ state: 'running', replica });
const queued = { state: 'queued', replica: null };

describe('a job whose replicas keep dying', () => {
  it('counts the holders that vanished, not the ones that handed the job back', () => {
    expect(lostHolders([queued])).toEqual([]);
    // r0 stopped gracefully (it wrote 'queued'); r1 was killed while running it.
    expect(lostHolders([queued, running('r0'), queued, running('r1')])).toEqual(['r1']);
    expect(lostHolders([queued, running('r0'), running('r1')])).toEqual(['r0', 'r1']);
  });

  it('is given up after two replicas died running it, or after five deliveries of any kind', () => {
    expect(giveUp(2, ['r0'])).toBeUndefined();
    const twice = giveUp(3, ['r0', 'r1']);
    expect(twice).toMatch(/\(r0, r1\) stopped without finishing it 2 times; it is not started again/);
    expect(giveUp(5, [])).toBeUndefined();
    expect(giveUp(6, [])).toMatch(/stopped 5 times/);
  });
});

describe("a schedule's slot", () => {
  it('is the minute its message was made in, so a late or retried delivery names the same slot', () => {
    expect(cronSlot(new Date('2026-12-07T02:24:07.512Z'))).toBe('2026-12-07T02:24:00.000Z');
    expect(cronSlot(new Date('2026-12-07T02:24:59.999Z'))).toBe('2026-12-07T02:24:00.000Z');
  });
});
