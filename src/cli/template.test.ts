import { describe, expect, it } from 'vitest';
import { StowageError } from '../errors.js';
import { renderTemplate } from './template.js';

const image = {
  Name: 'r/app',
  Digest: 'sha256:ab',
  RepoTags: ['1.0', '1.1'],
  Labels: { b: '2', a: '1' },
  Layers: ['sha256:l1', 'sha256:l2'],
  Size: 42,
};

describe('--format templates (Go text/template, as skopeo prints them)', () => {
  it('prints fields, nested fields and Go-formatted slices and maps', () => {
    expect(renderTemplate('{{.Name}} {{.Digest}}', image)).toBe('r/app sha256:ab\n');
    expect(renderTemplate('{{.Labels.a}} {{.Size}}', image)).toBe('1 42\n');
    expect(renderTemplate('{{.RepoTags}} {{.Labels}}', image)).toBe('[1.0 1.1] map[a:1 b:2]\n');
    expect(renderTemplate('{{.Nope}}', image)).toBe('<no value>\n');
  });

  it('has json, len, index (a missing key is empty, as in Go), join and range (maps in key order)', () => {
    expect(renderTemplate('{{json .Labels}}', image)).toBe('{"a":"1","b":"2"}\n');
    expect(renderTemplate('{{len .Layers}} {{len .Labels}}', image)).toBe('2 2\n');
    expect(renderTemplate('[{{index .Labels "a"}}][{{index .Labels "zz"}}]', image)).toBe('[1][]\n');
    expect(renderTemplate('{{join .RepoTags ","}}', image)).toBe('1.0,1.1\n');
    expect(renderTemplate('{{range .Layers}}<{{.}}>{{end}}', image)).toBe('<sha256:l1><sha256:l2>\n');
    expect(renderTemplate('{{range .Labels}}{{.}}{{end}}', image)).toBe('12\n');
  });

  it('refuses what it does not know, naming it', () => {
    expect(() => renderTemplate('{{printf "%s" .Name}}', image)).toThrow(StowageError);
    expect(() => renderTemplate('{{printf "%s" .Name}}', image)).toThrow(/printf/);
    expect(() => renderTemplate('{{range .Layers}}', image)).toThrow(/without \{\{end\}\}/);
    expect(() => renderTemplate('{{end}}', image)).toThrow(/without \{\{range\}\}/);
  });
});
