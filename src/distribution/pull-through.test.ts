/** The relay that hands one upstream blob to the store and to a client at once. */
import { describe, expect, it } from 'vitest';
import { Relay } from './pull-through.js';

async function* chunks(n: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < n; i++) yield Buffer.from([i]);
}

async function collect(it: AsyncIterable<Uint8Array>): Promise<number[]> {
  const out: number[] = [];
  for await (const c of it) out.push(...c);
  return out;
}

describe('Relay', () => {
  it('gives the client every chunk, the last only once the store has accepted the blob', async () => {
    const relay = new Relay();
    const client = collect(relay.client());
    const stored: number[] = [];
    for await (const c of relay.feed(chunks(10))) stored.push(...c);
    // The store has read everything; the client is still one chunk short until finish().
    let done = false;
    void client.then(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 10));
    expect(done).toBe(false);
    relay.finish();
    expect(await client).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(stored).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("fails the client's stream when the store refuses the blob", async () => {
    const relay = new Relay();
    const client = collect(relay.client());
    for await (const _ of relay.feed(chunks(3)));
    relay.fail(new Error('digest mismatch'));
    await expect(client).rejects.toThrow('digest mismatch');
  });

  it('lets the store read on at full speed once the client has gone', async () => {
    const relay = new Relay();
    const client = relay.client();
    const stored: number[] = [];
    const storing = (async () => {
      for await (const c of relay.feed(chunks(50))) stored.push(...c);
    })();
    // The client takes one chunk and hangs up, as a connection closed mid-blob ends its stream.
    expect((await client.next()).value).toEqual(Buffer.from([0]));
    await client.return(undefined);
    await storing;
    expect(stored).toHaveLength(50);
  });
});
