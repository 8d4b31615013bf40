import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import type { ArchiveFormat } from '../archive/formats.js';
import {
  checkSourceAndMirror,
  type JobConfig,
  loadStowageConfig,
  type StowageConfig,
} from '../config/stowage.js';
import { printable } from '../core/printable.js';
import { StowageError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import { openStore } from '../store/open.js';
import type { ArchiveStore } from '../store/store.js';
import type { SyncReport } from '../sync/sync.js';
import { formatBytes, formatDuration, plural } from './format.js';
import { addRegistryOptions, contextFrom, parsePositiveInt, type RegistryCliOptions } from './options.js';
import { parseFormat, printResult } from './pull.js';
import { withSignal } from './run.js';

/** Exit code of a sync in which some job or tag failed (the others still ran). */
export const SYNC_PARTIAL_EXIT = 13;

interface StoreCliOptions {
  config?: string;
  store?: string;
  json?: boolean;
}

async function configFrom(opts: StoreCliOptions): Promise<StowageConfig> {
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
      lines.push(
        `${label(j).padEnd(width)}  ${t.tag.padEnd(20)}  ${t.action.padEnd(11)}  ${(t.archive ?? '-').padEnd(11)}  ${(t.mirror ?? '-').padEnd(10)}  ${formatBytes(t.fetchedBytes)}${t.error ? `  ${t.error}` : ''}`,
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
    ? `; ${r.garbage.blobs} unreferenced blobs removed (${formatBytes(r.garbage.bytes)})`
    : '';
  const jobs = new Set(r.jobs.map((j) => j.name)).size;
  const repositories = new Set(r.jobs.filter((j) => !j.error || j.tags.length).map((j) => j.source)).size;
  lines.push(
    `${r.dryRun ? 'dry run: ' : ''}${plural(jobs, 'job')}, ${plural(repositories, 'repository', 'repositories')}, ${tags} tags, ${formatBytes(r.fetchedBytes)} fetched, ${r.failed} failed, in ${formatDuration(elapsed)}${gc}`,
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
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/**
 * The job --src and its filters make, as one [[job]] of stowage.toml would say it: to --dest as a
 * mirror (and to the store with --archive), else into the store.
 */
function commandLineJob(opts: SyncCliOptions, names: string[]): JobConfig {
  if (names.length) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `--src makes its own job: drop the job names (${names.join(', ')}), or drop --src to run stowage.toml's`,
    );
  }
  for (const re of [...opts.include, ...opts.exclude, ...opts.includeRepo, ...opts.excludeRepo]) {
    try {
      new RegExp(re);
    } catch (e) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `--include/--exclude "${re}" is not a regular expression: ${(e as Error).message}`,
      );
    }
  }
  const repositories =
    opts.includeRepo.length || opts.excludeRepo.length
      ? {
          ...(opts.includeRepo.length ? { include: opts.includeRepo } : {}),
          ...(opts.excludeRepo.length ? { exclude: opts.excludeRepo } : {}),
        }
      : undefined;
  // The checks stowage.toml's jobs get, with the flags' names.
  try {
    checkSourceAndMirror({ source: opts.src!, mirror: opts.dest, repositories }, 'the command line');
  } catch (e) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      (e as Error).message
        .replace('the command line: key "source"', '--src')
        .replace('the command line: key "mirror"', '--dest')
        .replace('the command line: key "repositories"', '--include-repo/--exclude-repo'),
    );
  }
  const platforms =
    opts.platforms && opts.platforms !== 'all' ? opts.platforms.split(',').map((p) => p.trim()) : 'all';
  for (const p of platforms === 'all' ? [] : platforms) parsePlatform(p);
  if (opts.prune && !opts.dest) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      '--prune deletes mirror tags gone from the source and needs --dest (the store keeps every version)',
    );
  }
  return {
    name: 'command-line',
    source: opts.src!,
    ...(repositories ? { repositories } : {}),
    ...(opts.tags
      ? {
          tags: opts.tags
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean),
        }
      : {}),
    ...(opts.include.length ? { include: opts.include } : {}),
    ...(opts.exclude.length ? { exclude: opts.exclude } : {}),
    ...(opts.semver ? { semver: opts.semver } : {}),
    ...(opts.newest ? { newest: opts.newest } : {}),
    platforms,
    ...(opts.dest ? { mirror: opts.dest, archive: Boolean(opts.archive) } : { archive: true }),
    ...(opts.prune ? { prune: true } : {}),
    ...(opts.preserveDigests ? { 'preserve-digests': true } : {}),
  };
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
    const started = performance.now();
    try {
      const report = await withSignal((signal) =>
        sync(ctx, config, {
          jobs: opts.src ? undefined : names,
          dryRun: opts.dryRun,
          concurrency: opts.parallel,
          signal,
        }),
      );
      if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else if (!opts.quiet) process.stdout.write(describeSync(report, performance.now() - started));
      if (report.failed > 0) setExitCode(SYNC_PARTIAL_EXIT);
    } finally {
      await ctx.close();
    }
  });
}

