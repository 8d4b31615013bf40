/**
 * TypeScript types from stowage's OpenAPI document, in the shape openapi-fetch reads (`paths`,
 * `components`, `operations`, as openapi-typescript writes them). openapi-typescript itself runs on
 * the TypeScript 5 compiler API, which the project's TypeScript 7 does not have; the document uses a
 * small part of JSON Schema, which this covers. src/api-client/openapi.ts is its output, committed, and a
 * test fails when it drifts from the document.
 */

type Schema = {
  $ref?: string;
  type?: string | string[];
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
  description?: string;
  format?: string;
};

interface Parameter {
  name: string;
  in: 'query' | 'header' | 'path' | 'cookie';
  required?: boolean;
  schema?: Schema;
}

interface Operation {
  operationId?: string;
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content: Record<string, { schema?: Schema }> };
  responses: Record<
    string,
    { headers?: Record<string, unknown>; content?: Record<string, { schema?: Schema }> }
  >;
}

export interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Schema> };
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/** A property name as TypeScript writes it: statuses as numbers (openapi-fetch matches 200, not "200"). */
const key = (k: string) => (/^[A-Za-z_$][A-Za-z0-9_$]*$|^[1-9]\d*$/.test(k) ? k : JSON.stringify(k));

function indent(text: string, by: string): string {
  return text.replace(/\n/g, `\n${by}`);
}

/** A JSON Schema as a TypeScript type. */
export function typeOf(s: Schema | undefined): string {
  if (!s) return 'unknown';
  if (s.$ref) return `components["schemas"][${JSON.stringify(s.$ref.replace('#/components/schemas/', ''))}]`;
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.allOf) return s.allOf.map((x) => `(${typeOf(x)})`).join(' & ');
  const union = s.anyOf ?? s.oneOf;
  if (union) return union.map((x) => `(${typeOf(x)})`).join(' | ');
  if (Array.isArray(s.type)) return s.type.map((t) => typeOf({ ...s, type: t })).join(' | ');
  switch (s.type) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array':
      return `(${typeOf(s.items)})[]`;
    case 'object':
      return objectType(s);
    default:
      return s.properties ? objectType(s) : 'unknown';
  }
}

function objectType(s: Schema): string {
  const required = new Set(s.required ?? []);
  const lines = Object.entries(s.properties ?? {}).map(
    ([name, p]) => `${key(name)}${required.has(name) ? '' : '?'}: ${indent(typeOf(p), '  ')};`,
  );
  if (s.additionalProperties && typeof s.additionalProperties === 'object') {
    lines.push(`[key: string]: ${typeOf(s.additionalProperties)};`);
  }
  return lines.length ? `{\n  ${lines.join('\n  ')}\n}` : 'Record<string, never>';
}

function contentType(content: Record<string, { schema?: Schema }> | undefined): string {
  if (!content) return 'never';
  const entries = Object.entries(content).map(
    ([type, c]) => `${JSON.stringify(type)}: ${indent(typeOf(c.schema), '  ')};`,
  );
  return `{\n  ${entries.join('\n  ')}\n}`;
}

function operationType(op: Operation): string {
  const groups: Record<string, string[]> = { query: [], header: [], path: [], cookie: [] };
  for (const p of op.parameters ?? []) {
    groups[p.in]!.push(`${key(p.name)}${p.required ? '' : '?'}: ${typeOf(p.schema)};`);
  }
  const params = Object.entries(groups).map(([where, ls]) =>
    ls.length ? `${where}?: {\n    ${ls.join('\n    ')}\n  };` : `${where}?: never;`,
  );
  const body = op.requestBody
    ? `requestBody${op.requestBody.required ? '' : '?'}: {\n    content: ${indent(contentType(op.requestBody.content), '    ')};\n  };`
    : 'requestBody?: never;';
  const responses = Object.entries(op.responses).map(
    ([status, r]) =>
      `${key(status)}: {\n      headers: {\n        ${[...Object.keys(r.headers ?? {}).map((h) => `${key(h)}?: string;`), '[name: string]: unknown;'].join('\n        ')}\n      };\n      content${r.content ? '' : '?'}: ${indent(contentType(r.content), '      ')};\n    };`,
  );
  return `{\n  parameters: {\n    ${params.join('\n    ')}\n  };\n  ${body}\n  responses: {\n    ${responses.join('\n    ')}\n  };\n}`;
}

/** The module text: `paths`, `components` and `operations`. */
export function generateTypes(doc: OpenApiDocument): string {
  const out: string[] = [
    '// Generated from openapi.json by src/api-client/generate.ts; do not edit by hand.',
    '// Regenerate: UPDATE_OPENAPI=1 npx vitest run src/api/openapi.test.ts',
    '',
  ];
  const operations: string[] = [];
  out.push('export interface paths {');
  for (const [path, item] of Object.entries(doc.paths)) {
    const methods = METHODS.map((m) => {
      const op = item[m];
      if (!op) return `    ${m}?: never;`;
      const name = op.operationId ?? `${m} ${path}`;
      operations.push(`  ${key(name)}: ${indent(operationType(op), '  ')};`);
      return `    ${m}: operations[${JSON.stringify(name)}];`;
    });
    out.push(
      `  ${JSON.stringify(path)}: {\n    parameters: {\n      query?: never;\n      header?: never;\n      path?: never;\n      cookie?: never;\n    };\n${methods.join('\n')}\n  };`,
    );
  }
  out.push('}', '', 'export interface components {', '  schemas: {');
  for (const [name, s] of Object.entries(doc.components?.schemas ?? {})) {
    out.push(`    ${key(name)}: ${indent(typeOf(s), '    ')};`);
  }
  out.push('  };', '}', '', 'export interface operations {', ...operations, '}', '');
  return out.join('\n');
}
