/** `stowage bundle` (create, list, import, inspect): air-gap bundles of the store, deltas since a base. */
import { stat } from 'node:fs/promises';
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { VersionChoice } from '../bundle/manifest.js';
import { byteSize } from '../core/sizes.js';
import { StowageError } from '../errors.js';
import { openStore } from '../store/open.js';
import { formatBytes, plural } from './format.js';
import { addRegistryOptions, contextFrom, parsePositiveInt, type RegistryCliOptions } from './options.js';
import { type ProgressMode, progressFor, progressOption } from './progress.js';
import { withSignal } from './run.js';
import { configFrom, type StoreCliOptions } from './sync.js';

interface CreateCliOptions extends StoreCliOptions {
  output: string;
  since?: string;
  repository?: string;
  tag?: string;
  versions: VersionChoice;
  split?: number;
  signBySigstorePrivateKey?: string;
  signPassphraseFile?: string;
  jobs: number;
  quiet?: boolean;
  json?: boolean;
  progress?: ProgressMode;
}

interface ImportCliOptions extends StoreCliOptions, RegistryCliOptions {
  to?: string;
  tmpdir?: string;
  jobs: number;
  quiet?: boolean;
  json?: boolean;
  progress?: ProgressMode;
}

function parseSplit(v: string): number {
  const n = byteSize(v);
  if (!n || n < 1 << 20) throw new InvalidArgumentError('expected a size of 1MiB or more (e.g. 4GiB, 700MB)');
  return n;
}

const short = (id: string) => id.slice(7, 19);

export function bundleCommand(program: Command): void {
  const bundle = program
    .command('bundle')
    .summary('air-gap bundles: ship what changed since the last bundle, import it on the far side')
    .description(
      'A bundle is one reproducible tar of stored versions with their attachments, carrying only the ' +
        'blobs its base bundles did not; a bundle with no base is also an oci-archive skopeo reads. The ' +
        'store records each bundle made or imported, so the next one can build on it.',
    );
  createCommand(bundle);
  listCommand(bundle);
  importCommand(bundle);
  inspectCommand(bundle);
}

