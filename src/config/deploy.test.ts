/**
 * The configurations deploy/ ships are ones stowage accepts: the compose stowage.toml and the TOML the
 * Kubernetes manifests embed (one replica on a volume; several on S3 and PostgreSQL).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseStowageConfig } from './stowage.js';

const DEPLOY = join(import.meta.dirname, '../../deploy');
const env = { HOME: '/home/stowage' };

/** The block scalar under `stowage.toml: |` in a manifest, its indentation removed. */
function embeddedToml(yaml: string): string {
  const lines = yaml.split('\n');
  const start = lines.findIndex((l) => /^\s+stowage\.toml: \|$/.test(l));
  expect(start).toBeGreaterThan(-1);
  const indent = (lines[start + 1]!.match(/^\s*/) ?? [''])[0].length;
  const out: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (l.trim() && l.length - l.trimStart().length < indent) break;
    out.push(l.slice(indent));
  }
  return out.join('\n');
}

describe('deploy/', () => {
  it('ships a compose stowage.toml stowage reads', async () => {
    const text = await readFile(join(DEPLOY, 'stowage.toml'), 'utf8');
    expect(parseStowageConfig(text, 'deploy/stowage.toml', env).s3).toBeUndefined();
  });

  it('embeds in the one-replica manifest a local store on its volume', async () => {
    const c = parseStowageConfig(
      embeddedToml(await readFile(join(DEPLOY, 'kubernetes/stowage.yaml'), 'utf8')),
      'k8s',
      env,
    );
    expect(c.storePath).toBe('/var/lib/stowage/store');
    expect(c.s3).toBeUndefined();
  });

  it('embeds in the replicas manifest the S3 store and PostgreSQL, the password kept out of the URL', async () => {
    const yaml = await readFile(join(DEPLOY, 'kubernetes/stowage-replicas.yaml'), 'utf8');
    const c = parseStowageConfig(embeddedToml(yaml), 'k8s-replicas', env);
    expect(c.s3).toMatchObject({ bucket: 'stowage', prefix: 'production/' });
    expect(c.server.database).toMatch(/^postgres:\/\/stowage@/);
    expect(c.server['database-password-file']).toBe('/etc/stowage/db/password');
    // No volume claim: nothing of a replica's needs to outlive it.
    expect(yaml).not.toContain('PersistentVolumeClaim');
    expect(yaml).toMatch(/replicas: 3/);
  });
});
