import { describe, expect, it } from 'vitest';
import { parseChanges, splitWords } from './changes.js';

describe('--change instructions', () => {
  it('reads JSON and shell forms of CMD and ENTRYPOINT', () => {
    expect(parseChanges(['CMD ["/bin/sh", "-c", "x"]'], {}).Cmd).toEqual(['/bin/sh', '-c', 'x']);
    expect(parseChanges(['cmd echo "hi there"'], {}).Cmd).toEqual(['/bin/sh', '-c', 'echo "hi there"']);
    const c = parseChanges(['ENTRYPOINT ["/init"]'], { Cmd: ['old'] });
    expect(c.Entrypoint).toEqual(['/init']);
    // As in a Dockerfile, a new ENTRYPOINT drops an inherited CMD, but not one set alongside it.
    expect(c.Cmd).toBeUndefined();
    expect(parseChanges(['CMD ["a"]', 'ENTRYPOINT ["/init"]'], { Cmd: ['old'] }).Cmd).toEqual(['a']);
  });

  it('reads ENV and LABEL lists with quotes, and the legacy KEY VALUE form', () => {
    const c = parseChanges(
      ['ENV A=1 B="two words" C=\'single\' D=esc\\ aped', 'ENV LEGACY some value', 'LABEL "x.y"=z a=b'],
      { Env: ['A=0', 'PATH=/bin'] },
    );
    expect(c.Env).toEqual(['A=1', 'PATH=/bin', 'B=two words', 'C=single', 'D=esc aped', 'LEGACY=some value']);
    expect(c.Labels).toEqual({ 'x.y': 'z', a: 'b' });
  });

  it('reads EXPOSE, VOLUME, USER, WORKDIR and STOPSIGNAL', () => {
    const c = parseChanges(
      [
        'EXPOSE 80 53/UDP 7000-7010',
        'VOLUME /a /b',
        'VOLUME ["/c d"]',
        'USER app:app',
        'WORKDIR /srv',
        'WORKDIR data',
        'STOPSIGNAL SIGQUIT',
      ],
      {},
    );
    expect(c.ExposedPorts).toEqual({ '80/tcp': {}, '53/udp': {}, '7000-7010/tcp': {} });
    expect(c.Volumes).toEqual({ '/a': {}, '/b': {}, '/c d': {} });
    expect(c.User).toBe('app:app');
    expect(c.WorkingDir).toBe('/srv/data');
    expect(c.StopSignal).toBe('SIGQUIT');
  });

  it('writes keys in a fixed order and drops nulls', () => {
    const c = parseChanges(['USER x', 'CMD ["y"]'], { Cmd: null, Custom: 1, Env: ['A=1'] } as never);
    expect(Object.keys(c)).toEqual(['User', 'Env', 'Cmd', 'Custom']);
  });

  it('refuses what docker refuses, naming the change', () => {
    expect(() => parseChanges(['RUN rm -rf /'], {})).toThrow(
      /--change "RUN rm -rf \/": unknown instruction "RUN"; use one of CMD/,
    );
    expect(() => parseChanges(['EXPOSE http'], {})).toThrow(/"http" is not a port/);
    expect(() => parseChanges(['CMD ["a", 1]'], {})).toThrow(/array of strings/);
    expect(() => parseChanges(['CMD [oops'], {})).toThrow(/valid JSON array/);
    expect(() => parseChanges(['ENV A="open'], {})).toThrow(/unterminated " quote/);
    expect(() => parseChanges(['USER'], {})).toThrow(/USER needs an argument/);
    expect(() => parseChanges(['LABEL =x'], {})).toThrow(/is not KEY=VALUE/);
  });

  it('splits words like a Dockerfile', () => {
    expect(splitWords(`a "b c" 'd "e"' f\\ g`, 'x')).toEqual(['a', 'b c', 'd "e"', 'f g']);
    expect(splitWords('""', 'x')).toEqual(['']);
  });
});
