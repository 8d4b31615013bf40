/**
 * The console's files: its own stylesheet and scripts (src/console/assets, copied beside the bundle
 * as dist/console-assets by the build) and Swagger UI's (copied by the build into
 * dist/console-assets/swagger from swagger-ui-dist, a build dependency; read from the package itself
 * when running from the sources). Only the files listed are served; nothing is fetched from another
 * origin.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES: Record<string, string> = {
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

const OWN = new Set(['console.css', 'console.js', 'api.js', 'favicon.svg']);
const SWAGGER = new Set(['swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png']);

const here = dirname(fileURLToPath(import.meta.url));

/** Swagger UI's file in the swagger-ui-dist package, where it is installed (a checkout, the tests). */
function swaggerPackage(file: string): string[] {
  try {
    return [join(dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json')), file)];
  } catch {
    return [];
  }
}

async function firstReadable(paths: string[]): Promise<Buffer | undefined> {
  for (const p of paths) {
    const b = await readFile(p).catch(() => undefined);
    if (b) return b;
  }
  return undefined;
}

const cache = new Map<string, Promise<Buffer | undefined>>();

/** A console asset by name (`console.js`, `swagger/swagger-ui.css`, ...) with its content type, if it is one. */
export async function asset(name: string): Promise<{ body: Buffer; type: string } | undefined> {
  let path: string[];
  if (OWN.has(name)) {
    // From the sources (tests, tsc output) or beside the bundle (dist/stowage.cjs).
    path = [join(here, 'assets', name), join(here, 'console-assets', name)];
  } else if (name.startsWith('swagger/') && SWAGGER.has(name.slice(8))) {
    path = [join(here, 'console-assets', name), ...swaggerPackage(name.slice(8))];
  } else {
    return undefined;
  }
  let body = cache.get(name);
  if (!body) {
    body = firstReadable(path);
    cache.set(name, body);
  }
  const bytes = await body;
  if (!bytes) return undefined;
  return { body: bytes, type: TYPES[name.slice(name.lastIndexOf('.'))] ?? 'application/octet-stream' };
}
