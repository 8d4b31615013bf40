import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Store } from './store.js';

const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

async function store(): Promise<Store> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-store-'));
  dirs.push(dir);
  return Store.open(join(dir, 'store'));
}

function blob(text: string) {
  const bytes = Buffer.from(text);
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  return { descriptor: { mediaType: 'application/octet-stream', digest, size: bytes.length }, bytes };
}

async function* slowly(bytes: Buffer): AsyncGenerator<Uint8Array> {
  await new Promise((r) => setTimeout(r, 20));
  yield bytes;
}

describe('Store.fetchBlob', () => {
  it('fetches a blob once however many ask for it at once', async () => {
    const s = await store();
    const b = blob('shared layer');
    let opened = 0;
    const open = async () => {
      opened++;
      return slowly(b.bytes);
    };
    const results = await Promise.all([1, 2, 3].map(() => s.fetchBlob(b.descriptor, open)));
    expect(opened).toBe(1);
    expect(results.sort()).toEqual(['fetched', 'shared', 'shared']);
    expect(await s.fetchBlob(b.descriptor, open)).toBe('present');
    expect(opened).toBe(1);
  });

  it('a waiter whose fetch it waited on failed fetches for itself, and a lone failure is its caller’s', async () => {
    const s = await store();
    const b = blob('flaky layer');
    const failing = async () => slowly(Buffer.from('not the blob'));
    const first = s.fetchBlob(b.descriptor, failing);
    const second = s.fetchBlob(b.descriptor, async () => slowly(b.bytes));
    await expect(first).rejects.toThrow(b.descriptor.digest);
    expect(await second).toBe('fetched');
    expect(await s.hasBlob(b.descriptor.digest)).toBe(true);
    // Nothing half-written is left in .tmp.
    expect(await readdir(join(s.path, '.tmp'))).toEqual([]);
    // A failure nobody waits on rejects its own caller only (no unhandled rejection ends the process).
    const c = blob('another');
    await expect(s.fetchBlob(c.descriptor, failing)).rejects.toThrow();
  });
});
