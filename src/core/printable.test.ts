import { describe, expect, it } from 'vitest';
import { printable } from './printable.js';

describe('printable', () => {
  it('shows escape sequences, control characters and bidi overrides as escapes', () => {
    expect(printable('denied\u001b]0;pwned\u0007 \u001b[31mred')).toBe(
      'denied\\x1b]0;pwned\\x07 \\x1b[31mred',
    );
    expect(printable('a\u202eb\u0085c\u007f')).toBe('a\\u{202e}b\\x85c\\x7f');
    expect(printable('one\ntwo\tthree')).toBe('one\\x0atwo\tthree');
    expect(printable('one\ntwo', { keepNewlines: true })).toBe('one\ntwo');
    expect(printable('plain ünïcode, 日本')).toBe('plain ünïcode, 日本');
  });
});