interface ExportCliOptions extends RegistryCliOptions, StoreCliOptions {
  output: string;
  format: ArchiveFormat;
  all?: boolean;
  platform?: string;
  quiet?: boolean;
}

interface ArchivesListOptions extends StoreCliOptions {
  repository?: string;
  tag?: string;
  limit?: number;
  after?: string;
}

function parseLimit(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a whole number of 1 or more');
  return n;
}

/** A repository named by the end of its name (`team/app` for `registry.test/team/app`): its whole name. */
async function wholeRepositoryName(store: ArchiveStore, repo: string): Promise<string> {
  if ((await store.page({ repository: repo, limit: 1 })).versions.length) return repo;
  // Only when the name given is not a stored one: the listing is read to find what ends with it.
  for (let after: string | undefined; ; ) {
    const page = await store.page({ search: `/${repo}:`, after, limit: 1000 });
    const hit = page.versions.find((x) => x.version.repository.endsWith(`/${repo}`));
    if (hit) return hit.version.repository;
    if (!page.next) return repo;
    after = page.next;
  }
}

/** Prints the versions a page at a time, so memory holds one page whatever the store holds. */
async function listArchives(store: ArchiveStore, opts: ArchivesListOptions): Promise<void> {
  const repository = opts.repository ? await wholeRepositoryName(store, opts.repository) : undefined;
  const out: string[] = [];
  let first = true;
  let left = opts.limit ?? Number.POSITIVE_INFINITY;
  let after = opts.after;
  if (opts.json) process.stdout.write('[');
  else
    process.stdout.write(
      'ID            REPOSITORY:TAG                                      DIGEST               TAKEN                     PLATFORMS  ARCHIVE\n',
    );
  while (left > 0) {
    const page = await store.page({ repository, tag: opts.tag, after, limit: Math.min(left, 1000) });
    for (const { version: v } of page.versions) {
      if (opts.json) {
        out.push(`${first ? '\n' : ',\n'}${JSON.stringify(v, null, 2).replace(/^/gm, '  ')}`);
        first = false;
        continue;
      }
      const archive = v.archive
        ? `${formatBytes(v.archive.size)} sha256:${v.archive.sha256.slice(0, 12)}`
        : '-';
      out.push(
        `${v.id}  ${`${v.repository}:${v.tag}`.padEnd(50)}  ${v.descriptor.digest.slice(0, 19)}  ${v.taken.padEnd(24)}  ${(v.platforms.join(',') || '-').padEnd(9)}  ${archive}\n`,
      );
    }
    process.stdout.write(out.join(''));
    out.length = 0;
    left -= page.versions.length;
    after = page.next;
    if (!after) break;
  }
  if (opts.json) process.stdout.write(first ? ']\n' : '\n]\n');
  // A page cut short by --limit says where the next one starts.
  if (after && opts.limit !== undefined)
    process.stderr.write(`more: stowage archives --limit ${opts.limit} --after ${after}\n`);
}

export function archivesCommand(program: Command): void {
  const archives = program
    .command('archives')
    .summary('list the versions in the archive store, or export one as an archive');
  archives
    .command('list', { isDefault: true })
    .summary('list stored versions (the default)')
    .description(
      'Every stored version (id, repository:tag, digest, platforms, when it was taken, and the archive ' +
        'checksum once an export computed it), oldest first, or those of REPO. With --limit N, N of them ' +
        'after --after ID, and the cursor of the next page on standard error; the store reads no further ' +
        'than the page.',
    )
    .argument('[repo]', 'only this repository (its whole name, or the end of it after a slash)')
    .option('--repository <repo>', 'only this repository (the same as REPO)')
    .option('--tag <tag>', 'only versions of this tag')
    .option('--limit <n>', 'at most N versions (a page)', parseLimit)
    .option('--after <id>', 'the page after this version id (the cursor the page before printed)')
    .option('--config <file>', 'stowage.toml')
    .option('--store <dir>', 'the archive store')
    .option('--json', 'print JSON')
    .action(async (repo: string | undefined, opts: ArchivesListOptions) => {
      const config = await configFrom(opts);
      const store = await openStore(config);
      try {
        await listArchives(store, { ...opts, repository: opts.repository ?? repo });
      } finally {
        await store.close?.();
      }
    });

  const exp = archives
    .command('export')
    .summary('write a stored version as a reproducible archive')
    .description(
      'Write version ID (an id from `stowage archives`, a unique prefix of one, or REPOSITORY:TAG for a ' +
        "tag's newest version) as an archive: byte for byte what `stowage pull` writes for that image, " +
        'with FILE.sha256 beside it. The oci-archive checksum of a whole version is recorded in the store.',
    )
    .argument('<id>', 'version id, or repository:tag')
    .requiredOption('-o, --output <path>', 'archive file (or directory for oci and dir)')
    .option(
      '-f, --format <format>',
      'oci-archive (default), docker-archive, oci, dir',
      parseFormat,
      'oci-archive',
    )
    .option('--all', 'keep a multi-arch index whole')
    .option('--platform <os/arch[/variant],...>', 'platforms to take from a multi-arch version')
    .option('--config <file>', 'stowage.toml')
    .option('--store <dir>', 'the archive store')
    .option('-q, --quiet', 'print nothing')
    .option('--json', 'print the result as JSON');
  addRegistryOptions(exp).action(async (id: string, opts: ExportCliOptions) => {
    const { exportVersion } = await import('../transfer/export.js');
    const config = await configFrom(opts);
    const store = await openStore(config);
    const started = performance.now();
    // Read from the store alone: no registry is asked.
    const result = await withSignal((signal) =>
      exportVersion(store, id, {
        output: opts.output,
        format: opts.format,
        all: opts.all,
        platforms: opts.platform ? opts.platform.split(',').map(parsePlatform) : undefined,
        signal,
      }),
    ).finally(() => store.close?.());
    printResult(result, performance.now() - started, opts);
  });
}

