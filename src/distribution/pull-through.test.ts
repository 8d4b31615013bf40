/** The relay that reads one upstream blob once for the client and the store. */
import { describe, expect, it } from 'vitest';
import { Relay } from './pull-through.js';

async function* chunks(n: number, fail = false): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < n; i++) yield Buffer.from([i]);
  if (fail) throw new Error('connection reset');
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<number[]> {
  const out: number[] = [];
  for await (const c of it) out.push(...c);
  return out;
}

describe('Relay', () => {
  it('gives the client and the store every chunk, in order', async () => {
    const relay = new Relay(chunks(100), 8);
    const [client, store] = await Promise.all([collect(relay.client()), collect(relay.store())]);
    const all = Array.from({ length: 100 }, (_, i) => i);
    expect(client).toEqual(all);
    expect(store).toEqual(all);
  });

  it('fails both readers when the upstream breaks off', async () => {
    const relay = new Relay(chunks(5, true), 8);
    const client = collect(relay.client());
    const store = collect(relay.store());
    await expect(client).rejects.toThrow('connection reset');
    await expect(store).rejects.toThrow('connection reset');
  });

  it('reads on for the store once the client has hung up, and for the client if the store gives up', async () => {
    const relay = new Relay(chunks(50), 4);
    const client = relay.client()[Symbol.asyncIterator]();
    const storing = collect(relay.store());
    expect((await client.next()).value).toEqual(Buffer.from([0]));
    await client.return?.(undefined);
    expect(await storing).toHaveLength(50);

    const other = new Relay(chunks(50), 4);
    const store = other.store()[Symbol.asyncIterator]();
    const sending = collect(other.client());
    await store.next();
    await store.return?.(undefined);
    expect(await sending).toHaveLength(50);
  });

  it('holds the upstream back while a reader has more than the slack waiting', async () => {
    let read = 0;
    async function* counted(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 100; i++) {
        read++;
        yield Buffer.alloc(1);
      }
    }
    const relay = new Relay(counted(), 10);
    const store = collect(relay.store());
    const client = relay.client()[Symbol.asyncIterator]();
    await new Promise((r) => setTimeout(r, 20));
    // The client has taken nothing: the upstream was read only as far as the slack allows.
    expect(read).toBeLessThanOrEqual(12);
    for (;;) if ((await client.next()).done) break;
    expect(await store).toHaveLength(100);
  });
});
