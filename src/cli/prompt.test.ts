/**
 * The password prompt (--creds USER) with a terminal of the test's own: no test machine has a person
 * at a keyboard, and a run under `script` (a pseudo-terminal) with typed input hung under vitest. Raw mode is
 * asked for (no echo), Enter ends, backspace takes back, Ctrl-C gives up, and it is put back after.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { readPassword } from './prompt.js';

function terminal() {
  const t = new EventEmitter() as EventEmitter & {
    isTTY: boolean;
    raw: boolean[];
    setRawMode(v: boolean): void;
    resume(): void;
    pause(): void;
    setEncoding(e: string): void;
  };
  t.isTTY = true;
  t.raw = [];
  t.setRawMode = (v) => t.raw.push(v);
  t.resume = () => {};
  t.pause = () => {};
  t.setEncoding = () => {};
  return t;
}

describe('readPassword', () => {
  it('reads what is typed up to Enter, in raw mode (nothing echoed), backspace included', async () => {
    const t = terminal();
    const p = readPassword('Password: ', t as unknown as NodeJS.ReadStream);
    t.emit('data', 'sexx\u007f\u007f');
    t.emit('data', 'cret\r');
    await expect(p).resolves.toBe('secret');
    expect(t.raw).toEqual([true, false]);
    expect(t.listenerCount('data')).toBe(0);
  });

  it('gives up on Ctrl-C, and refuses where there is no terminal', async () => {
    const t = terminal();
    const p = readPassword('Password: ', t as unknown as NodeJS.ReadStream);
    t.emit('data', 'abc\u0003');
    await expect(p).rejects.toThrow(/interrupted/);
    expect(t.raw).toEqual([true, false]);
    const pipe = Object.assign(new EventEmitter(), { isTTY: false });
    await expect(readPassword('Password: ', pipe as unknown as NodeJS.ReadStream)).rejects.toThrow(
      /no terminal to ask on/,
    );
  });
});
