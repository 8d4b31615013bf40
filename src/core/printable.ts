/**
 * Text from outside (a registry's error message, a tag name it lists) made safe to print: control
 * characters (escape sequences that would move a terminal's cursor, recolour it, or set its title)
 * and the bidirectional overrides that make text read other than it is become visible \xNN / \u{N}
 * escapes. Newlines stay where `keepNewlines` says so (the CLI's own multi-line output).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const UNSAFE_WITH_NEWLINES = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

export function printable(text: string, opts: { keepNewlines?: boolean } = {}): string {
  return text.replace(opts.keepNewlines ? UNSAFE : UNSAFE_WITH_NEWLINES, (c) => {
    const n = c.codePointAt(0)!;
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u{${n.toString(16)}}`;
  });
}

/**
 * Text from outside, printable and at most `max` characters: a 100 KB label must not make a page or
 * a terminal line of 100 KB. What was left out is said, so the cut is not mistaken for the value.
 */
export function shown(text: string, max = 200): string {
  const safe = printable(text);
  if (safe.length <= max) return safe;
  let head = safe.slice(0, max);
  // Never half a surrogate pair.
  if (/[\ud800-\udbff]$/.test(head)) head = head.slice(0, -1);
  return `${head}… (${safe.length - head.length} more characters)`;
}
