import type { Command } from 'commander';
import { checkJob, type JobConfig, loadStowageConfig, type StowageConfig } from '../config/stowage.js';
import { printable } from '../core/printable.js';
import { OUTCOME_EXIT, StowageError } from '../errors.js';
import type { SyncReport } from '../sync/report.js';
import { formatBytes, formatDuration, plural } from './format.js';
import { addRegistryOptions, contextFrom, parsePositiveInt, type RegistryCliOptions } from './options.js';
import { type ProgressMode, progressFor, progressOption } from './progress.js';
import { withSignal } from './run.js';

/** Exit code of a sync in which some job or tag failed (the others still ran). */
export const SYNC_PARTIAL_EXIT = OUTCOME_EXIT.syncPartial;

export interface StoreCliOptions {
  config?: string;
  store?: string;
  json?: boolean;
}

export async function configFrom(opts: StoreCliOptions): Promise<StowageConfig> {
  const config = await loadStowageConfig(opts.config);
  return opts.store ? { ...config, storePath: opts.store } : config;
}

function describeSync(r: SyncReport, elapsed: number): string {
  const lines: string[] = [];
  // A job whose source is a pattern reports each repository: the JOB column names it too.
  const label = (j: SyncReport['jobs'][number]) => (j.pattern ? `${j.name} ${j.source}` : j.name);
  const width = Math.max(3, ...r.jobs.map((j) => label(j).length));
  lines.push(
    `${'JOB'.padEnd(width)}  ${'TAG'.padEnd(20)}  ${'ACTION'.padEnd(11)}  ${'ARCHIVE'.padEnd(11)}  ${'MIRROR'.padEnd(10)}  FETCHED`,
  );
  for (const j of r.jobs) {
    if (j.error)
      lines.push(`${label(j).padEnd(width)}  ${'-'.padEnd(20)}  ${'failed'.padEnd(11)}  ${j.error}`);
    for (const t of j.tags) {
      // A new version made only of blobs the store held was not fetched: the table says "stored".
      const action = t.action === 'fetched' && !t.fetchedBytes ? 'stored' : t.action;
      lines.push(
        `${label(j).padEnd(width)}  ${t.tag.padEnd(20)}  ${action.padEnd(11)}  ${(t.archive ?? '-').padEnd(11)}  ${(t.mirror ?? '-').padEnd(10)}  ${formatBytes(t.fetchedBytes)}${t.error ? `  ${t.error}` : ''}`,
      );
    }
    for (const p of j.pruned) {
      lines.push(
        `${label(j).padEnd(width)}  ${p.tag.padEnd(20)}  ${(r.dryRun ? 'would-prune' : 'pruned').padEnd(11)}  ${p.id} ${p.digest.slice(0, 19)} taken ${p.taken}`,
      );
    }
    // Mirror tags gone from the source (prune = true): the MIRROR column says what became of them.
    for (const d of j.mirrorDeleted) {
      lines.push(
        `${label(j).padEnd(width)}  ${d.tag.padEnd(20)}  ${'gone'.padEnd(11)}  ${'-'.padEnd(11)}  ${(r.dryRun ? 'would-del' : 'deleted').padEnd(10)}  ${d.digest?.slice(0, 19) ?? ''}`,
      );
    }
  }
  const tags = r.jobs.reduce((n, j) => n + j.tags.length, 0);
  const gc = r.garbage
    ? `; ${plural(r.garbage.blobs, 'unreferenced blob')} removed (${formatBytes(r.garbage.bytes)})`
    : '';
  const jobs = new Set(r.jobs.map((j) => j.name)).size;
  const repositories = new Set(r.jobs.filter((j) => !j.error || j.tags.length).map((j) => j.source)).size;
  lines.push(
    `${r.dryRun ? 'dry run: ' : ''}${plural(jobs, 'job')}, ${plural(repositories, 'repository', 'repositories')}, ${plural(tags, 'tag')}, ${formatBytes(r.fetchedBytes)} fetched, ${r.failed} failed, in ${formatDuration(elapsed)}${gc}`,
  );
  // Tags and errors come from registries: nothing in them may drive the terminal.
  return `${lines.map((l) => printable(l)).join('\n')}\n`;
}

