import { readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';

/** The certs.d directories containers/image reads, most specific first. */
export function certDirsFor(host: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const home = env.HOME || homedir();
  return [
    join(home, '.config/containers/certs.d', host),
    join('/etc/containers/certs.d', host),
    join('/etc/docker/certs.d', host),
  ];
}

function readCAs(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.endsWith('.crt'))
    .sort()
    .map((n) => readFileSync(join(dir, n), 'utf8'));
}

/**
 * Extra CA certificates for a registry: *.crt from --cert-dir when given, else from certs.d.
 * Returns undefined when there are none (system roots only).
 */
export function extraCAs(host: string, certDir?: string): string[] | undefined {
  const dirs = certDir ? [certDir] : certDirsFor(host);
  const cas = dirs.flatMap(readCAs);
  return cas.length > 0 ? [...rootCertificates, ...cas] : undefined;
}
