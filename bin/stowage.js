#!/usr/bin/env node
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import module from 'node:module';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';

// Memory, measured on a 450 MB pull (README, Benchmark): undici parses HTTP with llhttp compiled to
// WebAssembly, and V8's optimising tier for it costs about 30 MB resident while buying nothing
// measurable here (the network and the disk are the limits), so WebAssembly stays on the baseline
// compiler. And a young generation that never grows keeps the socket buffers that streams drop from
// piling up between collections (Node 24 would otherwise peak 60 MB higher). Both are set before
// anything is loaded.
setFlagsFromString('--liftoff-only');
setFlagsFromString('--semi-space-growth-factor=1');

// The CLI is one bundled file (scripts/bundle.mjs), whose compiled code is cached between runs.
const bundle = fileURLToPath(new URL('../dist/stowage.cjs', import.meta.url));
if (!existsSync(bundle)) {
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
const { main } = load(bundle);
process.exitCode = await main(process.argv);

/**
 * Loads the bundle. Node >= 22.1 caches compiled code itself (module.enableCompileCache). Node 20 does
 * not, so V8's code cache is kept by hand: in the user's own cache directory, named by the bundle's
 * sha256 (V8 checks only the source's length), written once after a run that had none, and read only
 * if this user owns it and nobody else can write it (it holds code that runs). NODE_DISABLE_COMPILE_CACHE
 * turns both off, as it does Node's.
 *
 * Either way there is one cache per command: a cache holds the functions compiled by the run that wrote
 * it, and is not written again, so one shared cache made by `stowage --help` would leave every later
 * sync compiling its code afresh (30 ms a run here).
 */
function load(file) {
  const require = module.createRequire(file);
  const off = Boolean(process.env.NODE_DISABLE_COMPILE_CACHE);
  const command = commandName(process.argv.slice(2));
  if (module.enableCompileCache) {
    if (!off) {
      // Node's default place, a directory per command. With NODE_COMPILE_CACHE set, Node has turned its
      // cache on already, there, and this call changes nothing.
      const base = process.env.NODE_COMPILE_CACHE || join(tmpdir(), 'node-compile-cache');
      module.enableCompileCache(join(base, `stowage-${command}`));
    }
    return require(file);
  }
  // ASCII (scripts/bundle.mjs checks), so latin1: the same text, decoded in a third of the time.
  const source = readFileSync(file, 'latin1');
  const cache = off ? undefined : cacheFile(source, command);
  const cachedData = cache && readOwn(cache.path);
  const script = new Script(module.wrap(source), { filename: file, cachedData });
  const mod = { exports: {} };
  script.runInThisContext().call(mod.exports, mod.exports, require, mod, file, join(file, '..'));
  if (cache && (!cachedData || script.cachedDataRejected)) {
    process.once('exit', () => saveCache(cache, script));
  }
  return mod.exports;
}

/** The command run, which gets a code cache of its own; anything else (--help, a typo) shares "main". */
function commandName(args) {
  const commands = [
    ...['pull', 'push', 'copy', 'inspect', 'tags', 'verify', 'export', 'import', 'flatten'],
    ...['sync', 'archives', 'df', 'registries', 'login', 'logout', 'serve', 'token'],
  ];
  const first = args.find((a) => !a.startsWith('-'));
  return first && commands.includes(first) ? first : 'main';
}

function cacheFile(source, command) {
  const base = process.env.XDG_CACHE_HOME || join(process.env.HOME || homedir(), '.cache');
  const dir = join(base, 'stowage', 'code');
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 32);
  return { dir, hash, path: join(dir, `${hash}-${command}-${process.version}-${process.arch}.v8`) };
}

function readOwn(path) {
  let fd;
  try {
    fd = openSync(path, 'r');
    const s = fstatSync(fd);
    if (!s.isFile() || s.uid !== process.getuid?.() || (s.mode & 0o022) !== 0) return undefined;
    return readFileSync(fd);
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Best effort: a cache that cannot be written only costs the next start its speed. */
function saveCache(cache, script) {
  try {
    mkdirSync(cache.dir, { recursive: true, mode: 0o700 });
    const tmp = `${cache.path}.${process.pid}.tmp`;
    writeFileSync(tmp, script.createCachedData(), { mode: 0o600 });
    renameSync(tmp, cache.path);
    // Caches of other builds are of no further use; the other commands' caches of this build are.
    for (const name of readdirSync(cache.dir)) {
      if (name.endsWith('.v8') && !name.startsWith(`${cache.hash}-`)) unlinkSync(join(cache.dir, name));
    }
  } catch {
    // ignored
  }
}