function createCommand(bundle: Command): void {
  bundle
    .command('create')
    .summary('write the versions since a base bundle (or all) as a bundle')
    .description(
      'Write the chosen versions as a bundle FILE, with FILE.sha256 beside it. With --since, only ' +
        'versions taken after the base and only the blobs its chain did not carry; --since takes a ' +
        'bundle file, a bundle id from `stowage bundle list` (or a prefix), or a time (every bundle ' +
        'recorded by then is the base). JOB names limit it to the repositories those sync jobs write. ' +
        'The same store and arguments give the same bytes.',
    )
    .argument('[job...]', 'only the repositories these sync jobs (stowage.toml) write')
    .requiredOption('-o, --output <file>', 'the bundle file')
    .option('--since <bundle|id|time>', 'the base: a bundle file, a recorded bundle id, or a time')
    .option('--repository <re>', 'only repositories whose whole name matches this regular expression')
    .option('--tag <re>', 'only tags that match this regular expression')
    .addOption(
      new Option('--versions <which>', 'every version since the base, or the newest of each tag')
        .choices(['all', 'newest'])
        .default('all'),
    )
    .option(
      '--split <size>',
      'write parts of at most SIZE (FILE.001-of-N ..., each with .sha256)',
      parseSplit,
    )
    .option('--sign-by-sigstore-private-key <key>', 'sign the bundle manifest (FILE.sig) with this key')
    .option('--sign-passphrase-file <file>', "the signing key's passphrase (its first line)")
    .option('-j, --jobs <n>', 'blobs read at once', parsePositiveInt, 4)
    .option('--config <file>', 'stowage.toml')
    .option('--store <dir>', 'the archive store')
    .option('-q, --quiet', 'print nothing')
    .option('--json', 'print the result as JSON')
    .addOption(progressOption())
    .action(async (jobNames: string[], opts: CreateCliOptions) => {
      const { createBundle } = await import('../bundle/create.js');
      const config = await configFrom(opts);
      const jobs = jobNames.map((name) => {
        const job = config.jobs.find((j) => j.name === name);
        if (!job)
          throw new StowageError(
            'INVALID_ARGUMENT',
            `no sync job "${name}" in the configuration (jobs: ${config.jobs.map((j) => j.name).join(', ') || 'none'})`,
          );
        return job;
      });
      const store = await openStore(config);
      const progress = await progressFor(opts);
      const result = await withSignal((signal) =>
        createBundle(store, {
          output: opts.output,
          since: opts.since,
          filter: { versions: opts.versions, repository: opts.repository, tag: opts.tag, jobs },
          split: opts.split,
          sign: opts.signBySigstorePrivateKey
            ? { keyPath: opts.signBySigstorePrivateKey, passphraseFile: opts.signPassphraseFile }
            : undefined,
          concurrency: opts.jobs,
          signal,
          onProgress: progress?.listener,
        }),
      ).finally(() => {
        progress?.stop();
        return store.close?.();
      });
      if (opts.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      else if (!opts.quiet) {
        const base = result.bases.length ? `, on ${result.bases.map(short).join(', ')}` : ', no base';
        process.stdout.write(
          `bundle ${short(result.id)}: ${plural(result.versions, 'version')} (${opts.versions === 'all' ? 'every version' : 'the newest of each tag'}), ` +
            `${plural(result.blobs, 'blob')} (${formatBytes(result.bytes)}) inside, ${result.assumes} assumed${base}\n`,
        );
        for (const f of result.files) process.stdout.write(`  ${f}\n`);
        process.stdout.write(`sha256 ${result.sha256}\n`);
        for (const s of result.skipped)
          process.stderr.write(`skipped ${s}: held only in part (pull-through)\n`);
      }
    });
}

function listCommand(bundle: Command): void {
  bundle
    .command('list')
    .summary('the bundles made from this store or imported into it')
    .option('--config <file>', 'stowage.toml')
    .option('--store <dir>', 'the archive store')
    .option('--json', 'print JSON')
    .action(async (opts: StoreCliOptions) => {
      const store = await openStore(await configFrom(opts));
      const records = await store
        .bundles()
        .list()
        .finally(() => store.close?.());
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(records, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        'ID            KIND      RECORDED                  VERSIONS  BLOBS     SIZE       BASES         FILE\n',
      );
      for (const r of records) {
        process.stdout.write(
          `${short(r.id)}  ${r.kind.padEnd(8)}  ${r.at.padEnd(24)}  ${String(r.versions).padEnd(8)}  ${String(r.blobs).padEnd(8)}  ${formatBytes(r.size).padEnd(9)}  ${(r.bases.map(short).join(',') || '-').padEnd(12)}  ${r.file}\n`,
        );
      }
    });
}

function importCommand(bundle: Command): void {
  const cmd = bundle
    .command('import')
    .summary('import bundles (a full one, then its deltas) into a store or a registry')
    .description(
      "Check each bundle (NAME.sha256 and each part's, the signature NAME.sig when --policy is given, " +
        'and that every blob it assumes is at the destination) before anything is written, then import ' +
        "it: into the store (the default) with each version's tag, time and attachments, or with --to " +
        'into a registry, digests intact. Parts (NAME.001-of-N ...) are joined in order; give NAME or any ' +
        'part. Importing twice changes nothing; an import stopped midway is completed by the next.',
    )
    .argument('<bundle...>', 'bundle files, oldest first (or the name their parts share)')
    .option(
      '--to <registry[/prefix]>',
      'push into this registry: PREFIX/PATH:TAG, PATH below the source host',
    )
    .option('--tmpdir <dir>', 'where split parts are joined (default: the system temporary directory)')
    .option('-j, --jobs <n>', 'blobs written at once', parsePositiveInt, 4)
    .option('--config <file>', 'stowage.toml')
    .option('--store <dir>', 'the archive store')
    .option('-q, --quiet', 'print nothing')
    .option('--json', 'print the result as JSON')
    .addOption(progressOption());
  addRegistryOptions(cmd).action(async (files: string[], opts: ImportCliOptions) => {
    const [{ findBundles }, { importBundles }] = await Promise.all([
      import('../bundle/read.js'),
      import('../bundle/import.js'),
    ]);
    const bundles = await findBundles(files);
    const ctx = await contextFrom(opts);
    const policy = opts.policy ? await ctx.policy() : undefined;
    const store = opts.to ? undefined : await openStore(await configFrom(opts));
    const progress = await progressFor(opts);
    const results = await withSignal((signal) =>
      importBundles(bundles, store ? { store } : { registry: opts.to!, ctx }, {
        policy,
        tmpDir: opts.tmpdir,
        concurrency: opts.jobs,
        signal,
        onProgress: progress?.listener,
      }),
    ).finally(async () => {
      progress?.stop();
      // The context keeps where the bundle's blobs went (a later copy mounts them) as it closes.
      await Promise.all([store?.close?.(), ctx.close()]);
    });
    if (opts.json) process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    else if (!opts.quiet) {
      for (const r of results) {
        process.stdout.write(
          `bundle ${short(r.id)} (${r.name}): ${plural(r.versions, 'version')}${r.present ? ` (${r.present} already there)` : ''}, ${r.written} of ${r.blobs} blobs written; checked ${r.checked.join(', ') || 'blob digests only (no .sha256 beside it)'}\n`,
        );
        for (const d of r.destinations ?? []) process.stdout.write(`  ${d}\n`);
      }
    }
  });
}

function inspectCommand(bundle: Command): void {
  bundle
    .command('inspect')
    .summary("a bundle's versions, size, base and signature, without importing it")
    .argument('<bundle>', 'the bundle file (or the name its parts share, or a part)')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { json?: boolean }) => {
      const { findBundles, readBundleManifest } = await import('../bundle/read.js');
      const [found] = await findBundles([file]);
      const { manifest, id } = await readBundleManifest(found!.parts[0]!, found!.name);
      let size = 0;
      for (const p of found!.parts) size += (await stat(p)).size;
      const signed = (await stat(`${found!.name}.sig`).catch(() => undefined)) !== undefined;
      const info = {
        id,
        file: found!.name,
        parts: found!.parts.length,
        size,
        signed,
        through: manifest.through,
        selection: manifest.selection,
        bases: manifest.bases,
        blobs: manifest.blobs.length,
        bytes: manifest.blobs.reduce((n, b) => n + b.size, 0),
        assumes: manifest.assumes.length,
        versions: manifest.versions.map((v) => ({
          id: v.id,
          repository: v.repository,
          tag: v.tag,
          digest: v.descriptor.digest,
          taken: v.taken,
          source: v.source,
          attachments: v.referrers?.length ?? 0,
        })),
      };
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
        return;
      }
      const lines = [
        `bundle ${id}`,
        `file ${info.file}${info.parts > 1 ? ` (${info.parts} parts)` : ''}, ${formatBytes(size)}, ${signed ? `signed (${info.file}.sig)` : 'not signed'}`,
        `base ${info.bases.length ? info.bases.map(short).join(', ') : 'none (a full bundle, an oci-archive)'}; ${plural(info.blobs, 'blob')} inside (${formatBytes(info.bytes)}), ${info.assumes} assumed`,
        `versions ${manifest.selection.versions === 'all' ? 'every version' : 'the newest of each tag'} through ${info.through}:`,
        ...info.versions.map(
          (v) => `  ${v.id}  ${`${v.repository}:${v.tag}`.padEnd(40)}  ${v.digest.slice(0, 19)}  ${v.taken}`,
        ),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
