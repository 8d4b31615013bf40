/**
 * The configurations deploy/ ships are ones stowage accepts: the compose stowage.toml and the TOML the
 * Kubernetes manifests embed (one replica on a volume; several on S3 and PostgreSQL).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
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

  it('has Kubernetes manifests the restricted Pod Security profile admits, with no secret in a ConfigMap', async () => {
    for (const name of ['stowage.yaml', 'stowage-replicas.yaml']) {
      const yaml = await readFile(join(DEPLOY, 'kubernetes', name), 'utf8');
      expect(yaml, name).toMatch(/seccompProfile: \{type: RuntimeDefault\}/);
      expect(yaml, name).toMatch(/runAsNonRoot: true/);
      expect(yaml, name).toMatch(/allowPrivilegeEscalation: false/);
      expect(yaml, name).toMatch(/capabilities: \{drop: \[ALL\]\}/);
      expect(yaml, name).toMatch(/readOnlyRootFilesystem: true/);
      // A read-only root needs somewhere to spool: /tmp on an emptyDir.
      expect(yaml, name).toMatch(/\{name: tmp, mountPath: \/tmp\}/);
      expect(yaml, name).toMatch(/- name: tmp\n\s+emptyDir:/);
      // The image is a choice to make: a versioned reference and a pull policy, never :latest.
      expect(yaml, name).toMatch(/image: \S+:\d+\.\d+\.\d+\n\s+imagePullPolicy: IfNotPresent/);
      expect(yaml, name).not.toMatch(/image: \S+:latest/);
      // stowage.toml holds the tokens: it is a Secret, readable by the pod's group (fsGroup).
      expect(yaml, name).not.toContain('kind: ConfigMap');
      expect(yaml, name).toMatch(/secretName: stowage(-replicas)?-config, defaultMode: 0440/);
      expect(yaml, name).not.toMatch(/defaultMode: 04?00\}/);
    }
  });

  it('has a systemd unit that systemd-analyze rates below 2.0, with no MemoryDenyWriteExecute (V8 needs W^X off)', async () => {
    const unit = join(DEPLOY, 'stowage.service');
    const { stdout } = await promisify(execFile)('systemd-analyze', ['security', '--offline=yes', unit]);
    const score = Number(/Overall exposure level for stowage\.service: ([\d.]+)/.exec(stdout)?.[1]);
    expect(score).toBeLessThan(2);
    const text = await readFile(unit, 'utf8');
    expect(text).toMatch(/^DynamicUser=yes$/m);
    expect(text).toMatch(/^LoadCredential=auth\.json:/m);
    expect(text).not.toMatch(/^MemoryDenyWriteExecute=yes/m);
  });

  it('builds an image that runs with nothing mounted, under any UID in group 0', async () => {
    const file = await readFile(join(DEPLOY, 'Containerfile'), 'utf8');
    expect(file).toContain('COPY deploy/image/stowage.toml deploy/image/registries.conf /etc/stowage/');
    expect(file).toMatch(/--gid 0/);
    expect(file).toMatch(/chmod g=u \/var\/lib\/stowage/);
    expect(file).toContain('podman build --format docker');
    // The replicas' optional packages go into the image, at the lock file's versions.
    expect(file).toMatch(/npm install --no-save [^\n]*package-lock[^\n]*peerDependencies/);
    const image = parseStowageConfig(
      await readFile(join(DEPLOY, 'image/stowage.toml'), 'utf8'),
      'image',
      env,
    );
    expect(image.storePath).toBe('/var/lib/stowage/store');
    expect(image.server.state).toBe('/var/lib/stowage/state');
    const ignore = await readFile(join(DEPLOY, '../.containerignore'), 'utf8');
    for (const dir of ['node_modules', 'dist', '.git']) expect(ignore.split('\n')).toContain(dir);
    const compose = await readFile(join(DEPLOY, 'compose.yaml'), 'utf8');
    expect(compose).toMatch(/secrets:\n\s+- auth\.json/);
    expect(compose).toContain('REGISTRY_AUTH_FILE: /run/secrets/auth.json');
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
