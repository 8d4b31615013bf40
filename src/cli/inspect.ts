import type { Command } from 'commander';
import { StowageError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import type { ArchiveInfo } from '../transfer/archive-inspect.js';
import { formatBytes, forTerminal, plural } from './format.js';
import { addRegistryOptions, contextFrom, type RegistryCliOptions } from './options.js';
import { withSignal } from './run.js';
import { renderTemplate } from './template.js';

interface InspectCliOptions extends RegistryCliOptions {
  raw?: boolean;
  config?: boolean;
  platform?: string;
  tags: boolean;
  json?: boolean;
  text?: boolean;
  referrers?: boolean;
  format?: string;
}

export function inspectCommand(program: Command): void {
  const cmd = program
    .command('inspect')
    .summary('show an image in a registry, or what an archive holds')
    .description(
      'With an image reference: its digest, platform, layers and config, as JSON (like skopeo inspect).\n' +
        'With an archive or layout (a path, or oci-archive:PATH[:NAME], docker-archive:, oci:, dir:): ' +
        'its images, names, platforms, digests and sizes, as JSON too (--text for a listing). Layers are ' +
        'not read: `stowage verify` checks them. A bare word is taken as a path only if such a file ' +
        'exists; docker://REF is always an image.',
    )
    .argument('<ref>', 'image reference, or archive path')
    .option('--raw', 'print the manifest or index exactly as stored')
    .option('--config', "print the image's config blob")
    .option(
      '--platform <os/arch[/variant]>',
      "platform to show from a multi-arch image (default: the host's)",
    )
    .option('--no-tags', 'do not list the repository tags')
    .option('--json', 'print JSON (the default for images and archives alike)')
    .option('--text', 'archives: print a listing for people instead of JSON')
    .option(
      '-f, --format <template>',
      'print with a Go-style template, as skopeo does: {{.Digest}}, {{json .Labels}}, {{index .Labels "k"}}, {{len .Layers}}, {{join .RepoTags ","}}, {{range .Layers}}{{.}}{{end}}',
    )
    .option(
      '--referrers',
      'list what is attached to the image (signatures, attestations, SBOMs, and what is attached to those), from a registry or an archive',
    );
  addRegistryOptions(cmd).action(async (ref: string, opts: InspectCliOptions) => {
    if (opts.format && (opts.raw || opts.config)) {
      throw new StowageError('INVALID_ARGUMENT', '--format applies to the summary, not to --raw or --config');
    }
    // Checked before anything is asked of a registry.
    if (opts.format) renderTemplate(opts.format, {});
    const [{ archiveDocument, inspectArchive, isLocalArchiveArgument, parseArchiveArgument }, { inspect }] =
      await Promise.all([import('../transfer/archive-inspect.js'), import('../transfer/inspect.js')]);
    const platform = opts.platform ? parsePlatform(opts.platform) : undefined;
    if (opts.referrers) {
      const { listReferrers } = await import('../transfer/inspect.js');
      const ctx = await contextFrom(opts);
      try {
        const r = await withSignal((signal) => listReferrers(ctx, ref, { platform, signal }));
        process.stdout.write(`${JSON.stringify(r, null, 4)}\n`);
      } finally {
        await ctx.close();
      }
      return;
    }
    if (await isLocalArchiveArgument(ref)) {
      const { path, format, name } = parseArchiveArgument(ref);
      if (opts.raw || opts.config) {
        const what = opts.raw ? 'raw' : 'config';
        process.stdout.write(await archiveDocument(path, { format, name, what, platform }));
        return;
      }
      const info = await inspectArchive(path, { format, name });
      if (opts.format) process.stdout.write(forTerminal(renderTemplate(opts.format, info)));
      else
        process.stdout.write(
          opts.text ? forTerminal(describeArchive(info)) : `${JSON.stringify(info, null, 2)}\n`,
        );
      return;
    }
    const ctx = await contextFrom(opts);
    try {
      const r = await withSignal((signal) =>
        inspect(ctx, ref, { raw: opts.raw, config: opts.config, platform, tags: opts.tags, signal }),
      );
      if (r.kind === 'raw' || r.kind === 'config') process.stdout.write(r.bytes);
      else if (opts.format) process.stdout.write(forTerminal(renderTemplate(opts.format, r.summary)));
      else process.stdout.write(`${JSON.stringify(r.summary, null, 4)}\n`);
    } finally {
      await ctx.close();
    }
  });
}

/** A listing of an archive for people: one block per image, one line per platform. */
export function describeArchive(info: ArchiveInfo): string {
  const lines: string[] = [];
  const size = info.fileSize !== undefined ? `, ${formatBytes(info.fileSize)}` : '';
  const variant = info.variant ? ` (${info.variant})` : '';
  const n = info.images.length;
  lines.push(`${info.path}: ${info.format}${variant}, ${n} image${n === 1 ? '' : 's'}${size}`);
  for (const img of info.images) {
    lines.push(`@${img.index}  ${img.names.length ? img.names.join(', ') : '(no name)'}`);
    const isIndex = img.manifests.length !== 1 || img.manifests[0]!.digest !== img.digest;
    if (isIndex) lines.push(`    index ${img.digest}, ${plural(img.manifests.length, 'manifest')}`);
    for (const m of img.manifests) {
      const indent = isIndex ? '      ' : '    ';
      if (!m.present) {
        lines.push(`${indent}${m.platform ?? 'unknown'}  ${m.digest}  (not in the archive)`);
        continue;
      }
      const layers = `${m.layers} layer${m.layers === 1 ? '' : 's'}`;
      const created = m.created ? `, created ${m.created}` : '';
      lines.push(
        `${indent}${m.platform ?? 'unknown'}  ${m.digest}  ${layers}, ${formatBytes(m.size ?? 0)}${created}`,
      );
      lines.push(`${indent}  image id ${m.config}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
