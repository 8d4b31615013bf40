/** Each round tripper alone, in front of a scripted `next`: no sockets, no registry. */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { describe, expect, it } from 'vitest';
import { StowageError } from '../../errors.js';
import { retryAfterMs } from '../waits.js';
import { type Authorizer, authorize } from './authorize.js';
import { type Answer, chain, type Outgoing, type Send, type Step } from './chain.js';
import { exhaustedFor, pace } from './pace.js';
import { publish, REGISTRY_REQUESTS_CHANNEL, type RegistryRequestRecord } from './publish.js';
import { redirects } from './redirects.js';
import { throttle } from './throttle.js';

const ORIGIN = 'http://127.0.0.1:5000';

function request(over: Partial<Outgoing> = {}): Outgoing {
  return {
    method: 'GET',
    url: new URL('/v2/team/app/manifests/1.4', ORIGIN),
    origin: ORIGIN,
    headers: {},
    scope: 'repository:team/app:pull',
    what: 'the manifest of team/app:1.4',
    ...over,
  };
}

/** An answer as undici gives one; `dumped` counts bodies thrown away. */
function answer(
  statusCode: number,
  headers: Record<string, string> = {},
  text = '',
): Answer & { dumped: number } {
  const a = {
    statusCode,
    headers,
    dumped: 0,
    body: {
      dump: async () => {
        a.dumped++;
      },
      text: async () => text,
    },
  };
  return a as unknown as Answer & { dumped: number };
}

/** A `next` that answers from a script in turn, and keeps what it was sent. */
function scripted(...answers: Answer[]): Send & { sent: Outgoing[] } {
  const sent: Outgoing[] = [];
  const send = async (req: Outgoing) => {
    sent.push(req);
    const a = answers.shift();
    if (!a) throw new Error('asked once too often');
    return a;
  };
  return Object.assign(send, { sent });
}

const run = (step: Step, req: Outgoing, next: Send) => chain([step], next)(req);

describe('chain', () => {
  it('runs the steps outermost first, each wrapping the next', async () => {
    const order: string[] = [];
    const step =
      (name: string): Step =>
      async (req, next) => {
        order.push(`${name} in`);
        const res = await next(req);
        order.push(`${name} out`);
        return res;
      };
    await chain([step('a'), step('b')], scripted(answer(200)))(request());
    expect(order).toEqual(['a in', 'b in', 'b out', 'a out']);
  });
});

describe('redirects', () => {
  it('follows a read to where it is sent, resolving a relative location', async () => {
    const next = scripted(answer(307, { location: 'http://127.0.0.1:9000/blob?sig=1' }), answer(200));
    const res = await run(redirects({ host: '127.0.0.1:5000' }), request(), next);
    expect(res.statusCode).toBe(200);
    expect(next.sent.map((r) => r.url.href)).toEqual([
      `${ORIGIN}/v2/team/app/manifests/1.4`,
      'http://127.0.0.1:9000/blob?sig=1',
    ]);
  });

  it('leaves a write alone: its answer is the caller to read', async () => {
    const next = scripted(answer(307, { location: '/elsewhere' }));
    const res = await run(redirects({ host: 'r' }), request({ method: 'PUT' }), next);
    expect(res.statusCode).toBe(307);
  });

  it('stops a loop, too many hops, a missing location and a host the guard refuses', async () => {
    const loop = scripted(
      answer(302, { location: '/b' }),
      answer(302, { location: '/v2/team/app/manifests/1.4' }),
    );
    await expect(run(redirects({ host: 'r' }), request(), loop)).rejects.toThrow(/in a loop/);
    const hops = scripted(...Array.from({ length: 4 }, (_, i) => answer(302, { location: `/hop${i}` })));
    await expect(run(redirects({ host: 'r', max: 3 }), request(), hops)).rejects.toThrow(/more than 3 times/);
    await expect(run(redirects({ host: 'r' }), request(), scripted(answer(301)))).rejects.toThrow(
      /names no usable location/,
    );
    const guard = (url: URL) => (url.port === '9000' ? 'is not in allowed-registries' : undefined);
    const blocked = scripted(answer(307, { location: 'http://127.0.0.1:9000/x' }));
    const refused = run(redirects({ host: 'r', guard }), request(), blocked);
    await expect(refused).rejects.toMatchObject({ code: 'BLOCKED' });
    expect(blocked.sent).toHaveLength(1);
  });
});

/** An authenticator that hands out `Bearer N`, a new N after each challenge. */
function fakeAuth(opts: {
  acceptsChallenge: boolean;
  credentials?: boolean;
}): Authorizer & { issued: number } {
  const a = {
    issued: 1,
    authorization: async () => `Bearer ${a.issued}`,
    setChallenge: () => opts.acceptsChallenge,
    invalidate: () => {
      a.issued++;
    },
    credentialsFor: async () => (opts.credentials ? { username: 'u', password: 'p' } : undefined),
  };
  return a as unknown as Authorizer & { issued: number };
}