interface SyncCliOptions extends RegistryCliOptions, StoreCliOptions {
  src?: string;
  dest?: string;
  tags?: string;
  include: string[];
  exclude: string[];
  includeRepo: string[];
  excludeRepo: string[];
  semver?: string;
  newest?: number;
  platforms?: string;
  archive?: boolean;
  prune?: boolean;
  preserveDigests?: boolean;
  dryRun?: boolean;
  parallel: number;
  quiet?: boolean;
  json?: boolean;
  progress?: ProgressMode;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * The job --src and its filters make, as one [[job]] of stowage.toml would say it: to --dest as a
 * mirror (and to the store with --archive), else into the store.
 */
/** How the command line spells the keys a job's checks name. */
const FLAGS: [string, string][] = [
  ['key "source"', '--src'],
  ['key "mirror"', '--dest'],
  ['key "repositories.include"', '--include-repo'],
  ['key "repositories.exclude"', '--exclude-repo'],
  ['key "repositories"', '--include-repo/--exclude-repo'],
  ['key "include"', '--include'],
  ['key "exclude"', '--exclude'],
  ['key "semver"', '--semver'],
  ['key "platforms"', '--platforms'],
];

function commandLineJob(opts: SyncCliOptions, names: string[]): JobConfig {
  if (names.length) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `--src makes its own job: drop the job names (${names.join(', ')}), or drop --src to run stowage.toml's`,
    );
  }
  if (opts.prune && !opts.dest) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      '--prune deletes mirror tags gone from the source and needs --dest (the store keeps every version)',
    );
  }
  const list = (v: string[]) => (v.length ? v : undefined);
  const repositories =
    opts.includeRepo.length || opts.excludeRepo.length
      ? { include: list(opts.includeRepo), exclude: list(opts.excludeRepo) }
      : undefined;
  const job: JobConfig = {
    name: 'command-line',
    source: opts.src!,
    repositories,
    tags: opts.tags
      ?.split(',')
      .map((t) => t.trim())
      .filter(Boolean),
    include: list(opts.include),
    exclude: list(opts.exclude),
    semver: opts.semver,
    newest: opts.newest,
    platforms:
      opts.platforms && opts.platforms !== 'all' ? opts.platforms.split(',').map((p) => p.trim()) : 'all',
    ...(opts.dest ? { mirror: opts.dest, archive: Boolean(opts.archive) } : { archive: true }),
    prune: opts.prune || undefined,
    'preserve-digests': opts.preserveDigests || undefined,
  };
  // The checks stowage.toml's jobs get (one function: they cannot drift), said with the flags' names.
  try {
    checkJob(job, 'the command line');
  } catch (e) {
    let message = (e as Error).message;
    for (const [key, flag] of FLAGS) message = message.replace(`the command line: ${key}`, flag);
    throw new StowageError('INVALID_ARGUMENT', message);
  }
  return Object.fromEntries(Object.entries(job).filter(([, v]) => v !== undefined)) as JobConfig;
}