export function storeCommand(program: Command): void {
  const store = program.command('store').summary('manage the archive store: move a local store into S3');
  store
    .command('migrate')
    .summary('copy a local store into the store stowage.toml configures (S3), digests intact')
    .description(
      'Copies every version of the local store at --from into the store the configuration names (for ' +
        'replicas: [store.s3] and [server] database): blobs the destination lacks (S3 checks each ' +
        'against its digest), then the versions with their original times and checksums, all at once. ' +
        'Stop whatever writes the local store first. Running it again copies only what is new.',
    )
    .requiredOption('--from <dir>', 'the local store to copy')
    .option('--config <file>', 'stowage.toml naming the destination')
    .option('-j, --jobs <n>', 'blobs copied in parallel', parsePositiveInt, 4)
    .option('-q, --quiet', 'print nothing')
    .option('--json', 'print the report as JSON')
    .action(
      async (opts: { from: string; config?: string; jobs: number; quiet?: boolean; json?: boolean }) => {
        const [{ migrateStore }, { Store }] = await Promise.all([
          import('../store/migrate.js'),
          import('../store/store.js'),
        ]);
        const config = await loadStowageConfig(opts.config);
        if (!config.s3) {
          throw new StowageError(
            'INVALID_ARGUMENT',
            'the configuration names no [store.s3]: migrate copies a local store into the S3 store; add [store.s3] and [server] database to stowage.toml (see docs/REPLICAS.md)',
          );
        }
        if (!(await stat(join(opts.from, 'index.json')).catch(() => undefined))) {
          throw new StowageError(
            'NOT_FOUND',
            `${opts.from} is not a stowage store (it has no index.json); give the store's directory with --from`,
          );
        }
        // Only read: a store on a network filesystem (the usual one to outgrow) is fine here.
        const from = await Store.open(opts.from, { create: false, networkFilesystemOneHost: true });
        const to = await openStore(config);
        const started = performance.now();
        const report = await withSignal((signal) =>
          migrateStore(from, to, { concurrency: opts.jobs, signal }),
        ).finally(() => to.close?.());
        if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        else if (!opts.quiet) {
          process.stdout.write(
            `${report.versions} versions (${report.added} new) and ${report.blobs} blobs (${report.copied} copied, ${formatBytes(report.copiedBytes)}) into ${to.path} in ${formatDuration(performance.now() - started)}\n`,
          );
        }
      },
    );
}

export function dfCommand(program: Command): void {
  program
    .command('df')
    .summary('archive store usage: what the archives would take against the bytes on disk')
    .description(
      'Per repository: versions, the logical size (all its versions as separate archives would take) and ' +
        'its distinct blobs; in total, the bytes on disk (blobs stored once for everything) and what the ' +
        'configured retention would reclaim now.',
    )
    .option('--config <file>', 'stowage.toml')
    .option('--store <dir>', 'the archive store')
    .option('--json', 'print JSON')
    .action(async (opts: StoreCliOptions) => {
      const { diskUsage } = await import('../store/usage.js');
      const config = await configFrom(opts);
      const store = await openStore(config);
      const usage = await diskUsage(store, config).finally(() => store.close?.());
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(usage, null, 2)}\n`);
        return;
      }
      const lines = ['REPOSITORY                                          VERSIONS  LOGICAL     UNIQUE'];
      for (const r of usage.repositories) {
        lines.push(
          `${r.repository.padEnd(50)}  ${String(r.versions).padEnd(8)}  ${formatBytes(r.logicalBytes).padEnd(10)}  ${formatBytes(r.uniqueBytes)}`,
        );
      }
      lines.push(
        `store ${usage.store}: ${formatBytes(usage.logicalBytes)} of archives in ${formatBytes(usage.diskBytes)} on disk; retention would reclaim ${usage.reclaimable.versions} versions, ${formatBytes(usage.reclaimable.bytes)}`,
      );
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
