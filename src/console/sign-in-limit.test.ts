import { describe, expect, it } from 'vitest';
import { SignInLimit } from './sign-in-limit.js';

describe('SignInLimit', () => {
  it('refuses an address after max refused tokens in the window, until the oldest leaves it', () => {
    let t = 0;
    const limit = new SignInLimit({ max: 3, windowMs: 1000, now: () => t });
    for (let i = 0; i < 3; i++) {
      expect(limit.waitFor('a')).toBe(0);
      limit.refused('a');
      t += 100;
    }
    expect(limit.waitFor('a')).toBe(700);
    expect(limit.waitFor('b')).toBe(0);
    t = 1001;
    expect(limit.waitFor('a')).toBe(0);
  });

  it('clears an address on a right token, and forgets the oldest addresses past its bound', () => {
    const limit = new SignInLimit({ max: 1, windowMs: 1000, clients: 2, now: () => 0 });
    limit.refused('a');
    expect(limit.waitFor('a')).toBeGreaterThan(0);
    limit.accepted('a');
    expect(limit.waitFor('a')).toBe(0);
    limit.refused('x');
    limit.refused('y');
    limit.refused('z');
    expect(limit.waitFor('x')).toBe(0);
    expect(limit.waitFor('z')).toBeGreaterThan(0);
  });
});
