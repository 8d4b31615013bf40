// Bundles the compiled CLI (dist/cli/main.js and everything it imports, dependencies included) into
// one CommonJS file, dist/stowage.cjs, which bin/stowage.js loads. One file parses faster than three
// hundred modules resolved and read one by one, and V8 can cache its compiled code whole (bin/stowage.js):
// start-up falls from about 0.30 s to 0.15 s on Node 20, which a warm sync, mostly start-up, feels.
// Run by `npm run build` after tsc.
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import http2 from 'node:http2';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');

/**
 * undici loads node:http2 when its module loads, for HTTP/2, which stowage never asks it for (no
 * allowH2); node:http2 costs every start 5 ms. Its two uses are swapped for a stand-in: the header-name
 * constants (fixed by RFC 9113, copied here at build time) and connect(), which loads node:http2 when
 * called. The build fails if undici's text no longer matches, rather than bundling something else.
 */
const lazyHttp2 = {
  name: 'lazy-http2',
  setup(b) {
    b.onLoad({ filter: /[\\/]undici[\\/]lib[\\/]dispatcher[\\/]client-h2\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      const load = "http2 = require('node:http2')";
      const names = text.match(/const \{\s*constants: \{([^}]*)\}\s*\} = http2/)?.[1]?.match(/[A-Z0-9_]+/g);
      const uses = text.match(/\bhttp2\.\w+/g) ?? [];
      if (text.split(load).length !== 2 || !names?.length || uses.some((u) => u !== 'http2.connect'))
        throw new Error(`${args.path} is not what scripts/bundle.mjs expects; update the lazy-http2 plugin`);
      const constants = Object.fromEntries(names.map((n) => [n, http2.constants[n]]));
      if (Object.values(constants).some((v) => v === undefined))
        throw new Error(`node:http2 lacks a constant undici uses (${names.join(', ')})`);
      const standIn = `http2 = { constants: ${JSON.stringify(constants)}, connect: (...a) => require('node:http2').connect(...a) }`;
      return { contents: text.replace(load, standIn), loader: 'js' };
    });
  },
};

await build({
  entryPoints: [join(dist, 'cli', 'main.js')],
  plugins: [lazyHttp2],
  outfile: join(dist, 'stowage.cjs'),
  bundle: true,
  platform: 'node',
  target: 'node20.18',
  format: 'cjs',
  // The keyring is a native addon, found at run time; it stays outside. So do the S3 and PostgreSQL
  // clients (only the replicated store loads them): in the bundle they would be read at every start.
  external: ['@napi-rs/keyring', '@aws-sdk/*', 'pg', 'pg-boss'],
  // CommonJS has no import.meta: the bundle's own URL stands in (the hash worker is found beside it).
  define: { 'import.meta.url': '__stowage_bundle_url' },
  banner: { js: "var __stowage_bundle_url = require('node:url').pathToFileURL(__filename).href;" },
  // Dynamic import() of an external would need a module loader inside vm.Script; require() does not.
  supported: { 'dynamic-import': false },
  // Whitespace and comments out (names stay, for stack traces): a smaller file to read and parse.
  minifyWhitespace: true,
  charset: 'ascii',
  logLevel: 'warning',
  legalComments: 'none',
});
// bin/stowage.js reads the bundle as latin1, which is quicker than UTF-8 and the same for ASCII.
const bytes = await readFile(join(dist, 'stowage.cjs'));
const wide = bytes.findIndex((b) => b > 0x7f);
if (wide >= 0)
  throw new Error(`dist/stowage.cjs is not ASCII (byte ${wide}); bin/stowage.js reads it as latin1`);
// The hash workers run as modules of their own, resolved from the bundle's URL.
for (const name of ['hash-worker.js', 'range-worker.js']) {
  await copyFile(join(dist, 'archive', name), join(dist, name));
}
// The web console's stylesheet and scripts, served from beside the bundle.
await mkdir(join(dist, 'console-assets'), { recursive: true });
for (const name of ['console.css', 'console.js', 'api.js', 'favicon.svg']) {
  await copyFile(join(root, 'src', 'console', 'assets', name), join(dist, 'console-assets', name));
}
// Swagger UI's three files, copied into the build: the package is a build dependency, not a runtime one.
const swagger = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
await mkdir(join(dist, 'console-assets', 'swagger'), { recursive: true });
for (const name of ['swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png']) {
  await copyFile(join(swagger, name), join(dist, 'console-assets', 'swagger', name));
}
