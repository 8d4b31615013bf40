/**
 * How every figure a person reads is written, said once: the CLI's output, its progress, and the web
 * console use these (the console's browser script has its own copy, kept to the same rules).
 *
 * Sizes are decimal, as registries, skopeo and docker print them: 1 kB = 1000 B, 1 MB = 1000 kB. Whole
 * bytes under 1 kB, one decimal above. Rates are sizes a second, rounded the same way.
 */
const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '-';
  let v = n;
  let i = 0;
  while (v >= 999.95 && i < UNITS.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${UNITS[i]}`;
}

/** A rate in bytes a second, as "12.3 MB/s". */
export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** Time left, whole seconds up to two minutes, then minutes ("3 min"), then hours ("1 h 20 min"). */
export function formatTimeLeft(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return 'time left unknown';
  const s = Math.ceil(seconds);
  if (s < 120) return `${s} s left`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m} min left`;
  return `${Math.floor(m / 60)} h ${m % 60} min left`;
}

/** "1 job", "2 jobs", "1 repository", "3 repositories". */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}
