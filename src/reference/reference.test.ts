import { describe, expect, it } from 'vitest';
import { StowageError } from '../errors.js';
import {
  familiarName,
  formatReference,
  parseReference,
  parseRepository,
  withDefaultTag,
} from './reference.js';
import { parseTransportReference } from './transport.js';

describe('parseReference', () => {
  it.each([
    ['alpine', 'docker.io/library/alpine', true],
    ['alpine:3.20', 'docker.io/library/alpine:3.20', true],
    ['library/alpine', 'docker.io/library/alpine', true],
    ['user/app:1', 'docker.io/user/app:1', true],
    ['docker.io/alpine', 'docker.io/library/alpine', false],
    ['index.docker.io/library/alpine:edge', 'docker.io/library/alpine:edge', false],
    ['localhost/app', 'localhost/app', false],
    ['localhost:5000/a/b/c:tag', 'localhost:5000/a/b/c:tag', false],
    ['127.0.0.1:5000/fixtures/small:v1', '127.0.0.1:5000/fixtures/small:v1', false],
    ['[::1]:5000/app:v', '[::1]:5000/app:v', false],
    ['quay.io/org/app_name__x-y.z:V_1.0-rc', 'quay.io/org/app_name__x-y.z:V_1.0-rc', false],
  ])('%s -> %s', (input, expected, short) => {
    const ref = parseReference(input);
    expect(formatReference(ref)).toBe(expected);
    expect(ref.shortName).toBe(short);
  });

  it('keeps tag and digest together', () => {
    const d = `sha256:${'a'.repeat(64)}`;
    const ref = parseReference(`reg.local/app:1.0@${d}`);
    expect(ref).toMatchObject({ domain: 'reg.local', path: 'app', tag: '1.0', digest: d });
    expect(familiarName(parseReference('alpine:3'))).toBe('alpine:3');
  });

  it('defaults the tag to latest only without tag or digest', () => {
    expect(withDefaultTag(parseReference('alpine')).tag).toBe('latest');
    expect(withDefaultTag(parseReference(`alpine@sha256:${'b'.repeat(64)}`)).tag).toBeUndefined();
  });

  it.each([
    ['', 'empty'],
    ['Alpine', 'lowercase'],
    ['reg.local/App:1', 'lowercase'],
    ['app:bad tag', 'white space'],
    ['app:-tag', 'not a valid tag'],
    ['app@sha256:1234', 'not a valid digest'],
    ['https://reg.local/app', 'URL'],
    ['reg.local/a//b', 'path component'],
    ['reg.local:abc/app', 'registry host'],
    [`a:${'x'.repeat(129)}`, 'not a valid tag'],
  ])('rejects %j (%s)', (input, why) => {
    expect(() => parseReference(input)).toThrowError(StowageError);
    expect(() => parseReference(input)).toThrowError(why);
  });

  it('parseRepository refuses a tag', () => {
    expect(() => parseRepository('reg.local/app:1')).toThrowError('names an image, not a repository');
    expect(parseRepository('reg.local/app').path).toBe('app');
  });
});

describe('parseTransportReference', () => {
  it('reads skopeo-style transports', () => {
    expect(parseTransportReference('docker://reg.local/app:1')).toMatchObject({ transport: 'docker' });
    expect(parseTransportReference('reg.local/app:1')).toMatchObject({ transport: 'docker' });
    expect(parseTransportReference('oci-archive:/tmp/a.tar:app:1')).toEqual({
      transport: 'oci-archive',
      path: '/tmp/a.tar',
      name: 'app:1',
    });
    expect(parseTransportReference('docker-archive:/tmp/a.tar')).toEqual({
      transport: 'docker-archive',
      path: '/tmp/a.tar',
      name: undefined,
    });
    expect(parseTransportReference('oci:/tmp/layout:v1')).toEqual({
      transport: 'oci',
      path: '/tmp/layout',
      name: 'v1',
    });
    expect(parseTransportReference('dir:/tmp/d')).toEqual({ transport: 'dir', path: '/tmp/d' });
    expect(() => parseTransportReference('containers-storage:app')).toThrowError('not supported');
    expect(() => parseTransportReference('oci-archive:')).toThrowError('needs a path');
  });
});

describe('skopeo’s docker:// prefix', () => {
  it('is taken off in one place, and only at the start', async () => {
    const { registrySpelling } = await import('./transport.js');
    expect(registrySpelling('docker://127.0.0.1:5000/team/app:1')).toBe('127.0.0.1:5000/team/app:1');
    expect(registrySpelling('127.0.0.1:5000/team/app:1')).toBe('127.0.0.1:5000/team/app:1');
    expect(registrySpelling('oci-archive:docker://x')).toBe('oci-archive:docker://x');
  });
});
