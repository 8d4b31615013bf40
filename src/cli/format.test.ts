import { describe, expect, it } from 'vitest';
import { forTerminal } from './format.js';

describe('text from a registry on its way to stdout', () => {
  const label = 'ok\n\u001b]0;owned\u0007\u001b[2J\u202eevil\n';
  it('shows control characters as escapes on a terminal, newlines kept', () => {
    expect(forTerminal(label, { isTTY: true })).toBe('ok\n\\x1b]0;owned\\x07\\x1b[2J\\u{202e}evil\n');
  });
  it('goes as it is into a pipe, as skopeo prints it', () => {
    expect(forTerminal(label, { isTTY: false })).toBe(label);
  });
});
