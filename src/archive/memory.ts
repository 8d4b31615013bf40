/**
 * Keeps memory flat while large amounts of data stream through zlib. Each decompressed chunk is a new
 * 1 MiB buffer that dies at once, but the JavaScript heap barely notices (the buffers live outside it),
 * so V8 lets tens of megabytes of dead buffers pile up before it collects them: measured, 50 MB on
 * Node 20 and 90 MB on Node 24 while exporting 450 MB. A young-generation collection every few
 * megabytes frees them cheaply. Many small entries (headers, small files) leave garbage that outlives
 * the young generation, so where a checkpoint saw many entries, or every 256 MiB, it is a full one.
 * The collector is V8's own gc(), made reachable at run time; where it is not, nothing happens.
 */
import v8 from 'node:v8';
import vm from 'node:vm';

type Collector = (options?: { type: 'minor' | 'major' }) => void;
let collector: Collector | null | undefined;

function gc(): Collector | null {
  if (collector !== undefined) return collector;
  try {
    v8.setFlagsFromString('--expose-gc');
    collector = vm.runInNewContext('gc') as Collector;
  } catch {
    collector = null;
  }
  return collector;
}

export class GarbageBudget {
  private bytes = 0;
  private sinceMajor = 0;
  private entries = 0;
  constructor(
    private readonly every = 4 << 20,
    private readonly majorEvery = 256 << 20,
    /** Entries per checkpoint above which the garbage is mostly small objects: collect it all. */
    private readonly denseEntries = 100,
  ) {}

  /** Counts bytes that passed and became garbage; collects when the budget is spent. */
  spend(n: number): void {
    this.bytes += n;
    if (this.bytes < this.every) return;
    this.sinceMajor += this.bytes;
    this.bytes = 0;
    const dense = this.entries > this.denseEntries;
    this.entries = 0;
    if (dense || this.sinceMajor >= this.majorEvery) {
      this.sinceMajor = 0;
      gc()?.();
    } else gc()?.({ type: 'minor' });
  }

  /** Counts an entry: many entries per checkpoint make the next collection a full one. */
  entry(): void {
    this.entries++;
  }
}
