import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import * as undici from 'undici';
import { describe, expect, it } from 'vitest';
import { Agent, interceptors } from './undici.js';

describe('undici parts loaded by path', () => {
  it('are the very objects the package index exports', () => {
    expect(Agent).toBe(undici.Agent);
    expect(interceptors.retry).toBe(undici.interceptors.retry);
  });

  it('work without the index: agents have the request method, and the index is never loaded', () => {
    // A fresh process, so that this file's own import of the index cannot help.
    const built = resolve(import.meta.dirname, '../../dist/registry/undici.js');
    const script = `
      import { createRequire } from 'node:module';
      const { Agent, interceptors } = await import(${JSON.stringify(built)});
      const agent = new Agent().compose(interceptors.retry({}));
      const index = createRequire(${JSON.stringify(built)}).resolve('undici');
      const loaded = Object.keys(createRequire(import.meta.url).cache).includes(index);
      console.log(JSON.stringify({ request: typeof agent.request, loaded }));`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(JSON.parse(out)).toEqual({ request: 'function', loaded: false });
  });
});
