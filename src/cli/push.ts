import { type Command, InvalidArgumentError, Option } from 'commander';
import { blobLocationsPath } from '../config/stowage.js';
import { byteSize } from '../core/sizes.js';
import { StowageError } from '../errors.js';
import { parsePlatform } from '../image/platform.js';
import { Context } from '../registry/context.js';
import type { PushResult } from '../transfer/push.js';
import { formatBytes, formatDuration, plural } from './format.js';
import {
  addCompressOptions,
  addRegistryOptions,
  type CompressCliOptions,
  compressFrom,
  contextFrom,
  credentialsFrom,
  parseBool,
  parseGoDuration,
  parsePositiveInt,
  parseRetryTimes,
  type RegistryCliOptions,
  retryFrom,
} from './options.js';
import { type ProgressMode, type ProgressRenderer, progressFor, progressOption } from './progress.js';
import { printResult, referrerOption } from './pull.js';
import { withSignal } from './run.js';

/** Sizes such as 64MiB, 1GiB, 5000000. */
/** --chunk-size: a size (see core/sizes.ts), at least 1 MiB. */
export function parseChunkSize(v: string): number {
  const n = byteSize(v);
  if (n === undefined) throw new InvalidArgumentError('expected a size such as 64MiB or 1GiB');
  if (n < 1024 * 1024) throw new InvalidArgumentError('chunks must be at least 1MiB');
  return n;
}

/**
 * --digestfile: the manifest digest of what was written (the first image's), as skopeo writes it (no
 * newline), atomically, after the copy succeeded.
 */
export async function writeDigestFile(path: string | undefined, digest: string | undefined): Promise<void> {
  if (!path || !digest) return;
  const { writeFileAtomic } = await import('../core/atomic.js');
  await writeFileAtomic(path, digest);
}

