import { describe, expect, it } from 'vitest';
import { isRepositoryPattern, mirrorFor, parseRepositoryPattern } from './pattern.js';

describe('repository patterns', () => {
  it('matches one segment with * and one or more with **', () => {
    const one = parseRepositoryPattern('127.0.0.1:5000/team/*');
    expect(one.host).toBe('127.0.0.1:5000');
    expect(one.prefix).toBe('team');
    expect(['team/app', 'team/app/api', 'other/app', 'team'].map(one.matches)).toEqual([
      true,
      false,
      false,
      false,
    ]);
    const deep = parseRepositoryPattern('127.0.0.1:5000/team/**');
    expect(['team/app', 'team/app/api', 'teams/app', 'team'].map(deep.matches)).toEqual([
      true,
      true,
      false,
      false,
    ]);
    const all = parseRepositoryPattern('registry.test/**');
    expect(all.prefix).toBe('');
    expect(['a', 'a/b/c'].map(all.matches)).toEqual([true, true]);
    const mid = parseRepositoryPattern('registry.test/team/**/app');
    expect(['team/x/app', 'team/x/y/app', 'team/app'].map(mid.matches)).toEqual([true, true, false]);
    const part = parseRepositoryPattern('registry.test/team/app-*');
    expect(['team/app-1', 'team/app', 'team/app-1/x', 'team/xapp-1'].map(part.matches)).toEqual([
      true,
      false,
      false,
      false,
    ]);
  });

  it('says what is wrong with a pattern that cannot be one', () => {
    expect(() => parseRepositoryPattern('team/**')).toThrow(/must start with the registry/);
    expect(() => parseRepositoryPattern('registry.test/team/app')).toThrow(/has no \* or \*\*/);
    expect(() => parseRepositoryPattern('registry.test/team/app**')).toThrow(/stands alone/);
    expect(() => parseRepositoryPattern('registry.test/Team/**')).toThrow(/not a repository path segment/);
    expect(isRepositoryPattern('registry.test/team/**')).toBe(true);
    expect(isRepositoryPattern('registry.test/team/app')).toBe(false);
  });

  it('maps each repository to its mirror by {repository} or {path}', () => {
    const p = parseRepositoryPattern('127.0.0.1:5000/team/**');
    expect(mirrorFor('mirror.test/copy/{repository}', p, 'team/app/api')).toBe(
      'mirror.test/copy/team/app/api',
    );
    expect(mirrorFor('mirror.test/copy/{path}', p, 'team/app/api')).toBe('mirror.test/copy/app/api');
    expect(mirrorFor('mirror.test/{path}', parseRepositoryPattern('registry.test/**'), 'a/b')).toBe(
      'mirror.test/a/b',
    );
  });
});
