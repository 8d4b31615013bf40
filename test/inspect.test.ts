import { describe, expect, it } from 'vitest';
import { nextLink } from '../src/registry/pages.js';
import { harness, insecureConf, stowage, workdir } from './harness/cli.js';
import { startFaultProxy } from './harness/fault-proxy.js';
import { run } from './harness/processes.js';

const h = harness();
const reg = h.registries.plain;

const skopeo = async (...args: string[]) =>
  (await run('skopeo', [...args.slice(0, 1), '--tls-verify=false', ...args.slice(1)])).stdout;

describe('stowage inspect and tags', () => {
  it('agrees with skopeo inspect on digest, layers and config', async () => {
    const w = await workdir('inspect', insecureConf(reg.host));
    const ref = `${reg.host}/fixtures/multi:v1`;
    const r = await stowage(['inspect', ref], { env: w.env });
    expect(r.code).toBe(0);
    const ours = JSON.parse(r.stdout);
    const theirs = JSON.parse(await skopeo('inspect', `docker://${ref}`));
    expect(ours.Digest).toBe(theirs.Digest);
    expect(ours.Layers).toEqual(theirs.Layers);
    expect(ours.Architecture).toBe('amd64');
    expect(ours.Labels).toEqual({ fixture: 'multi' });
    expect(ours.RepoTags).toEqual(['v1']);
    const raw = await stowage(['inspect', '--raw', ref], { env: w.env });
    expect(raw.stdout).toBe(await skopeo('inspect', '--raw', `docker://${ref}`));
    const cfg = await stowage(['inspect', '--config', ref], { env: w.env });
    expect(JSON.parse(cfg.stdout)).toEqual(
      JSON.parse(await skopeo('inspect', '--config', `docker://${ref}`)),
    );
  });

  it('shows one platform of an index, chosen with --platform', async () => {
    const w = await workdir('inspect-index', insecureConf(reg.host));
    const ref = `${reg.host}/fixtures/multiarch:v1`;
    const r = await stowage(['inspect', '--no-tags', '--platform', 'linux/arm64', ref], { env: w.env });
    expect(r.code).toBe(0);
    const ours = JSON.parse(r.stdout);
    expect(ours.Architecture).toBe('arm64');
    expect(ours.Variant).toBe('v8');
    expect(ours.RepoTags).toBeUndefined();
    const theirs = JSON.parse(
      await skopeo('inspect', '--override-arch', 'arm64', '--override-variant', 'v8', `docker://${ref}`),
    );
    expect(ours.Layers).toEqual(theirs.Layers);
  });

  it('lists tags as skopeo list-tags does', async () => {
    const w = await workdir('tags', insecureConf(reg.host));
    for (const t of ['1.0', '1.1', 'latest', '2.0-rc']) {
      await run('skopeo', [
        'copy',
        '--quiet',
        '--dest-tls-verify=false',
        `oci:${h.fixtures.layoutDir}:small`,
        `docker://${reg.host}/fixtures/tagged:${t}`,
      ]);
    }
    const r = await stowage(['tags', `${reg.host}/fixtures/tagged`], { env: w.env });
    expect(r.code).toBe(0);
    const ours = JSON.parse(r.stdout);
    const theirs = JSON.parse(await skopeo('list-tags', `docker://${reg.host}/fixtures/tagged`));
    expect(ours.Repository).toBe(`${reg.host}/fixtures/tagged`);
    expect([...ours.Tags].sort()).toEqual([...theirs.Tags].sort());
    expect(ours.Tags).toHaveLength(4);
    const missing = await stowage(['tags', `${reg.host}/fixtures/absent`], { env: w.env });
    expect(missing.code).toBe(5);
    const bad = await stowage(['tags', `${reg.host}/fixtures/tagged:1.0`], { env: w.env });
    expect(bad.code).toBe(2);
  });

  it('follows Link pagination over the real registry list, page by page', async () => {
    for (const t of ['a', 'b', 'c', 'd', 'e']) {
      await run('skopeo', [
        'copy',
        '--quiet',
        '--dest-tls-verify=false',
        `oci:${h.fixtures.layoutDir}:small`,
        `docker://${reg.host}/fixtures/paged:${t}`,
      ]);
    }
    // docker-registry ignores ?n= on tags/list; the proxy pages its real list, two tags a page.
    const proxy = await startFaultProxy({
      upstream: reg.url,
      fault: (req) =>
        req.url?.includes('/tags/list')
          ? {
              kind: 'respond',
              handle: (r, res) => {
                void (async () => {
                  const real = (await (await fetch(`${reg.url}/v2/fixtures/paged/tags/list`)).json()) as {
                    tags: string[];
                  };
                  const last = new URL(r.url!, 'http://x').searchParams.get('last') ?? '';
                  const rest = real.tags.sort().filter((t) => t > last);
                  const page = rest.slice(0, 2);
                  const headers: Record<string, string> = { 'content-type': 'application/json' };
                  if (rest.length > 2)
                    headers.link = `</v2/fixtures/paged/tags/list?n=2&last=${page.at(-1)}>; rel="next"`;
                  res.writeHead(200, headers);
                  res.end(JSON.stringify({ name: 'fixtures/paged', tags: page }));
                })();
              },
            }
          : undefined,
    });
    try {
      const w = await workdir('tags-paged', insecureConf(proxy.host));
      const r = await stowage(['tags', `${proxy.host}/fixtures/paged`], { env: w.env });
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).Tags).toEqual(['a', 'b', 'c', 'd', 'e']);
      expect(proxy.seen.filter((q) => q.path.includes('/tags/list')).map((q) => q.path)).toEqual([
        '/v2/fixtures/paged/tags/list?n=1000',
        '/v2/fixtures/paged/tags/list?n=2&last=b',
        '/v2/fixtures/paged/tags/list?n=2&last=d',
      ]);
    } finally {
      await proxy.close();
    }
    // The Link parser keeps the path and query, whatever origin the registry names.
    expect(nextLink('<https://other.host/v2/x?last=1>; rel="next"')).toBe('/v2/x?last=1');
    expect(nextLink('</v2/x?last=0>; rel="prev", </v2/x?last=2>; rel=next')).toBe('/v2/x?last=2');
    expect(nextLink('</v2/x?last=0>; rel="prev"')).toBeUndefined();
    // A next page that is no URL is the registry's fault, said as such (found by test/fuzz).
    expect(() => nextLink('<http://[::1>; rel="next"')).toThrow(
      /Link header names a next page that is not a URL/,
    );
  });
});
