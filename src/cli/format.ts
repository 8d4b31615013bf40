import { printable } from '../core/printable.js';

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(2)}s`;
}

/** "1 job", "2 jobs", "1 repository", "3 repositories". */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * Text made of what a registry or an archive said (labels through a --format template, a text
 * description), for stdout: on a terminal its control characters are shown as escapes, so no escape
 * sequence reaches the terminal; into a pipe or a file it goes as it is, as skopeo prints it.
 */
export function forTerminal(text: string, stream: { isTTY?: boolean } = process.stdout): string {
  return stream.isTTY ? printable(text, { keepNewlines: true }) : text;
}
