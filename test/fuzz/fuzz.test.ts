/**
 * Property-based fuzzing of the parsers (issue 33), with fast-check: each target of targets.ts gets its
 * corpus (test/fuzz/corpus/TARGET: whole files, or one input per line of a lines.txt), then inputs
 * made from it: byte and token edits of corpus entries, corpus JSON with one value swapped for a
 * random one, token soups of the grammar's punctuation, inputs inflated to 100 KB, random bytes.
 * Every input must end in a value or a StowageError; anything else thrown fails with the input.
 *
 * The README's test command runs a bounded number per target (FUZZ_RUNS, 150 by default: seconds in
 * all). `npm run fuzz` runs 20,000 per target, fails an input that takes more than a second
 * (FUZZ_LIMIT_MS), and saves what fails into the corpus, so it is tried first on every run after.
 * FUZZ_SEED replays a failure fast-check reported.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StowageError } from '../../src/errors.js';
import { TARGETS, type Target } from './targets.js';

const CORPUS = join(import.meta.dirname, 'corpus');
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);
const LIMIT_MS = process.env.FUZZ_LIMIT_MS ? Number(process.env.FUZZ_LIMIT_MS) : undefined;
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined;
/** The largest input made: the "100 KB strings". */
const BIG = 100 * 1024;

async function corpusOf(t: Target): Promise<Buffer[]> {
  const dir = join(CORPUS, t.name);
  const out: Buffer[] = [];
  for (const f of (await readdir(dir)).sort()) {
    const b = await readFile(join(dir, f));
    if (f.endsWith('lines.txt'))
      out.push(
        ...b
          .toString('utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => Buffer.from(l)),
      );
    else out.push(b);
  }
  if (!out.length) throw new Error(`${dir} has no corpus`);
  return out;
}

/** One edit: at a position (modulo the length), delete some bytes and insert a fragment. */
const edit = (t: Target) =>
  fc.record({
    at: fc.nat(),
    del: fc.nat({ max: 16 }),
    ins: fc.oneof(
      fc.constantFrom(...t.dictionary).map((s) => Buffer.from(s, 'latin1')),
      fc.uint8Array({ maxLength: 8 }).map((a) => Buffer.from(a)),
      fc.string({ unit: 'binary', maxLength: 4 }).map((s) => Buffer.from(s)),
    ),
  });

function applyEdits(
  seed: Buffer,
  edits: { at: number; del: number; ins: Buffer }[],
  cut: number | null,
): Buffer {
  let b = seed;
  for (const e of edits) {
    const at = e.at % (b.length + 1);
    b = Buffer.concat([b.subarray(0, at), e.ins, b.subarray(Math.min(b.length, at + e.del))]);
  }
  return cut === null ? b : b.subarray(0, cut % (b.length + 1));
}

/** Every path to a value inside a JSON document. */
function paths(
  v: unknown,
  at: (string | number)[] = [],
  out: (string | number)[][] = [],
): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) for (const [i, x] of v.entries()) paths(x, [...at, i], out);
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out);
  return out;
}

function swapped(doc: unknown, n: number, value: unknown): unknown {
  const all = paths(doc);
  const path = all[n % all.length]!;
  if (path.length === 0) return value;
  const copy = structuredClone(doc) as Record<string | number, unknown>;
  let node = copy;
  for (const k of path.slice(0, -1)) node = node[k] as Record<string | number, unknown>;
  node[path.at(-1)!] = value;
  return copy;
}

function inputs(t: Target, corpus: Buffer[]): fc.Arbitrary<Buffer> {
  const seed = fc.constantFrom(...corpus);
  const arbs: fc.WeightedArbitrary<Buffer>[] = [
    {
      weight: 6,
      arbitrary: fc
        .tuple(seed, fc.array(edit(t), { minLength: 1, maxLength: 8 }), fc.option(fc.nat(), { freq: 4 }))
        .map(([s, edits, cut]) => applyEdits(s, edits, cut)),
    },
    {
      weight: 1,
      arbitrary:
        t.kind === 'bytes'
          ? fc.uint8Array({ maxLength: 4096 }).map((a) => Buffer.from(a))
          : fc.string({ unit: 'binary', maxLength: 512 }).map((s) => Buffer.from(s)),
    },
    {
      weight: 1,
      // A fragment repeated to about 100 KB, inside a corpus entry: a long field, a deep nesting.
      arbitrary: fc.tuple(seed, fc.constantFrom(...t.dictionary), fc.nat()).map(([s, frag, at]) => {
        const big = Buffer.from(frag.repeat(Math.ceil(BIG / Math.max(1, frag.length))), 'latin1');
        const i = at % (s.length + 1);
        return Buffer.concat([s.subarray(0, i), big, s.subarray(i)]);
      }),
    },
  ];
  if (t.kind !== 'bytes') {
    arbs.push({
      weight: 2,
      arbitrary: fc
        .array(fc.oneof(fc.constantFrom(...t.dictionary), fc.string({ maxLength: 6 })), { maxLength: 40 })
        .map((parts) => Buffer.from(parts.join(''))),
    });
  }
  if (t.kind === 'json') {
    const docs = corpus.map((c) => JSON.parse(c.toString('utf8')) as unknown);
    arbs.push(
      {
        weight: 4,
        arbitrary: fc
          .tuple(fc.constantFrom(...docs), fc.nat(), fc.jsonValue())
          .map(([d, n, v]) => Buffer.from(JSON.stringify(swapped(d, n, v)))),
      },
      { weight: 1, arbitrary: fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v))) },
    );
  }
  return fc.oneof(...arbs);
}

/** Runs one input; throws (failing the property) on anything but a value or a StowageError. */
async function contained(t: Target, input: Buffer, scratch: string): Promise<void> {
  const started = performance.now();
  try {
    await t.run(input, scratch);
  } catch (e) {
    if (!(e instanceof StowageError)) {
      const err = e as Error;
      await save(t, input);
      throw new Error(`${t.name}: ${err?.name}: ${err?.message}\n${err?.stack ?? ''}`);
    }
    // A message for a person: some text, not a dump of the input.
    expect(e.message.length).toBeGreaterThan(0);
  }
  const took = performance.now() - started;
  if (LIMIT_MS !== undefined && took > LIMIT_MS) {
    await save(t, input);
    throw new Error(`${t.name}: an input of ${input.length} bytes took ${Math.round(took)} ms`);
  }
}

/** npm run fuzz keeps what it found in the corpus (FUZZ_SAVE=1), for every run after to try first. */
async function save(t: Target, input: Buffer): Promise<void> {
  if (process.env.FUZZ_SAVE !== '1') return;
  const name = `found-${createHash('sha256').update(input).digest('hex').slice(0, 12)}.bin`;
  await writeFile(join(CORPUS, t.name, name), input);
}

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'stowage-fuzz-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe('parsers given hostile input end in a value or a StowageError', () => {
  for (const t of TARGETS) {
    it(`${t.name}: its corpus, then ${RUNS} inputs made from it`, async () => {
      const corpus = await corpusOf(t);
      for (const c of corpus) await contained(t, c, scratch);
      await fc.assert(
        fc.asyncProperty(inputs(t, corpus), (input) => contained(t, input, scratch)),
        { numRuns: RUNS, ...(SEED !== undefined ? { seed: SEED } : {}) },
      );
    }, 600_000);
  }
});
