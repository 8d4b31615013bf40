/**
 * registries.conf against the real registries: mirrors tried before the primary (a mirror that is
 * down, a mirror that serves, digest-only and tag-only mirrors), aliases, wildcards, blocked entries,
 * and `stowage registries` showing the effective configuration. Names under .test are never looked
 * up: every one of them is rewritten to a loopback registry or refused before any connection.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { harness, stowage, workdir } from './harness/cli.js';
import { deadPort } from './harness/tools.js';

const h = harness();
const plain = h.registries.plain;
const tls = h.registries.tls;
const smallDigest = h.fixtures.images.small!.digest;

async function pullJson(env: NodeJS.ProcessEnv, dir: string, ref: string, extra: string[] = []) {
  const r = await stowage(['pull', '--json', ...extra, ref, '-o', join(dir, `${Math.random()}.tar`)], {
    env,
  });
  return { ...r, result: r.code === 0 ? JSON.parse(r.stdout) : undefined };
}

describe('registries.conf', () => {
  it('tries mirrors in order before the primary, and says which one served', async () => {
    const dead = await deadPort();
    const conf = `
[[registry]]
prefix = "src.test/fixtures"
location = "${plain.host}/fixtures"
insecure = true

[[registry.mirror]]
location = "127.0.0.1:${dead}/down"
insecure = true

[[registry.mirror]]
location = "${tls.host}/fixtures"
`;
    const w = await workdir('mirrors', conf);
    // The first mirror is down, the second (TLS, verified with --cert-dir) serves.
    const r = await pullJson(w.env, w.dir, 'src.test/fixtures/small:v1', ['--cert-dir', h.caDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.result.source).toBe(`${tls.host}/fixtures/small`);
    expect(r.result.digest).toBe(smallDigest);

    // Without the CA the TLS mirror fails too, and the primary serves.
    const p = await pullJson(w.env, w.dir, 'src.test/fixtures/small:v1');
    expect(p.code, p.stderr).toBe(0);
    expect(p.result.source).toBe(`${plain.host}/fixtures/small`);

    // An image no endpoint has: the primary's answer, with what the mirrors said.
    const none = await pullJson(w.env, w.dir, 'src.test/fixtures/nothing:v1');
    expect(none.code).toBe(5);
    expect(none.stderr).toMatch(
      /not found.*mirrors tried first: 127\.0\.0\.1:\d+\/down\/nothing: cannot reach/s,
    );
  });

  it('uses a digest-only mirror for digests and a tag-only one for tags', async () => {
    const conf = `
[[registry]]
prefix = "src.test/fixtures"
location = "${plain.host}/fixtures"
insecure = true

[[registry.mirror]]
location = "${h.registries.token.host}/fixtures"
insecure = true
pull-from-mirror = "digest-only"
`;
    const w = await workdir('digest-only', conf);
    const byTag = await pullJson(w.env, w.dir, 'src.test/fixtures/small:v1');
    expect(byTag.code, byTag.stderr).toBe(0);
    expect(byTag.result.source).toBe(`${plain.host}/fixtures/small`);
    const byDigest = await pullJson(w.env, w.dir, `src.test/fixtures/small@${smallDigest}`);
    expect(byDigest.code, byDigest.stderr).toBe(0);
    expect(byDigest.result.source).toBe(`${h.registries.token.host}/fixtures/small`);

    const tagOnly = await workdir('tag-only', conf.replace('digest-only', 'tag-only'));
    expect((await pullJson(tagOnly.env, tagOnly.dir, 'src.test/fixtures/small:v1')).result.source).toBe(
      `${h.registries.token.host}/fixtures/small`,
    );
    expect(
      (await pullJson(tagOnly.env, tagOnly.dir, `src.test/fixtures/small@${smallDigest}`)).result.source,
    ).toBe(`${plain.host}/fixtures/small`);
  });

  it('resolves aliases and search registries, refuses ambiguity in enforcing mode, honours wildcards', async () => {
    const base = `
unqualified-search-registries = ["${plain.host}", "${tls.host}"]

[[registry]]
location = "${plain.host}"
insecure = true

[[registry]]
prefix = "*.blocked.test"
blocked = true

[[registry]]
prefix = "*.mirrored.test"

[[registry.mirror]]
location = "${plain.host}/fixtures"
insecure = true

[aliases]
"tiny" = "${plain.host}/fixtures/small"
`;
    const w = await workdir('aliases', base);
    const alias = await pullJson(w.env, w.dir, 'tiny:v1');
    expect(alias.code, alias.stderr).toBe(0);
    expect(alias.result.reference).toBe(`${plain.host}/fixtures/small:v1`);

    // Permissive (the default): search registries in order; the first has it.
    const search = await pullJson(w.env, w.dir, 'fixtures/small:v1');
    expect(search.code, search.stderr).toBe(0);
    expect(search.result.source).toBe(`${plain.host}/fixtures/small`);

    const strict = await workdir('enforcing', `short-name-mode = "enforcing"\n${base}`);
    const ambiguous = await pullJson(strict.env, strict.dir, 'fixtures/small:v1');
    expect(ambiguous.code).toBe(2);
    expect(ambiguous.stderr).toContain(
      `could be ${plain.host}/fixtures/small:v1, ${tls.host}/fixtures/small:v1`,
    );
    expect((await pullJson(strict.env, strict.dir, 'tiny:v1')).code).toBe(0);

    const blocked = await pullJson(w.env, w.dir, 'a.blocked.test/app:1');
    expect(blocked.code).toBe(3);
    expect(blocked.stderr).toContain('prefix "*.blocked.test"');

    // A wildcard entry's mirror replaces the matched host.
    const wild = await pullJson(w.env, w.dir, 'eu.mirrored.test/small:v1');
    expect(wild.code, wild.stderr).toBe(0);
    expect(wild.result.source).toBe(`${plain.host}/fixtures/small`);
    expect(wild.result.digest).toBe(smallDigest);

    // stowage registries shows the same resolution.
    const shown = await stowage(['registries', '--json', 'tiny:v1'], { env: w.env });
    expect(JSON.parse(shown.stdout).candidates).toEqual([
      {
        name: `${plain.host}/fixtures/small:v1`,
        pull: [{ endpoint: `${plain.host}/fixtures/small`, mirror: false, insecure: true }],
        push: { endpoint: `${plain.host}/fixtures/small`, insecure: true },
      },
    ]);
    const listing = await stowage(['registries'], { env: w.env });
    expect(listing.stdout).toContain('short-name-mode: permissive');
    expect(listing.stdout).toContain(`tiny = ${plain.host}/fixtures/small`);
    expect(listing.stdout).toContain(`  mirror ${plain.host}/fixtures (insecure), pull-from-mirror all`);
  });

  it('goes on to the next search registry when one is unreachable or refuses, as podman does', async () => {
    const dead = await deadPort();
    const conf = `unqualified-search-registries = ["127.0.0.1:${dead}", "${plain.host}"]
short-name-mode = "permissive"

[[registry]]
location = "127.0.0.1:${dead}"
insecure = true

[[registry]]
location = "${plain.host}"
insecure = true
`;
    const w = await workdir('search-down', conf);
    // No retries: the dead registry fails at once, which is all this needs.
    const quick = ['--retry-times', '0'];
    const r = await pullJson(w.env, w.dir, 'fixtures/small:v1', quick);
    expect(r.code, r.stderr).toBe(0);
    expect(r.result.source).toBe(`${plain.host}/fixtures/small`);
    // Every candidate failing is an error that names each.
    const none = await pullJson(w.env, w.dir, 'fixtures/absent:v1', quick);
    expect(none.code).toBe(8);
    expect(none.stderr).toContain(`127.0.0.1:${dead}/fixtures/absent:v1: cannot reach`);
    expect(none.stderr).toContain(`${plain.host}/fixtures/absent:v1`);
    const disabled = await workdir('search-down-disabled', conf.replace('"permissive"', '"disabled"'));
    expect((await pullJson(disabled.env, disabled.dir, 'fixtures/small:v1', quick)).code).toBe(0);
  });

  it('refuses pull-from-mirror on a [[registry]], naming the key and the file', async () => {
    const w = await workdir(
      'pfm',
      `[[registry]]\nlocation = "${plain.host}"\npull-from-mirror = "digest-only"\n`,
    );
    const r = await stowage(['registries'], { env: w.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('pull-from-mirror');
    expect(r.stderr).toContain(w.conf);
    expect(r.stderr).toContain('[[registry.mirror]]');
  });

  it('refuses the version 1 format with directions', async () => {
    const w = await workdir('v1', '[registries.search]\nregistries = ["a.test"]\n');
    const r = await stowage(['registries'], { env: w.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/version 1 format.*convert it to version 2/);
  });
});