function printPush(result: PushResult, elapsed: number, opts: { json?: boolean; quiet?: boolean }): void {
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ ...result, seconds: elapsed / 1000 }, null, 2)}\n`);
    return;
  }
  if (opts.quiet) return;
  for (const img of result.images) {
    const note = img.newDigest ? ' (a manifest made from a docker-archive: a new digest)' : '';
    process.stdout.write(`${img.source} -> ${img.destinations.join(', ')} ${img.digest}${note}\n`);
    for (const r of img.referrers ?? [])
      process.stdout.write(`  with ${r.artifactType} ${r.digest}${r.tag ? ` (${r.tag})` : ''}\n`);
  }
  if (result.dryRun) {
    process.stdout.write('dry run: nothing was sent\n');
    return;
  }
  const s = result.stats;
  process.stdout.write(
    `${plural(s.uploaded, 'blob')} uploaded (${formatBytes(s.bytes)}), ${s.existing} already there, ${s.mounted} mounted, in ${formatDuration(elapsed)}\n`,
  );
}

interface PushCliOptions extends RegistryCliOptions, CompressCliOptions {
  digestfile?: string;
  preserveDigests?: boolean;
  image?: string;
  allTags?: boolean;
  prefix?: string;
  platform?: string;
  jobs: number;
  chunkSize?: number;
  quiet?: boolean;
  progress?: ProgressMode;
  json?: boolean;
  dryRun?: boolean;
  signBySigstorePrivateKey?: string;
  signPassphraseFile?: string;
  removeSignatures?: boolean;
  referrerType?: string;
}

function signOption(opts: { signBySigstorePrivateKey?: string; signPassphraseFile?: string }) {
  return opts.signBySigstorePrivateKey
    ? { keyPath: opts.signBySigstorePrivateKey, passphraseFile: opts.signPassphraseFile }
    : undefined;
}

/**
 * Says where each image is about to go, before anything is written: an archive's own recorded names
 * become the targets when DEST is a registry, and a typo should show before it overwrites a tag.
 */
function announceTargets(opts: { quiet?: boolean; json?: boolean }) {
  if (opts.quiet || opts.json) return undefined;
  return (targets: { source: string; destinations: string[] }[]) => {
    for (const t of targets) process.stderr.write(`writing ${t.source} -> ${t.destinations.join(', ')}\n`);
  };
}

/** What push and copy pass alike to the engine, from the flags they share. */
function sharedTransferOptions(
  opts: CompressCliOptions & {
    jobs: number;
    chunkSize?: number;
    dryRun?: boolean;
    quiet?: boolean;
    progress?: ProgressMode;
    json?: boolean;
    signBySigstorePrivateKey?: string;
    signPassphraseFile?: string;
    removeSignatures?: boolean;
    referrerType?: string;
    preserveDigests?: boolean;
  },
  signal: AbortSignal,
  progress: ProgressRenderer | undefined,
) {
  return {
    concurrency: opts.jobs,
    chunkSize: opts.chunkSize,
    signal,
    onProgress: progress?.listener,
    dryRun: opts.dryRun,
    onTargets: opts.dryRun ? undefined : announceTargets(opts),
    sign: signOption(opts),
    referrers: referrerOption(opts),
    compress: compressFrom(opts),
    preserveDigests: opts.preserveDigests,
  };
}

export function pushCommand(program: Command): void {
  const cmd = program
    .command('push')
    .summary('push the images of an archive to a registry, digests intact')
    .description(
      'Push an archive or layout (any format stowage reads: ours, skopeo, podman, docker save) to a ' +
        'registry. DEST is a repository[:tag] for one image (the tag defaults to the one the archive ' +
        'records), or a registry[/namespace] under which every image keeps its own repository path ' +
        '(--prefix inserts a path before it). Manifests keep their digests; a docker-archive, which ' +
        'holds no manifest, gets its layers compressed deterministically (parallel gzip, or --compress) ' +
        'as they are uploaded, and a new manifest (the same archive always gives the same digest), ' +
        'unless stowage pulled the image before and the registry has its layers: then the original ' +
        'manifest goes back, digest intact. Blobs the registry has are skipped, blobs in another ' +
        'repository of it are mounted (where this run or an earlier one saw them, kept in ' +
        '~/.cache/stowage/locations/), tags are set last.',
    )
    .argument(
      '<archive>',
      'archive or layout: a path, or oci-archive:PATH[:NAME], docker-archive:, oci:, dir:',
    )
    .argument('<dest>', 'registry/repository[:tag], or registry[/namespace] for several images')
    .option('--image <name>', 'push only this image of the archive: a recorded name, @INDEX or a digest')
    .option('--all-tags', 'every name the archive records for an image becomes a tag (default: the first)')
    .option(
      '--prefix <path>',
      'when DEST is a registry or namespace: put images under this path (e.g. mirror/)',
    )
    .option(
      '--platform <os/arch[/variant]>',
      'push one platform of a multi-arch image (default: the whole index)',
    )
    .option('-j, --jobs <n>', 'blobs uploaded in parallel', parsePositiveInt, 4)
    .option(
      '--chunk-size <size>',
      'upload blobs larger than this in chunks of this size (default 1GiB; the registry may ask for smaller)',
      parseChunkSize,
    )
    .option('--dry-run', 'resolve the images and their destinations, print them, send nothing')
    .option('--remove-signatures', "leave the archive's attachments (signatures, attestations, SBOMs) behind")
    .option(
      '--referrer-type <type,...>',
      'push only attachments of these artifact types (and what is attached to those)',
    )
    .option(
      '--sign-by-sigstore-private-key <file>',
      "sign what is pushed with this key (cosign's encrypted format, or a PEM ECDSA key): a cosign-compatible .sig, as skopeo writes",
    )
    .option('--sign-passphrase-file <file>', "the key's passphrase: the file's first line")
    .option('--digestfile <file>', 'write the digest of the manifest pushed to this file (as skopeo does)')
    .option(
      '--preserve-digests',
      'fail, before sending anything, where a digest would change (a docker-archive whose layers would be compressed)',
    )
    .option('-q, --quiet', 'print no progress and no summary')
    .option('--json', 'print the result as JSON');
  cmd.addOption(progressOption());
  addCompressOptions(cmd, "a docker-archive's plain layers are compressed (default gzip)");
  addRegistryOptions(cmd).action(async (archive: string, dest: string, opts: PushCliOptions) => {
    const { push } = await import('../transfer/push.js');
    if (opts.prefix !== undefined && !/^([a-z0-9]+([._-][a-z0-9]+)*\/)*$/.test(opts.prefix)) {
      throw new StowageError(
        'INVALID_ARGUMENT',
        `--prefix "${opts.prefix}" is not a repository path ending in "/", e.g. mirror/ or team/mirror/`,
      );
    }
    const ctx = await contextFrom(opts);
    const progress = await progressFor(opts);
    const started = performance.now();
    try {
      const result = await withSignal((signal) =>
        push(ctx, archive, dest, {
          image: opts.image,
          allTags: opts.allTags,
          prefix: opts.prefix,
          platform: opts.platform ? parsePlatform(opts.platform) : undefined,
          ...sharedTransferOptions(opts, signal, progress),
        }),
      );
      progress?.stop();
      if (!result.dryRun) await writeDigestFile(opts.digestfile, result.images[0]?.digest);
      printPush(result, performance.now() - started, opts);
    } finally {
      progress?.stop();
      await ctx.close();
    }
  });
}

interface CopyCliOptions extends CompressCliOptions {
  checksum: boolean;
  preserveDigests?: boolean;
  additionalTag: string[];
  digestfile?: string;
  srcAuthfile?: string;
  destAuthfile?: string;
  srcCertDir?: string;
  destCertDir?: string;
  registriesConf?: string;
  authfile?: string;
  srcCreds?: string | false;
  destCreds?: string | false;
  srcRegistryToken?: string;
  destRegistryToken?: string;
  /** Both sides, as skopeo's global --tls-verify. */
  tlsVerify?: boolean;
  srcTlsVerify?: boolean;
  destTlsVerify?: boolean;
  certDir?: string;
  retryTimes?: number;
  retryDelay?: number;
  all?: boolean;
  platform?: string;
  jobs: number;
  chunkSize?: number;
  quiet?: boolean;
  progress?: ProgressMode;
  json?: boolean;
  dryRun?: boolean;
  removeSignatures?: boolean;
  referrerType?: string;
  policy?: string;
  signBySigstorePrivateKey?: string;
  signPassphraseFile?: string;
}

/** Each side's registry settings, spelled as skopeo copy spells them. */
function addCopySides(cmd: Command): Command {
  return cmd
    .option('--registries-conf <file>', 'registries.conf to use')
    .option('--authfile <file>', 'auth.json with credentials for both sides')
    .option('--src-creds <user:password>', 'credentials for the source registry')
    .option('--dest-creds <user:password>', 'credentials for the destination registry')
    .addOption(
      new Option(
        '--tls-verify <bool>',
        "both sides at once, as skopeo's global flag (--src-tls-verify and --dest-tls-verify win over it)",
      ).argParser(parseBool),
    )
    .addOption(
      new Option('--src-tls-verify <bool>', 'require verified HTTPS from the source').argParser(parseBool),
    )
    .addOption(
      new Option('--dest-tls-verify <bool>', 'require verified HTTPS from the destination').argParser(
        parseBool,
      ),
    )
    .option('--cert-dir <dir>', 'directory with CA certificates (*.crt)')
    .option('--retry-times <n>', 'retries after a transient failure (default 5)', parseRetryTimes)
    .option('--retry-delay <duration>', 'a fixed wait between retries (500ms, 2s, 1m30s)', parseGoDuration)
    .option('--src-no-creds', 'read the source anonymously (no auth file, helper or keyring)')
    .option('--dest-no-creds', 'write to the destination anonymously')
    .option('--src-registry-token <token>', 'a bearer token for the source registry, sent as it is')
    .option('--dest-registry-token <token>', 'a bearer token for the destination registry, sent as it is')
    .option('--src-authfile <file>', 'auth.json for the source (instead of --authfile)')
    .option('--dest-authfile <file>', 'auth.json for the destination (instead of --authfile)')
    .option('--src-cert-dir <dir>', 'CA certificates (*.crt) for the source registry')
    .option('--dest-cert-dir <dir>', 'CA certificates (*.crt) for the destination registry');
}

export function copyCommand(program: Command): void {
  const cmd = program
    .command('copy')
    .summary('copy an image between registries and archives, in any direction (like skopeo copy)')
    .description(
      'SRC and DST are transport references as skopeo spells them: docker://REGISTRY/REPO[:TAG|@DIGEST] ' +
        '(or a bare reference), oci-archive:PATH[:NAME], docker-archive:PATH[:NAME|:@INDEX], ' +
        'oci:PATH[:NAME], dir:PATH. Registry to registry streams each blob from the source straight ' +
        'to the destination (no local disk) and mounts it instead when both are repositories of one ' +
        'registry, or when an earlier run saw it in another repository of the destination ' +
        '(~/.cache/stowage/locations/). To an archive, this is `stowage pull` with one image.\n' +
        'What is attached to the image goes with it to a registry, an oci-archive or an OCI layout, ' +
        'digests intact: OCI 1.1 referrers (SBOMs, attestations, signatures naming it as their subject, ' +
        "found by the referrers API or its tag schema) and cosign's sha256-HEX.sig/.att/.sbom tags, and " +
        'what is attached to those in turn. The source image must pass the trust policy (policy.json).',
    )
    .argument('<src>', 'source image')
    .argument('<dst>', 'destination')
    .option('--all', 'copy a whole multi-arch index, digest intact')
    .option(
      '--platform <os/arch[/variant]>',
      "platform to take from a multi-arch image (default: the host's)",
    )
    .option('-j, --jobs <n>', 'blobs in parallel', parsePositiveInt, 4)
    .option(
      '--chunk-size <size>',
      'upload blobs larger than this in chunks of this size (default 1GiB; the registry may ask for smaller)',
      parseChunkSize,
    )
    .option('--dry-run', 'resolve the source and the destination, print what would be written, write nothing')
    .option('--remove-signatures', 'carry no signatures, attestations or SBOMs with the image (as skopeo)')
    .option(
      '--sign-by-sigstore-private-key <file>',
      "sign the image at a registry destination with this key (cosign's encrypted format, or a PEM ECDSA key), as skopeo does",
    )
    .option('--sign-passphrase-file <file>', "the key's passphrase: the file's first line")
    .option(
      '--policy <file>',
      'trust policy (containers-policy.json) the source image must pass (default: ~/.config/containers/policy.json, /etc/containers/policy.json)',
    )
    .option(
      '--referrer-type <type,...>',
      'carry only attachments of these artifact types (e.g. application/spdx+json); what is attached to those comes too',
    )
    .option('--no-checksum', 'write no DST.sha256 beside an archive file: saves one pass over its bytes')
    .option('--digestfile <file>', 'write the digest of the manifest written to this file (as skopeo does)')
    .option(
      '--preserve-digests',
      "fail, before writing anything, where the digest written would not be the source's (a docker-archive destination, compressed plain layers, several platforms chosen from an index)",
    )
    .option(
      '--additional-tag <name>',
      'a docker-archive destination: another name for the image (repeatable), as skopeo adds it',
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option('-q, --quiet', 'print no progress and no summary')
    .option('--json', 'print the result as JSON');
  cmd.addOption(progressOption());
  addCompressOptions(cmd, "plain layers (a docker-archive source's) are compressed");
  addCopySides(cmd).action(async (src: string, dst: string, opts: CopyCliOptions) => {
    const { copyImage } = await import('../transfer/copy.js');
    const common = {
      registriesConf: opts.registriesConf,
      authFile: opts.authfile,
      certDir: opts.certDir,
      retry: retryFrom(opts),
    };
    const srcCtx = await Context.create({
      ...common,
      authFile: opts.srcAuthfile ?? common.authFile,
      certDir: opts.srcCertDir ?? common.certDir,
      credentials: await credentialsFrom(opts.srcCreds, opts.srcRegistryToken),
      noCreds: opts.srcCreds === false,
      tlsVerify: opts.srcTlsVerify ?? opts.tlsVerify,
      policy: opts.policy,
    });
    const dstCtx = await Context.create({
      ...common,
      authFile: opts.destAuthfile ?? common.authFile,
      certDir: opts.destCertDir ?? common.certDir,
      credentials: await credentialsFrom(opts.destCreds, opts.destRegistryToken),
      noCreds: opts.destCreds === false,
      tlsVerify: opts.destTlsVerify ?? opts.tlsVerify,
      locationsDir: blobLocationsPath(),
    });
    const platform = opts.platform ? parsePlatform(opts.platform) : undefined;
    const progress = await progressFor(opts);
    const started = performance.now();
    try {
      const outcome = await withSignal((signal) =>
        copyImage(srcCtx, dstCtx, src, dst, {
          all: opts.all,
          platform,
          ...sharedTransferOptions(opts, signal, progress),
          checksum: opts.checksum,
          additionalTags: opts.additionalTag,
        }),
      );
      progress?.stop();
      if (!outcome.result.dryRun) {
        const digest = outcome.kind === 'registry' ? outcome.result.images[0]?.digest : outcome.result.digest;
        await writeDigestFile(opts.digestfile, digest);
      }
      if (outcome.kind === 'registry') printPush(outcome.result, performance.now() - started, opts);
      else printResult(outcome.result, performance.now() - started, opts);
    } finally {
      progress?.stop();
      await srcCtx.close();
      await dstCtx.close();
    }
  });
}
