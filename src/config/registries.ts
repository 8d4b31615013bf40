import { readdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { z } from 'zod';
import { StowageError } from '../errors.js';

/** containers-registries.conf(5), version 2. Unknown keys are kept so newer files still load. */
const mirrorSchema = z.looseObject({
  location: z.string().min(1),
  insecure: z.boolean().optional(),
  'pull-from-mirror': z.enum(['all', 'digest-only', 'tag-only']).optional(),
});

const registrySchema = z.looseObject({
  prefix: z.string().optional(),
  location: z.string().optional(),
  insecure: z.boolean().optional(),
  blocked: z.boolean().optional(),
  'mirror-by-digest-only': z.boolean().optional(),
  mirror: z.array(mirrorSchema).optional(),
});

export const registriesConfSchema = z.looseObject({
  'unqualified-search-registries': z.array(z.string()).optional(),
  'short-name-mode': z.enum(['enforcing', 'permissive', 'disabled']).optional(),
  'credential-helpers': z.array(z.string()).optional(),
  registry: z.array(registrySchema).optional(),
  aliases: z.record(z.string(), z.string()).optional(),
});

export type RegistryEntry = z.infer<typeof registrySchema>;

export interface RegistriesConf {
  unqualifiedSearchRegistries: string[];
  shortNameMode: 'enforcing' | 'permissive' | 'disabled';
  credentialHelpers: string[];
  registries: RegistryEntry[];
  aliases: Record<string, string>;
  /** Files read, in order (main file first, then drop-ins). */
  sources: string[];
}

export const EMPTY_REGISTRIES_CONF: RegistriesConf = {
  unqualifiedSearchRegistries: [],
  // containers-registries.conf(5): unset means permissive.
  shortNameMode: 'permissive',
  credentialHelpers: [],
  registries: [],
  aliases: {},
  sources: [],
};

export function registriesConfCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const list: string[] = [];
  if (env.CONTAINERS_REGISTRIES_CONF) list.push(env.CONTAINERS_REGISTRIES_CONF);
  list.push(join(env.HOME || homedir(), '.config/containers/registries.conf'));
  list.push('/etc/containers/registries.conf');
  return list;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new StowageError('INVALID_CONFIG', `cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Parses TOML text; a syntax error names the file, the line and the column. */
export function parseTomlFile(text: string, path: string): unknown {
  try {
    return parseToml(text);
  } catch (e) {
    const where = e instanceof TomlError ? ` at line ${e.line}, column ${e.column}` : '';
    throw new StowageError(
      'INVALID_CONFIG',
      `${path}: not valid TOML${where}: ${(e as Error).message.split('\n')[0]}`,
    );
  }
}

/** Parses one registries.conf file's text; `path` names it in errors. */
export function parseRegistriesConf(text: string, path: string): z.infer<typeof registriesConfSchema> {
  const raw = parseTomlFile(text, path);
  const obj = raw as Record<string, unknown>;
  if (obj.registries && typeof obj.registries === 'object' && !Array.isArray(obj.registries)) {
    throw new StowageError(
      'INVALID_CONFIG',
      `${path} is in the version 1 format ([registries.search], [registries.insecure], [registries.block]); convert it to version 2: unqualified-search-registries = [...] and one [[registry]] table per registry with location, insecure and blocked (see containers-registries.conf(5))`,
    );
  }
  const parsed = registriesConfSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new StowageError(
      'INVALID_CONFIG',
      `${path}: key "${issue.path.join('.') || '(top level)'}": ${issue.message}`,
    );
  }
  for (const r of parsed.data.registry ?? []) {
    if (!r.prefix && !r.location) {
      throw new StowageError('INVALID_CONFIG', `${path}: every [[registry]] needs a prefix or a location`);
    }
    if ('pull-from-mirror' in r) {
      // skopeo refuses the file too: the key only means something on a [[registry.mirror]].
      throw new StowageError(
        'INVALID_CONFIG',
        `${path}: "pull-from-mirror" is set on [[registry]] ${r.prefix ?? r.location}, where it means nothing; it belongs on each [[registry.mirror]] (or use mirror-by-digest-only on the registry)`,
      );
    }
    if (r.prefix?.startsWith('*.') && r.location) {
      throw new StowageError(
        'INVALID_CONFIG',
        `${path}: a wildcard prefix "${r.prefix}" cannot have a location`,
      );
    }
  }
  return parsed.data;
}

function merge(into: RegistriesConf, file: z.infer<typeof registriesConfSchema>, path: string): void {
  into.sources.push(path);
  if (file['unqualified-search-registries'])
    into.unqualifiedSearchRegistries = file['unqualified-search-registries'];
  if (file['short-name-mode']) into.shortNameMode = file['short-name-mode'];
  if (file['credential-helpers']) into.credentialHelpers = file['credential-helpers'];
  for (const r of file.registry ?? []) {
    const key = r.prefix ?? r.location;
    into.registries = into.registries.filter((x) => (x.prefix ?? x.location) !== key);
    into.registries.push(r);
  }
  // An alias set to "" in a later file erases it.
  for (const [name, value] of Object.entries(file.aliases ?? {})) {
    if (value === '') delete into.aliases[name];
    else into.aliases[name] = value;
  }
}

/**
 * Loads registries.conf: an explicit path, else $CONTAINERS_REGISTRIES_CONF, else the user's, else the
 * system's; then the drop-ins in <file>.d/*.conf in lexical order. No file at all is an empty config.
 */
export async function loadRegistriesConf(
  explicit?: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<RegistriesConf> {
  const conf: RegistriesConf = structuredClone(EMPTY_REGISTRIES_CONF);
  const candidates = explicit ? [explicit] : registriesConfCandidates(env);
  for (const path of candidates) {
    const text = await readIfExists(path);
    if (text === undefined) {
      if (path === explicit || path === env.CONTAINERS_REGISTRIES_CONF) {
        throw new StowageError('INVALID_CONFIG', `registries.conf "${path}" does not exist; check the path`);
      }
      continue;
    }
    merge(conf, parseRegistriesConf(text, path), path);
    const dropDir = `${path}.d`;
    let names: string[] = [];
    try {
      names = (await readdir(dropDir)).filter((n) => n.endsWith('.conf')).sort();
    } catch {
      names = [];
    }
    for (const n of names) {
      const p = join(dropDir, n);
      const t = await readIfExists(p);
      if (t !== undefined) merge(conf, parseRegistriesConf(t, p), p);
    }
    break;
  }
  await mergeAliasCache(conf, aliasCachePath(env));
  return conf;
}

/**
 * The short-name aliases podman records after a user picked a candidate at its prompt:
 * /var/cache/containers/short-name-aliases.conf for root, ~/.cache/containers/... otherwise. They take
 * precedence over registries.conf's [aliases], as in containers-registries.conf(5).
 */
export function aliasCachePath(env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return '/var/cache/containers/short-name-aliases.conf';
  return join(env.HOME || homedir(), '.cache/containers/short-name-aliases.conf');
}

export async function mergeAliasCache(conf: RegistriesConf, path: string): Promise<void> {
  const text = await readIfExists(path);
  if (text === undefined) return;
  const file = parseRegistriesConf(text, path);
  if (Object.keys(file.aliases ?? {}).length === 0) return;
  conf.sources.push(path);
  for (const [name, value] of Object.entries(file.aliases ?? {})) {
    if (value === '') delete conf.aliases[name];
    else conf.aliases[name] = value;
  }
}
