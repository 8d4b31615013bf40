#!/usr/bin/env node
import { existsSync } from 'node:fs';
import module from 'node:module';

// Node >= 22.1 caches compiled modules on disk: faster start-up for every later run.
module.enableCompileCache?.();

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('stowage: not built yet; run `npm run build` in the stowage directory first\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv);
