/** Small helpers the interop tests share: podman on a private store, and damaging archives in place. */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { inject } from 'vitest';
import { TarIndex } from '../../src/archive/tar-reader.js';

/**
 * podman on a storage of its own (vfs, no daemon). Its runroot path must stay under 50 characters, so
 * it sits under the test run's own directory (removed when the run ends) by a hash of the root.
 */
export function podmanFlags(root: string): string[] {
  const id = createHash('sha256').update(root).digest('hex').slice(0, 12);
  return [
    '--root',
    join(root, 'storage'),
    '--runroot',
    join(inject('harness').dir, 'run', id),
    '--storage-driver',
    'vfs',
    '--cgroup-manager',
    'cgroupfs',
    '--events-backend',
    'none',
  ];
}

/** Flips one byte of a file in place. */
export async function flipByte(path: string, at: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

/** Flips a byte in the middle of one entry of a tar archive. */
export async function damageEntry(archive: string, entry: string): Promise<void> {
  const e = (await TarIndex.open(archive)).entries.get(entry);
  if (!e) throw new Error(`${archive} has no entry ${entry}`);
  await flipByte(archive, e.offset + Math.floor(e.size / 2));
}

/** A loopback port nothing listens on (bound, then released). */
export async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}
