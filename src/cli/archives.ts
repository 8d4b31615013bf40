/** `stowage archives` (list, export, delete), `stowage store migrate` and `stowage df`: the store from the command line. */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import type { ArchiveFormat } from '../archive/formats.js';
import { loadStowageConfig } from '../config/stowage.js';
import { StowageError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import type { ArchiveStore } from '../store/archive-store.js';
import { openStore } from '../store/open.js';
import { formatBytes, formatDuration, plural } from './format.js';
import { addRegistryOptions, parsePositiveInt, type RegistryCliOptions } from './options.js';
import { parseFormat, printResult } from './pull.js';
import { withSignal } from './run.js';

import { configFrom, type StoreCliOptions } from './sync.js';

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
            `${plural(report.versions, 'version')} (${report.added} new) and ${plural(report.blobs, 'blob')} (${report.copied} copied, ${formatBytes(report.copiedBytes)}) into ${to.path} in ${formatDuration(performance.now() - started)}\n`,
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
        `store ${usage.store}: ${formatBytes(usage.logicalBytes)} of archives in ${formatBytes(usage.diskBytes)} on disk; retention would reclaim ${plural(usage.reclaimable.versions, 'version')}, ${formatBytes(usage.reclaimable.bytes)}`,
      );
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