describe('authorize', () => {
  it("answers a 401 once with the new challenge's token", async () => {
    const next = scripted(answer(401, { 'www-authenticate': 'Bearer realm="x"' }), answer(200));
    const res = await run(authorize('r', fakeAuth({ acceptsChallenge: true })), request(), next);
    expect(res.statusCode).toBe(200);
    expect(next.sent.map((r) => r.headers.authorization)).toEqual(['Bearer 1', 'Bearer 2']);
  });

  it('sends no credentials to another origin', async () => {
    const next = scripted(answer(200));
    const req = request({ url: new URL('http://127.0.0.1:9000/upload') });
    await run(authorize('r', fakeAuth({ acceptsChallenge: true })), req, next);
    expect(next.sent[0]!.headers.authorization).toBeUndefined();
  });

  it('turns a second 401, a streamed body and a 403 into errors that say what to do', async () => {
    const twice = scripted(answer(401), answer(401));
    await expect(
      run(authorize('r', fakeAuth({ acceptsChallenge: true, credentials: true })), request(), twice),
    ).rejects.toThrow(/rejected the credentials .* check the username/);
    async function* stream() {
      yield Buffer.from('x');
    }
    const streamed = scripted(answer(401));
    const put = request({ method: 'PUT', body: stream() });
    await expect(run(authorize('r', fakeAuth({ acceptsChallenge: true })), put, streamed)).rejects.toThrow(
      /requires authentication .* --creds/,
    );
    expect(streamed.sent).toHaveLength(1);
    const denied = scripted(answer(403, {}, '{"errors":[{"code":"DENIED","message":"no"}]}'));
    const err = await run(authorize('r', fakeAuth({ acceptsChallenge: true })), request(), denied).catch(
      (e: StowageError) => e,
    );
    expect(err).toMatchObject({ code: 'DENIED' });
    expect((err as Error).message).toMatch(/may read it/);
  });
});

describe('throttle', () => {
  const waits: number[] = [];
  const options = {
    host: 'r',
    maxRetries: 2,
    minTimeoutMs: 100,
    maxTimeoutMs: 1000,
    sleep: async (ms: number) => {
      waits.push(ms);
    },
  };

  it('waits out a 429 as Retry-After asks, else with doubling backoff, then gives the last one back', async () => {
    waits.length = 0;
    const next = scripted(answer(429, { 'retry-after': '2' }), answer(429), answer(429));
    const res = await run(throttle(options), request(), next);
    expect(res.statusCode).toBe(429);
    expect(waits).toEqual([2000, 200]);
    expect(next.sent).toHaveLength(3);
  });

  it('fails at once when the registry asks for longer than the cap, and never resends a write', async () => {
    const long = scripted(answer(429, { 'retry-after': '3600' }));
    await expect(run(throttle(options), request(), long)).rejects.toMatchObject({ code: 'RATE_LIMITED' });
    const write = scripted(answer(429));
    expect((await run(throttle(options), request({ method: 'PATCH' }), write)).statusCode).toBe(429);
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(retryAfterMs('7')).toBe(7000);
    const now = Date.parse('2026-12-07T00:00:00Z');
    expect(retryAfterMs('Mon, 07 Dec 2026 00:00:30 GMT', now)).toBe(30_000);
    expect(retryAfterMs('soon')).toBeUndefined();
  });
});

describe('pace', () => {
  it('waits its turn before each attempt and pauses when the registry says none are left', async () => {
    const events: string[] = [];
    const pacer = {
      turn: async () => {
        events.push('turn');
      },
      pauseFor: (s: number) => {
        events.push(`pause ${s}`);
      },
    };
    const next = scripted(answer(200, { 'ratelimit-remaining': '0;w=21600' }), answer(200));
    await run(pace(pacer), request(), next);
    await run(pace(pacer), request(), next);
    expect(events).toEqual(['turn', 'pause 21600', 'turn']);
  });

  it('takes the reset, then Retry-After, then the window', () => {
    expect(exhaustedFor(answer(200, { 'ratelimit-remaining': '5' }))).toBeUndefined();
    expect(exhaustedFor(answer(200, { 'ratelimit-remaining': '0', 'ratelimit-reset': '9' }))).toBe(9);
    expect(exhaustedFor(answer(200, { 'ratelimit-remaining': '0', 'retry-after': '4' }))).toBe(4);
    expect(exhaustedFor(answer(200, { 'ratelimit-remaining': '0' }))).toBe(60);
  });
});

describe('publish', () => {
  it('publishes each attempt with its status, 0 when no answer came', async () => {
    const seen: RegistryRequestRecord[] = [];
    const listener = (m: unknown) => seen.push(m as RegistryRequestRecord);
    subscribe(REGISTRY_REQUESTS_CHANNEL, listener);
    try {
      await run(publish('127.0.0.1:5000'), request(), scripted(answer(404)));
      const failing: Send = async () => {
        throw new StowageError('REGISTRY', 'connection refused');
      };
      await expect(run(publish('127.0.0.1:5000'), request({ method: 'HEAD' }), failing)).rejects.toThrow();
    } finally {
      unsubscribe(REGISTRY_REQUESTS_CHANNEL, listener);
    }
    expect(seen.map(({ host, method, status }) => ({ host, method, status }))).toEqual([
      { host: '127.0.0.1:5000', method: 'GET', status: 404 },
      { host: '127.0.0.1:5000', method: 'HEAD', status: 0 },
    ]);
    expect(seen.every((r) => r.seconds >= 0)).toBe(true);
  });
});
