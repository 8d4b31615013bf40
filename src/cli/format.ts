import { printable } from '../core/printable.js';

export { formatBytes, formatRate, formatTimeLeft, plural } from '../core/figures.js';

export function formatDuration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)}ms` : `${(ms / 1000).toFixed(2)}s`;
}

/**
 * Text made of what a registry or an archive said (labels through a --format template, a text
 * description), for stdout: on a terminal its control characters are shown as escapes, so no escape
 * sequence reaches the terminal; into a pipe or a file it goes as it is, as skopeo prints it.
 */
export function forTerminal(text: string, stream: { isTTY?: boolean } = process.stdout): string {
  return stream.isTTY ? printable(text, { keepNewlines: true }) : text;
}
