/**
 * `stowage events`: the events a running gateway published, from its API: the newest ones, or
 * (--follow) each as it happens, over Server-Sent Events, resumed after a dropped connection from the
 * last one seen. --count ends it after that many matches, so a script can wait for a version.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { StowageError } from '../errors.js';
import { Agent } from '../registry/undici.js';
import { parsePositiveInt } from './options.js';
import { withSignal } from './run.js';

interface EventsCliOptions {
  url: string;
  tokenFile?: string;
  type?: string;
  subject?: string;
  follow?: boolean;
  after?: number;
  limit: number;
  count?: number;
  json?: boolean;
}

interface StreamedEvent {
  seq: number;
  type: string;
  subject?: string;
  time: string;
  data: Record<string, unknown>;
}

/** Waits before reconnecting a dropped stream. */
const RECONNECT_MS = 1000;

function parseSeq(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected an event seq (a whole number)');
  return Number(v);
}

export function eventsCommand(program: Command): void {
  program
    .command('events')
    .summary('what a running gateway did (versions stored, tags moved, syncs ended, ...), or follow it')
    .description(
      'Prints the events of a running `stowage serve` (CloudEvents; see the README for the types), read from ' +
        'its API: the newest --limit, or with --follow each one as it happens until interrupted (or --count ' +
        'of them matched). Lines read "SEQ TIME TYPE SUBJECT"; --json prints each event as one JSON line. The ' +
        'token comes from --token-file, else $STOWAGE_TOKEN, else the admin token a local gateway made in ' +
        'STATE/api-token; it needs the read scope.\n\n' +
        'Wait for a new version of a tag:\n' +
        '  stowage events --follow --type version.stored --subject 127.0.0.1:5000/team/app:1.4 --count 1 --json',
    )
    .option('--url <url>', 'the gateway (default: $STOWAGE_URL, else http://127.0.0.1:8080)')
    .option('--token-file <file>', 'a file holding an API token with the read scope')
    .option('--type <types>', 'types or prefixes, comma-separated (e.g. version,sync.failed)')
    .option('--subject <subject>', 'only events about this (REPOSITORY:TAG, a job id, a bundle id)')
    .option('-f, --follow', 'keep printing events as they happen')
    .option(
      '--after <seq>',
      'start after this event (default: the newest --limit; with --follow, new ones only)',
      parseSeq,
    )
    .option('--limit <n>', 'events printed without --follow', parsePositiveInt, 20)
    .option('--count <n>', 'exit after this many events printed', parsePositiveInt)
    .option('--json', 'one JSON object a line: the CloudEvent with its seq')
    .action(async (opts: EventsCliOptions) => {
      const base = new URL(opts.url ?? process.env.STOWAGE_URL ?? 'http://127.0.0.1:8080');
      const token = await tokenFor(opts);
      const agent = new Agent({ keepAliveTimeout: 10_000 });
      const printer = new Printer(opts);
      try {
        if (!opts.follow) {
          const q = new URLSearchParams({ limit: String(opts.limit) });
          if (opts.type) q.set('type', opts.type);
          if (opts.after !== undefined) q.set('after', String(opts.after));
          const body = await get(agent, base, `/v1/events?${q}`, token);
          for (const e of (JSON.parse(body) as { events: StreamedEvent[] }).events)
            if (printer.print(e)) break;
          return;
        }
        await withSignal((signal) => follow(agent, base, token, opts, printer, signal));
      } finally {
        await agent.close();
      }
    });
}

/** The token: --token-file, $STOWAGE_TOKEN, or a local gateway's STATE/api-token. */
async function tokenFor(opts: EventsCliOptions): Promise<string> {
  if (opts.tokenFile) {
    const t = (
      await readFile(opts.tokenFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
        throw new StowageError(
          'INVALID_ARGUMENT',
          `--token-file ${opts.tokenFile}: cannot read it (${e.code})`,
        );
      })
    ).trim();
    if (!t) throw new StowageError('INVALID_ARGUMENT', `--token-file ${opts.tokenFile} is empty`);
    return t;
  }
  if (process.env.STOWAGE_TOKEN) return process.env.STOWAGE_TOKEN;
  const { defaultStatePath } = await import('../server.js');
  const local = await readFile(join(defaultStatePath(), 'api-token'), 'utf8').catch(() => '');
  if (local.trim()) return local.trim();
  throw new StowageError(
    'UNAUTHORIZED',
    'no API token: give --token-file FILE or $STOWAGE_TOKEN (a token with the read scope; `stowage token` makes one)',
  );
}

class Printer {
  private printed = 0;
  constructor(private readonly opts: EventsCliOptions) {}