export function syncCommand(program: Command, setExitCode: (code: number) => void): void {
  const cmd = program
    .command('sync')
    .summary('run sync jobs: chosen tags into the archive store and/or a mirror, only what changed')
    .description(
      'Run the jobs of stowage.toml (--config, $STOWAGE_CONFIG, else config/stowage.toml), or the ones ' +
        'named. Each tag costs one HEAD when nothing changed; new versions are added to the store beside ' +
        'the old ones, and pushed to the mirror; blobs the store holds are never fetched again. Then ' +
        'retention prunes old versions and unreferenced blobs are removed; a job with prune = true ' +
        "(--prune) deletes its mirror's tags that the source no longer has. One failing tag or job does " +
        `not stop the others; the exit code is then ${SYNC_PARTIAL_EXIT}. --dry-run prints the plan (HEAD ` +
        'requests only, nothing written).',
    )
    .argument('[jobs...]', 'job names (default: all)')
    .option('--config <file>', 'stowage.toml')
    .option('--store <dir>', 'the archive store (default: the config, else ~/.local/share/stowage/store)')
    .option('--dry-run', 'show what would be fetched, skipped and pruned')
    .option('-j, --parallel <n>', 'blobs in parallel per job', parsePositiveInt, 4)
    .option('-q, --quiet', 'print nothing but errors')
    .option('--json', 'print the report as JSON')
    .addOption(progressOption())
    .option(
      '--src <repository>',
      "a one-off job from the command line, like skopeo sync: the source repository, or many ('HOST/team/**': * one path segment, ** one or more, found in the catalog)",
    )
    .option(
      '--dest <repository>',
      "with --src: the mirror repository (registry/repository) to copy the tags to; for many, with {repository} (the whole path) or {path} (below the pattern's prefix)",
    )
    .option(
      '--include-repo <regex>',
      'with a --src pattern: repositories whose path matches this (repeatable)',
      collect,
      [],
    )
    .option(
      '--exclude-repo <regex>',
      'with a --src pattern: not the repositories matching this (repeatable)',
      collect,
      [],
    )
    .option('--tags <list>', 'with --src: these tags (comma-separated)')
    .option('--include <regex>', 'with --src: tags matching this (repeatable)', collect, [])
    .option('--exclude <regex>', 'with --src: not the tags matching this (repeatable)', collect, [])
    .option('--semver <range>', 'with --src: tags that are versions in this range (e.g. ">=1.2 <2")')
    .option('--newest <n>', 'with --src: only the newest N tags after the filters', parsePositiveInt)
    .option('--platforms <list>', 'with --src: all, or os/arch[/variant],... (default all)')
    .option('--archive', 'with --src and --dest: keep the versions in the archive store as well')
    .option(
      '--prune',
      "with --src and --dest: delete the mirror's tags that are gone from the source (try --dry-run first)",
    )
    .option(
      '--preserve-digests',
      'with --src: fail a tag whose digest would change (several platforms chosen from an index)',
    );
  addRegistryOptions(cmd).action(async (names: string[], opts: SyncCliOptions) => {
    const { sync } = await import('../sync/sync.js');
    const oneOff = [
      opts.dest,
      opts.tags,
      opts.semver,
      opts.newest,
      opts.platforms,
      opts.archive,
      opts.prune,
      opts.preserveDigests,
    ].some((v) => v !== undefined);
    if (
      !opts.src &&
      (oneOff ||
        opts.include.length ||
        opts.exclude.length ||
        opts.includeRepo.length ||
        opts.excludeRepo.length)
    ) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        '--dest and the tag filters make a one-off job with --src; give --src REPOSITORY',
      );
    }
    const loaded = await configFrom(opts);
    const config = opts.src ? { ...loaded, jobs: [commandLineJob(opts, names)] } : loaded;
    const ctx = await contextFrom(opts, config.limits);
    const progress = opts.dryRun ? undefined : await progressFor(opts);
    const started = performance.now();
    try {
      const report = await withSignal((signal) =>
        sync(ctx, config, {
          jobs: opts.src ? undefined : names,
          dryRun: opts.dryRun,
          concurrency: opts.parallel,
          signal,
          onBlob: progress?.blobListener,
        }),
      );
      progress?.stop();
      if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else if (!opts.quiet) process.stdout.write(describeSync(report, performance.now() - started));
      if (report.failed > 0) setExitCode(SYNC_PARTIAL_EXIT);
    } finally {
      progress?.stop();
      await ctx.close();
    }
  });
}
