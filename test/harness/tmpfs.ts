/** A small tmpfs of the test's own (tests run as root, as CI does), unmounted whatever `fn` does. */
import { mkdir } from 'node:fs/promises';
import { run } from './processes.js';

export async function withTmpfs<T>(dir: string, size: string, fn: (dir: string) => Promise<T>): Promise<T> {
  await mkdir(dir, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  try {
    return await fn(dir);
  } finally {
    await run('umount', [dir]);
  }
}
