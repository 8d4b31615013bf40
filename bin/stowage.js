#!/usr/bin/env node
import { existsSync } from 'node:fs';
import module from 'node:module';
import { setFlagsFromString } from 'node:v8';

// Memory, measured on a 450 MB pull (README, Benchmark): undici parses HTTP with llhttp compiled to
// WebAssembly, and V8's optimising tier for it costs about 30 MB resident while buying nothing
// measurable here (the network and the disk are the limits), so WebAssembly stays on the baseline
// compiler. And a young generation that never grows keeps the socket buffers that streams drop from
// piling up between collections (Node 24 would otherwise peak 60 MB higher). Both are set before
// anything is loaded.
setFlagsFromString('--liftoff-only');
setFlagsFromString('--semi-space-growth-factor=1');

// Node >= 22.1 caches compiled modules on disk: faster start-up for every later run.
module.enableCompileCache?.();

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('stowage: not built yet; run `npm run build` in the stowage directory first\n');
  process.exit(1);
}
// A reader that goes away (`stowage export -o - | head`) ends the output, not with a stack trace.
process.stdout.on('error', (e) => {
  // A command writing to stdout listens itself, to clean up and fail properly.
  if (process.stdout.listenerCount('error') > 1) return;
  if (e.code === 'EPIPE') process.exit(process.exitCode || 141);
  throw e;
});
const { main } = await import(entry.href);
process.exitCode = await main(process.argv);
