import { describe, expect, it } from 'vitest';
import { parseReference } from '../reference/reference.js';
import { dockerScopes, parsePolicy, requirementsFor } from './policy.js';
import { identityMatches } from './verify.js';

describe('policy.json', () => {
  it('names scopes from the most specific: reference, repository, namespaces, registry, domain wildcards', () => {
    expect(dockerScopes(parseReference('registry.example.com:5000/team/sub/app:1.4'))).toEqual([
      'registry.example.com:5000/team/sub/app:1.4',
      'registry.example.com:5000/team/sub/app',
      'registry.example.com:5000/team/sub',
      'registry.example.com:5000/team',
      'registry.example.com:5000',
      '*.example.com',
      '*.com',
    ]);
  });

  it('takes the most specific scope, then the transport default, then the global one', () => {
    const p = parsePolicy(
      JSON.stringify({
        default: [{ type: 'reject' }],
        transports: {
          docker: {
            'r.test/team': [{ type: 'insecureAcceptAnything' }],
            'r.test/team/app:1': [{ type: 'reject' }],
          },
          'oci-archive': { '': [{ type: 'insecureAcceptAnything' }] },
        },
      }),
      'p.json',
    );
    const of = (ref: string) => requirementsFor(p, 'docker', dockerScopes(parseReference(ref)));
    expect(of('r.test/team/app:1').requirements[0]!.type).toBe('reject');
    expect(of('r.test/team/app:2').requirements[0]!.type).toBe('insecureAcceptAnything');
    expect(of('other.test/app:1').scope).toBe('default');
    expect(requirementsFor(p, 'oci-archive', ['/x.tar']).scope).toBe('transports.oci-archive[""]');
  });

  it('refuses what it does not know, naming the file and the field', () => {
    expect(() => parsePolicy('{"default":[{"type":"insecureAcceptAnything","x":1}]}', 'p.json')).toThrow(
      /p\.json: default\.0/,
    );
    expect(() => parsePolicy('{"default":[{"type":"trustMe"}]}', 'p.json')).toThrow(/p\.json/);
    expect(() => parsePolicy('{"default":[]}', 'p.json')).toThrow(/default/);
    expect(() => parsePolicy('not json', 'p.json')).toThrow(/not valid JSON/);
  });
});

describe('signedIdentity', () => {
  const ref = parseReference('r.test/team/app:1');
  const byDigest = parseReference(`r.test/team/app@sha256:${'a'.repeat(64)}`);
  it('matches as containers-policy.json(5) describes', () => {
    expect(identityMatches({ type: 'matchRepoDigestOrExact' }, ref, 'r.test/team/app:1')).toBe(true);
    expect(identityMatches({ type: 'matchRepoDigestOrExact' }, ref, 'r.test/team/app:2')).toBe(false);
    expect(identityMatches({ type: 'matchRepoDigestOrExact' }, byDigest, 'r.test/team/app:9')).toBe(true);
    expect(identityMatches({ type: 'matchExact' }, ref, 'r.test/team/app')).toBe(false);
    expect(identityMatches({ type: 'matchRepository' }, ref, 'r.test/team/app')).toBe(true);
    expect(identityMatches({ type: 'matchRepository' }, ref, 'r.test/team/other:1')).toBe(false);
    expect(
      identityMatches({ type: 'exactReference', dockerReference: 'up.test/app:1' }, ref, 'up.test/app:1'),
    ).toBe(true);
    expect(
      identityMatches({ type: 'exactRepository', dockerRepository: 'up.test/app' }, ref, 'up.test/app:7'),
    ).toBe(true);
    const remap = { type: 'remapIdentity' as const, prefix: 'r.test/team', signedPrefix: 'up.test/ns' };
    expect(identityMatches(remap, ref, 'up.test/ns/app:1')).toBe(true);
    expect(identityMatches(remap, ref, 'r.test/team/app:1')).toBe(false);
    expect(identityMatches({ type: 'matchRepository' }, ref, 'not a reference!')).toBe(false);
  });
});
