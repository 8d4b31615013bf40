import type { Command } from 'commander';
import { loadRegistriesConf, type RegistriesConf } from '../config/registries.js';
import { pullEndpoints, resolveCandidates } from '../config/resolve.js';
import { StowageError } from '../errors.js';
import { formatReference, parseReference, withDefaultTag } from '../reference/reference.js';

interface RegistriesCliOptions {
  registriesConf?: string;
  json?: boolean;
}

/** What a reference resolves to: candidates, and for each the endpoints a pull tries and a push uses. */
export function explainReference(conf: RegistriesConf, input: string) {
  const ref = withDefaultTag(parseReference(input));
  return {
    reference: input,
    candidates: resolveCandidates(conf, ref).map((c) => {
      const name = formatReference(c);
      try {
        const pull = pullEndpoints(conf, c);
        const primary = pull[pull.length - 1]!;
        return {
          name,
          pull: pull.map((e) => ({
            endpoint: `${e.host}/${e.path}`,
            mirror: e.mirror,
            insecure: e.insecure,
          })),
          push: { endpoint: `${primary.host}/${primary.path}`, insecure: primary.insecure },
        };
      } catch (e) {
        if (e instanceof StowageError && e.code === 'BLOCKED') return { name, blocked: e.message };
        throw e;
      }
    }),
  };
}

function describeConf(conf: RegistriesConf): string {
  const lines: string[] = [];
  lines.push(`files: ${conf.sources.length ? conf.sources.join(', ') : '(none found: built-in defaults)'}`);
  lines.push(`unqualified-search-registries: ${conf.unqualifiedSearchRegistries.join(', ') || '(none)'}`);
  lines.push(`short-name-mode: ${conf.shortNameMode}`);
  lines.push(`credential-helpers: ${conf.credentialHelpers.join(', ') || 'containers-auth.json'}`);
  for (const r of conf.registries) {
    const flags = [r.insecure ? 'insecure' : '', r.blocked ? 'blocked' : ''].filter(Boolean).join(', ');
    const prefix = r.prefix ?? r.location;
    const to = r.location && r.location !== prefix ? ` -> ${r.location}` : '';
    lines.push(`[[registry]] ${prefix}${to}${flags ? ` (${flags})` : ''}`);
    for (const m of r.mirror ?? []) {
      const mode = m['pull-from-mirror'] ?? (r['mirror-by-digest-only'] ? 'digest-only' : 'all');
      lines.push(`  mirror ${m.location}${m.insecure ? ' (insecure)' : ''}, pull-from-mirror ${mode}`);
    }
  }
  const aliases = Object.entries(conf.aliases);
  if (aliases.length) {
    lines.push('aliases:');
    for (const [k, v] of aliases.sort(([a], [b]) => (a < b ? -1 : 1))) lines.push(`  ${k} = ${v}`);
  }
  return `${lines.join('\n')}\n`;
}

export function registriesCommand(program: Command): void {
  program
    .command('registries')
    .summary('print the effective registries.conf, or how a reference resolves')
    .description(
      'Without REF: the registries configuration in effect (the files read, main file then drop-ins, ' +
        'merged). With REF: the fully qualified names it resolves to (aliases, unqualified-search ' +
        'registries, short-name-mode), and for each the endpoints a pull tries in order (mirrors, then ' +
        'the primary location) and the one a push uses.',
    )
    .argument('[ref]', 'an image reference to resolve')
    .option('--registries-conf <file>', 'registries.conf to use')
    .option('--json', 'print JSON')
    .action(async (ref: string | undefined, opts: RegistriesCliOptions) => {
      const conf = await loadRegistriesConf(opts.registriesConf);
      if (ref) {
        const r = explainReference(conf, ref);
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
          return;
        }
        const lines = [`${ref}:`];
        for (const c of r.candidates) {
          lines.push(`  ${c.name}`);
          if ('blocked' in c) {
            lines.push(`    blocked: ${c.blocked}`);
            continue;
          }
          for (const p of c.pull)
            lines.push(
              `    pull ${p.endpoint}${p.mirror ? ' (mirror)' : ''}${p.insecure ? ' (insecure)' : ''}`,
            );
          lines.push(`    push ${c.push.endpoint}${c.push.insecure ? ' (insecure)' : ''}`);
        }
        process.stdout.write(`${lines.join('\n')}\n`);
        return;
      }
      process.stdout.write(opts.json ? `${JSON.stringify(conf, null, 2)}\n` : describeConf(conf));
    });
}
