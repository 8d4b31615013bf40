import { describe, expect, it } from 'vitest';
import { byteSize } from './sizes.js';

describe('sizes as people write them', () => {
  it('reads binary and decimal units in any case, decimals and bare bytes; refuses the rest', () => {
    expect(byteSize('20GiB')).toBe(20 * 1024 ** 3);
    expect(byteSize('1.5 MiB')).toBe(1.5 * 1024 ** 2);
    expect(byteSize('64mib')).toBe(64 * 1024 ** 2);
    expect(byteSize('1GB')).toBe(1e9);
    expect(byteSize('0B')).toBe(0);
    expect(byteSize('4096')).toBe(4096);
    for (const bad of ['', 'GiB', '-1GiB', '1 PB', '1e3', '12 apples'])
      expect(byteSize(bad), bad).toBeUndefined();
  });
});
