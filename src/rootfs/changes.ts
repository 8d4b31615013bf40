/**
 * `--change` instructions, as `docker import --change` and `podman import --change` take them: the
 * Dockerfile instructions that only touch the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
 * WORKDIR, VOLUME, STOPSIGNAL), in their Dockerfile syntax (JSON or shell form, quoting, KEY=VALUE lists).
 */
import { posix } from 'node:path';
import { StowageError } from '../errors.js';

export type ContainerConfig = Record<string, unknown> & {
  User?: string;
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[];
  Cmd?: string[];
  Volumes?: Record<string, Record<string, never>>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
};

export const CHANGE_INSTRUCTIONS = [
  'CMD',
  'ENTRYPOINT',
  'ENV',
  'EXPOSE',
  'LABEL',
  'USER',
  'WORKDIR',
  'VOLUME',
  'STOPSIGNAL',
] as const;

/** The order keys are written in (the rest follow in the order the source image had them). */
const KEY_ORDER = [
  'User',
  'ExposedPorts',
  'Env',
  'Entrypoint',
  'Cmd',
  'Volumes',
  'WorkingDir',
  'Labels',
  'StopSignal',
];

function bad(change: string, why: string): StowageError {
  return new StowageError('INVALID_ARGUMENT', `--change "${change}": ${why}`);
}

/** Splits words the way a Dockerfile does: whitespace separates, quotes group, backslash escapes. */
export function splitWords(s: string, change: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (quote) {
      if (ch === quote) quote = undefined;
      else if (ch === '\\' && quote === '"' && i + 1 < s.length) cur += s[++i];
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (ch === '\\' && i + 1 < s.length) {
      cur += s[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (quote) throw bad(change, `unterminated ${quote} quote`);
  if (inWord) words.push(cur);
  return words;
}

function jsonArray(rest: string, change: string): string[] | undefined {
  if (!rest.startsWith('[')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(rest);
  } catch {
    throw bad(
      change,
      'the JSON form must be a valid JSON array of strings, e.g. ["/bin/sh", "-c", "echo hi"]',
    );
  }
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
    throw bad(change, 'the JSON form must be an array of strings');
  return v as string[];
}

function keyValues(rest: string, change: string, what: string): [string, string][] {
  const words = splitWords(rest, change);
  if (words.length === 0) throw bad(change, `give at least one ${what}`);
  if (!words[0]!.includes('=')) {
    // Legacy form: KEY VALUE (the value is the rest of the line).
    const m = /^\s*(\S+)\s+(.*)$/s.exec(rest);
    if (!m) throw bad(change, `give ${what} as KEY=VALUE`);
    return [[m[1]!, splitWords(m[2]!, change).join(' ')]];
  }
  return words.map((w) => {
    const i = w.indexOf('=');
    if (i <= 0) throw bad(change, `"${w}" is not KEY=VALUE`);
    return [w.slice(0, i), w.slice(i + 1)];
  });
}

/** Applies changes to a config (a copy is returned; keys in a fixed order, nulls dropped). */
export function parseChanges(changes: string[], base: ContainerConfig): ContainerConfig {
  const c: ContainerConfig = { ...base };
  for (const change of changes) {
    const m = /^\s*(\S+)\s*(.*?)\s*$/s.exec(change);
    if (!m) throw bad(change, `empty; use one of ${CHANGE_INSTRUCTIONS.join(', ')}`);
    const instruction = m[1]!.toUpperCase();
    const rest = m[2]!;
    if (!(CHANGE_INSTRUCTIONS as readonly string[]).includes(instruction))
      throw bad(change, `unknown instruction "${m[1]}"; use one of ${CHANGE_INSTRUCTIONS.join(', ')}`);
    if (rest === '' && instruction !== 'CMD' && instruction !== 'ENTRYPOINT')
      throw bad(change, `${instruction} needs an argument`);
    switch (instruction) {
      case 'CMD':
      case 'ENTRYPOINT': {
        const argv = jsonArray(rest, change) ?? (rest ? ['/bin/sh', '-c', rest] : []);
        if (instruction === 'CMD') c.Cmd = argv;
        else {
          c.Entrypoint = argv;
          // As in a Dockerfile: a new ENTRYPOINT drops the CMD set before it.
          if (base.Cmd === c.Cmd) delete c.Cmd;
        }
        break;
      }
      case 'ENV': {
        const env = [...(c.Env ?? [])];
        for (const [k, v] of keyValues(rest, change, 'a variable')) {
          const i = env.findIndex((e) => e.split('=')[0] === k);
          if (i >= 0) env[i] = `${k}=${v}`;
          else env.push(`${k}=${v}`);
        }
        c.Env = env;
        break;
      }
      case 'LABEL': {
        c.Labels = { ...(c.Labels ?? {}) };
        for (const [k, v] of keyValues(rest, change, 'a label')) c.Labels[k] = v;
        break;
      }
      case 'EXPOSE': {
        c.ExposedPorts = { ...(c.ExposedPorts ?? {}) };
        for (const p of splitWords(rest, change)) {
          const pm = /^(\d{1,5}(?:-\d{1,5})?)(?:\/(tcp|udp|sctp))?$/i.exec(p);
          if (!pm) throw bad(change, `"${p}" is not a port: use PORT[/tcp|udp|sctp], e.g. 8080/tcp`);
          c.ExposedPorts[`${pm[1]}/${(pm[2] ?? 'tcp').toLowerCase()}`] = {};
        }
        break;
      }
      case 'VOLUME': {
        c.Volumes = { ...(c.Volumes ?? {}) };
        for (const v of jsonArray(rest, change) ?? splitWords(rest, change)) {
          if (!v) throw bad(change, 'a volume needs a path');
          c.Volumes[v] = {};
        }
        break;
      }
      case 'USER':
        c.User = splitWords(rest, change).join(' ');
        break;
      case 'WORKDIR': {
        const dir = splitWords(rest, change).join(' ');
        c.WorkingDir = posix.resolve(c.WorkingDir || '/', dir);
        break;
      }
      case 'STOPSIGNAL':
        c.StopSignal = splitWords(rest, change).join(' ');
        break;
    }
  }
  const out: ContainerConfig = {};
  for (const k of KEY_ORDER) if (c[k] !== undefined && c[k] !== null) out[k] = c[k];
  for (const [k, v] of Object.entries(c)) if (!(k in out) && v !== undefined && v !== null) out[k] = v;
  return out;
}
