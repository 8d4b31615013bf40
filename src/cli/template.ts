/**
 * `--format` templates as skopeo takes them (Go's text/template), for the part people use with
 * `inspect`: fields (`{{.Digest}}`, `{{.Labels.app}}`), `{{json .X}}`, `{{index .Labels "k"}}`,
 * `{{len .Layers}}`, `{{join .RepoTags ","}}` and `{{range .Layers}}...{{end}}` (with `{{.}}` the
 * element). Values print as Go prints them: slices as `[a b]`, maps as `map[k:v]`, a missing field as
 * `<no value>`. Anything else is refused, naming the action.
 */
import { StowageError } from '../errors.js';

type Node = { text: string } | { action: string } | { range: string; body: Node[] };

function parse(template: string): Node[] {
  const root: Node[] = [];
  const stack: { body: Node[] }[] = [{ body: root }];
  const re = /\{\{-?\s*(.*?)\s*-?\}\}/gs;
  let last = 0;
  for (const m of template.matchAll(re)) {
    const body = stack.at(-1)!.body;
    if (m.index > last) body.push({ text: template.slice(last, m.index) });
    last = m.index + m[0].length;
    const action = m[1]!;
    if (action.startsWith('range ')) {
      const node = { range: action.slice(6).trim(), body: [] as Node[] };
      body.push(node);
      stack.push(node);
    } else if (action === 'end') {
      if (stack.length === 1) throw bad(template, '{{end}} without {{range}}');
      stack.pop();
    } else {
      body.push({ action });
    }
  }
  if (stack.length !== 1) throw bad(template, '{{range}} without {{end}}');
  if (last < template.length) root.push({ text: template.slice(last) });
  return root;
}

function bad(template: string, why: string): StowageError {
  return new StowageError('INVALID_ARGUMENT', `--format ${JSON.stringify(template)}: ${why}`);
}

/** Go's default printing of a value. */
function show(v: unknown): string {
  if (v === undefined || v === null) return '<no value>';
  if (Array.isArray(v)) return `[${v.map(show).join(' ')}]`;
  if (typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b));
    return `map[${entries.map(([k, x]) => `${k}:${show(x)}`).join(' ')}]`;
  }
  return String(v);
}

/** `.A.B` from `dot`; `.` is dot itself; a "quoted" string is itself. */
function value(term: string, dot: unknown, template: string): unknown {
  if (/^".*"$/.test(term)) return JSON.parse(term);
  if (term === '.') return dot;
  if (!term.startsWith('.')) throw bad(template, `"${term}" is not a field (fields start with ".")`);
  let v: unknown = dot;
  for (const name of term.slice(1).split('.')) {
    v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[name] : undefined;
  }
  return v;
}

function act(action: string, dot: unknown, template: string): string {
  const words = action.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? [];
  const [fn, ...args] = words;
  const arg = (i: number) => value(args[i] ?? '.', dot, template);
  switch (fn) {
    case 'json':
      // encoding/json writes map keys sorted.
      return JSON.stringify(arg(0), (_k, v: unknown) =>
        v && typeof v === 'object' && !Array.isArray(v)
          ? Object.fromEntries(
              Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)),
            )
          : v,
      );
    case 'len': {
      const v = arg(0);
      return String(
        Array.isArray(v)
          ? v.length
          : v && typeof v === 'object'
            ? Object.keys(v).length
            : String(v ?? '').length,
      );
    }
    case 'index': {
      const v = arg(0) as Record<string, unknown> | unknown[] | undefined;
      const found =
        v === undefined || v === null ? undefined : (v as Record<string, unknown>)[String(arg(1))];
      // Go's index gives a missing key's zero value: an empty string for the string maps inspect has.
      return found === undefined ? '' : show(found);
    }
    case 'join': {
      const v = arg(0);
      return Array.isArray(v) ? v.map(show).join(String(arg(1))) : show(v);
    }
    default:
      if (words.length === 1 && fn) return show(value(fn, dot, template));
      throw bad(template, `{{${action}}} is not supported (fields, json, index, len, join and range are)`);
  }
}

function run(nodes: Node[], dot: unknown, template: string): string {
  let out = '';
  for (const n of nodes) {
    if ('text' in n) out += n.text;
    else if ('action' in n) out += act(n.action, dot, template);
    else {
      const list = value(n.range, dot, template);
      // Go ranges over a map in key order.
      const items = Array.isArray(list)
        ? list
        : list && typeof list === 'object'
          ? Object.entries(list)
              .sort(([a], [b]) => a.localeCompare(b))
              .map(([, v]) => v)
          : [];
      for (const item of items) out += run(n.body, item, template);
    }
  }
  return out;
}

/** Renders `template` over `data`; a newline follows, as skopeo prints it. */
export function renderTemplate(template: string, data: unknown): string {
  return `${run(parse(template), data, template)}\n`;
}