  /** Prints `e` if it is about the subject asked for; true once --count events are printed. */
  print(e: StreamedEvent): boolean {
    if (this.opts.subject !== undefined && e.subject !== this.opts.subject) return false;
    const line = this.opts.json
      ? JSON.stringify(e)
      : `${e.seq} ${e.time} ${e.type} ${e.subject ?? '-'}${summary(e)}`;
    process.stdout.write(`${line}\n`);
    this.printed++;
    return this.opts.count !== undefined && this.printed >= this.opts.count;
  }
}

/** A few words of the data worth a glance: the digest stored, the error of a failed sync. */
function summary(e: StreamedEvent): string {
  const d = e.data;
  if (typeof d.digest === 'string') return ` ${d.digest}`;
  if (typeof d.to === 'string') return ` ${d.to}`;
  if (typeof d.error === 'string') return ` (${d.error})`;
  return '';
}

async function get(agent: Agent, base: URL, path: string, token: string): Promise<string> {
  const res = await send(agent, base, path, token);
  const text = await res.body.text();
  if (res.statusCode !== 200) throw refusal(res.statusCode, text, base);
  return text;
}

function send(
  agent: Agent,
  base: URL,
  path: string,
  token: string,
  opts: { signal?: AbortSignal; lastId?: number } = {},
) {
  return agent
    .request({
      origin: base.origin,
      path: `${base.pathname.replace(/\/$/, '')}${path}`,
      method: 'GET',
      headers: {
        authorization: `Bearer ${token}`,
        ...(opts.lastId !== undefined ? { 'last-event-id': String(opts.lastId) } : {}),
      },
      signal: opts.signal,
    })
    .catch((e: NodeJS.ErrnoException) => {
      if (opts.signal?.aborted) throw e;
      throw new StowageError(
        'NETWORK',
        `cannot reach the gateway at ${base.origin} (${e.code ?? e.message}); is stowage serve running there? (--url)`,
        { retryable: true },
      );
    });
}

function refusal(status: number, body: string, base: URL): StowageError {
  let message = body.slice(0, 300);
  try {
    message = (JSON.parse(body) as { error: { message: string } }).error.message;
  } catch {}
  const code =
    status === 401 ? 'UNAUTHORIZED' : status === 403 ? 'DENIED' : status === 404 ? 'NOT_FOUND' : 'REGISTRY';
  return new StowageError(code, `the gateway at ${base.origin} answered ${status}: ${message}`);
}

/** Streams events until interrupted or --count; a dropped stream is taken up again after its last event. */
async function follow(
  agent: Agent,
  base: URL,
  token: string,
  opts: EventsCliOptions,
  printer: Printer,
  signal: AbortSignal,
): Promise<void> {
  let last = opts.after;
  const q = new URLSearchParams();
  if (opts.type) q.set('type', opts.type);
  if (opts.after !== undefined) q.set('after', String(opts.after));
  for (let connected = false; ; connected = true) {
    // Once the stream has been open, a gateway away (restarting) is waited for rather than an error.
    const res = await send(agent, base, `/v1/events/stream?${q}`, token, { signal, lastId: last }).catch(
      (e: unknown) => {
        if (!connected || signal.aborted) throw e;
        return undefined;
      },
    );
    if (!res) {
      process.stderr.write(`stowage: waiting: ${base.origin} does not answer; connecting again in 1 s\n`);
      await new Promise((r) => setTimeout(r, RECONNECT_MS));
      continue;
    }
    if (res.statusCode !== 200) throw refusal(res.statusCode, await res.body.text(), base);
    let done = false;
    try {
      for await (const e of sseEvents(res.body)) {
        last = e.seq;
        if (printer.print(e)) {
          done = true;
          break;
        }
      }
    } catch {
      // The connection dropped (the gateway restarted, a proxy cut it): taken up again below.
      if (signal.aborted) return;
    }
    if (done || signal.aborted) {
      res.body.destroy();
      return;
    }
    process.stderr.write(
      `stowage: waiting: the event stream from ${base.origin} ended; connecting again in 1 s\n`,
    );
    await new Promise((r) => setTimeout(r, RECONNECT_MS));
  }
}

/** The `data:` of each Server-Sent Event, parsed, with its id as the seq. */
async function* sseEvents(body: AsyncIterable<Buffer>): AsyncGenerator<StreamedEvent> {
  let buffered = '';
  for await (const chunk of body) {
    buffered += chunk.toString('utf8');
    for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let id: number | undefined;
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) id = Number(line.slice(4));
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (id === undefined || data.length === 0) continue;
      yield { ...(JSON.parse(data.join('\n')) as StreamedEvent), seq: id };
    }
  }
}
