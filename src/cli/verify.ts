import type { Command } from 'commander';
import { StowageError } from '../errors.js';
import type { VerifyReport } from '../transfer/verify.js';
import { VERIFY_EXIT, verifyExitCode } from '../transfer/verify-exit.js';
import { formatBytes, plural } from './format.js';
import { parsePositiveInt } from './options.js';
import { withSignal } from './run.js';

interface VerifyCliOptions {
  sha256?: string;
  requireChecksum?: boolean;
  jobs: number;
  json?: boolean;
  quiet?: boolean;
}

/** Sets the process exit code without throwing (the report is the output). */
export type ExitCodeSink = (code: number) => void;

export function verifyCommand(program: Command, setExitCode: ExitCodeSink): void {
  program
    .command('verify')
    .summary('check an archive end to end: blobs, manifests, configs, diff_ids, its .sha256')
    .description(
      'Read an archive or layout (any format stowage reads) and check everything: every blob against ' +
        'its digest and size, every manifest against its descriptor, configs against their manifests, ' +
        "each layer's uncompressed digest against the config's diff_id, and the archive file against " +
        'the sha256sum-style PATH.sha256 beside it (or --sha256). Nothing is written.\n\n' +
        `Exit codes: ${VERIFY_EXIT.ok} intact; ${VERIFY_EXIT.checksum} the archive's sha256 does not match (or is required and absent); ` +
        `${VERIFY_EXIT.blob} a blob or manifest is missing or damaged; ${VERIFY_EXIT.consistency} manifests, configs and layers disagree ` +
        '(a diff_id, a layer count, a size); 6 not a readable archive. With several problems, the first ' +
        'of 11, 12, 10 that applies.',
    )
    .argument('<archive>', 'archive or layout: a path, or oci-archive:PATH, docker-archive:, oci:, dir:')
    .option('--sha256 <hex>', 'expected sha256 of the archive file, instead of PATH.sha256')
    .option('--require-checksum', 'fail when there is no PATH.sha256 (or --sha256) to check against')
    .option('-j, --jobs <n>', 'blobs checked in parallel', parsePositiveInt, 4)
    .option('-q, --quiet', 'print nothing; the exit code says it all')
    .option('--json', 'print the report as JSON')
    .action(async (input: string, opts: VerifyCliOptions) => {
      const [{ isLocalArchiveArgument, parseArchiveArgument }, { verifyArchive }] = await Promise.all([
        import('../transfer/archive-inspect.js'),
        import('../transfer/verify.js'),
      ]);
      if (!(await isLocalArchiveArgument(input))) {
        throw new StowageError(
          'NOT_FOUND',
          `${input} is not an archive file; give its path (./${input} for a directory) or TRANSPORT:PATH`,
        );
      }
      const { path, format, name } = parseArchiveArgument(input);
      if (name) {
        throw new StowageError(
          'INVALID_ARGUMENT',
          `verify checks a whole archive; drop ":${name}" from ${input}`,
        );
      }
      const report = await withSignal((signal) =>
        verifyArchive(path, {
          format,
          sha256: opts.sha256,
          requireChecksum: opts.requireChecksum,
          concurrency: opts.jobs,
          signal,
        }),
      );
      if (opts.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else if (!opts.quiet) process.stdout.write(describeReport(report));
      setExitCode(verifyExitCode(report));
    });
}

export function describeReport(r: VerifyReport): string {
  const lines: string[] = [];
  const what = `${plural(r.images, 'image')}, ${plural(r.manifests, 'manifest')}, ${plural(r.blobs, 'blob')} (${formatBytes(r.bytes)})`;
  lines.push(`${r.path}: ${r.format}, ${what}: ${r.ok ? 'verified' : 'FAILED'}`);
  const c = r.checksum;
  if (c.status === 'ok') lines.push(`sha256 ${c.sha256}: matches ${c.source}`);
  else if (c.status === 'absent') lines.push(`sha256 ${c.sha256} (no ${r.path}.sha256 to compare with)`);
  for (const p of r.problems) lines.push(`  ${p.kind}: ${p.message}`);
  for (const w of r.warnings) lines.push(`  note: ${w}`);
  return `${lines.join('\n')}\n`;
}
