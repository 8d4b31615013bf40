/**
 * The one place a reference becomes a reader or a writer: docker://, oci-archive:, docker-archive:,
 * oci:, dir:, bare paths and bare image names, for sources and destinations, for the CLI and the API.
 * Nothing outside transports/ looks at a transport's spelling.
 */
import { dirname, resolve as resolvePath } from 'node:path';
import type { ArchiveFormat } from '../archive/formats.js';
import type { BlobStats } from '../engine/blobs.js';
import type { ImageDestination } from '../engine/destination.js';
import type { ImageSource } from '../engine/source.js';
import { StowageError } from '../errors.js';
import type { Signer } from '../policy/sign.js';
import { admit } from '../policy/verify.js';
import { formatReference, type ImageReference, withDefaultTag } from '../reference/reference.js';
import {
  type ArchiveReference,
  archiveFormat,
  looksLikePath,
  parseDestinationReference,
  parseTransportReference,
  type TransportReference,
} from '../reference/transport.js';
import type { Context } from '../registry/context.js';
import { type ArchiveFileOptions, archiveDestination, type WrittenOutput } from './archive/destinations.js';
import { ArchiveSource, type ListedImage } from './archive/source.js';
import { RegistryDestination } from './registry/destination.js';
import { RegistrySource, resolveRegistrySource } from './registry/source.js';
import { RegistrySink } from './registry/upload.js';

/** One image a source offers. */
export interface SourceImage {
  /** The tag or digest to read it by on the source. */
  reference: string;
  /** What results call what was asked for: the registry reference fully qualified, or the input. */
  asked: string;
  /** Where it was read: registry/repository (after registries.conf) or the archive. */
  served: string;
  /** Names it carries: the registry's name:tag, or the names an archive records. */
  names: string[];
  /** A registry image: the reference that served it. */
  ref?: ImageReference | undefined;
  /** A registry image: the digest its reference resolved to. */
  resolved?: string | undefined;
  /** An archive's image: its entry. */
  listed?: ListedImage | undefined;
  /** A registry repository holding its blobs (a destination in the same registry mounts from it). */
  origin?: { host: string; repository: string } | undefined;
}

export interface OpenedSource {
  source: ImageSource;
  images: SourceImage[];
  /** The archive, when the source is one (push reads its format and recorded names). */
  archive?: ArchiveSource | undefined;
  close(): Promise<void>;
}

export interface OpenSourceOptions {
  /** An archive's image to take (a name, "@N" or a digest), overriding the reference's own NAME. */
  image?: string | undefined;
  /** Every image of an archive when none is named (push); else the one image it must hold (pull). */
  everyImage?: boolean | undefined;
  /** Only archives: a bare argument is a path whatever it looks like (push takes nothing else). */
  archivesOnly?: boolean | undefined;
  signal?: AbortSignal | undefined;
}

/** Opens a registry image by its parsed reference (nothing parsed again). */
export async function openRegistryImage(
  ctx: Context,
  reference: ImageReference,
  signal?: AbortSignal,
): Promise<OpenedSource> {
  const { source, ref, endpoint, digest } = await resolveRegistrySource(ctx, reference, signal);
  const full = formatReference({ ...ref, digest: undefined });
  return {
    source,
    images: [
      {
        reference: ref.digest ?? ref.tag!,
        asked: formatReference(ref),
        served: `${endpoint.host}/${endpoint.path}`,
        names: ref.tag ? [full] : [],
        ref,
        resolved: digest,
        origin: { host: endpoint.host, repository: endpoint.path },
      },
    ],
    close: () => source.close(),
  };
}

/** Opens any source reference. */
export async function openSource(
  ctx: Context,
  input: string,
  opts: OpenSourceOptions = {},
): Promise<OpenedSource> {
  const t = parseSource(input, opts);
  if (t.transport === 'docker') return openRegistryImage(ctx, t.ref, opts.signal);
  return openArchiveSource(t, input, opts);
}

function parseSource(input: string, opts: OpenSourceOptions): TransportReference {
  if (opts.archivesOnly && !/^(oci-archive|docker-archive|oci|dir):/.test(input))
    return { transport: 'archive', path: input };
  const t = parseTransportReference(input);
  if (opts.archivesOnly && t.transport === 'docker')
    throw new StowageError('INVALID_ARGUMENT', `${input} is not an archive`);
  return t;
}

async function openArchiveSource(
  t: ArchiveReference,
  input: string,
  opts: OpenSourceOptions,
): Promise<OpenedSource> {
  const archive = await ArchiveSource.open(t.path, archiveFormat(t));
  try {
    const name = opts.image ?? ('name' in t ? t.name : undefined);
    const chosen = name || !opts.everyImage ? [archive.select(name)] : archive.images;
    return {
      source: archive,
      archive,
      images: chosen.map((listed) => ({
        reference: listed.descriptor.digest,
        asked: input,
        served: archive.description,
        names: listed.names,
        listed,
      })),
      close: () => archive.close(),
    };
  } catch (e) {
    await archive.close();
    throw e;
  }
}

/** Opens an archive or layout by reference (TRANSPORT:PATH or a bare path) for reading it as such. */
export async function openArchive(input: string, format?: ArchiveFormat): Promise<ArchiveSource> {
  const t = /^(oci-archive|docker-archive|oci|dir):/.test(input)
    ? (parseTransportReference(input) as ArchiveReference)
    : ({ transport: 'archive', path: input } as const);
  return ArchiveSource.open(t.path, format ?? archiveFormat(t));
}

/** A destination reference: a registry (its reference) or an archive format and path. */
export type DestinationSpec =
  | { kind: 'registry'; ref: ImageReference }
  | { kind: 'archive'; format: ArchiveFormat; path: string; name?: string | undefined };

/** Reads a destination reference; a bare path is refused (it cannot say which format to write). */
export function parseDestination(input: string): DestinationSpec {
  const t = parseDestinationReference(input);
  if (t.transport === 'docker') return { kind: 'registry', ref: t.ref };
  return { kind: 'archive', format: t.transport, path: t.path, name: 'name' in t ? t.name : undefined };
}

/** The destination writing an archive format at a path. */
export function openArchiveDestination(
  format: ArchiveFormat,
  path: string,
  opts: ArchiveFileOptions = {},
): ImageDestination<WrittenOutput> {
  return archiveDestination(format, path, opts);
}

/**
 * The tag a registry source reference names (latest where it names neither a tag nor a digest), known
 * before it is opened; undefined for a digest alone or an archive.
 */
export function sourceTag(input: string): string | undefined {
  const t = parseTransportReference(input);
  return t.transport === 'docker' ? withDefaultTag(t.ref).tag : undefined;
}

/** Whether a source reference names an archive or layout (anything but a registry image). */
export function isArchiveReference(input: string): boolean {
  return parseTransportReference(input).transport !== 'docker';
}

export interface RegistryDestinationSettings {
  /** Tags the image goes under (none: by digest alone). */
  tags: string[];
  /** Check every blob against the source even where the registry has it (restoring an archive). */
  verifyExisting?: boolean | undefined;
  /** Counts to add to (a push's destinations share one). */
  stats?: BlobStats | undefined;
  /** Bytes per PATCH for large blobs (default: one PUT up to 1 GiB). */
  chunkSize?: number | undefined;
  /** A sink to reuse (a sync job's tags share one: a blob sent for one tag is not asked about again). */
  sink?: RegistrySink | undefined;
  /** Sign what is pushed (cosign's .sig), under this identity. */
  sign?: { signer: Signer; identity: string } | undefined;
}

/** The repository `target` names, as a destination (BLOCKED when registries.conf blocks it). */
export async function openRegistryDestination(
  ctx: Context,
  target: ImageReference,
  settings: RegistryDestinationSettings,
): Promise<RegistryDestination> {
  let sink = settings.sink;
  if (!sink) {
    const { client, endpoint } = await ctx.client(target);
    sink = new RegistrySink(
      { client, host: endpoint.host, repo: endpoint.path },
      { locations: ctx.blobLocations, chunkSize: settings.chunkSize },
    );
  }
  return new RegistryDestination(sink, {
    tags: settings.tags,
    retries: ctx.retries,
    verifyExisting: settings.verifyExisting,
    stats: settings.stats,
    sign: settings.sign,
  });
}

/** Whether an inspect/verify argument names a local archive rather than a registry image. */
export async function isLocalArchiveArgument(input: string): Promise<boolean> {
  return /^(oci-archive|docker-archive|oci|dir):/.test(input) || looksLikePath(input);
}

/** Path, expected format and image name of a local archive argument (PATH or TRANSPORT:PATH[:NAME]). */
export function parseArchiveArgument(input: string): {
  path: string;
  format?: ArchiveFormat | undefined;
  name?: string | undefined;
} {
  if (!/^(oci-archive|docker-archive|oci|dir):/.test(input)) return { path: input };
  const t = parseTransportReference(input) as ArchiveReference;
  return { path: t.path, format: archiveFormat(t), name: 'name' in t ? t.name : undefined };
}

/**
 * Admits an image of an opened source by the trust policy (POLICY_REJECTED if refused): a registry
 * image by its reference and cosign signatures, an archive's by its transport and path.
 */
export async function admitImage(
  ctx: Context,
  opened: OpenedSource,
  image: SourceImage,
  signal?: AbortSignal,
): Promise<void> {
  const policy = await ctx.policy();
  if (!policy) return;
  const { source, archive } = opened;
  if (image.ref && image.resolved && source instanceof RegistrySource) {
    const digest = image.resolved;
    await admit(policy, {
      transport: 'docker',
      ref: image.ref,
      digest,
      signatures: () => source.signatures(digest, signal),
    });
    return;
  }
  const path = resolvePath(archive?.access.path ?? image.served);
  const scopes = [path];
  for (let p = dirname(path); p !== dirname(p); p = dirname(p)) scopes.push(p);
  scopes.push('/');
  await admit(policy, {
    transport: archive?.format ?? 'oci',
    scopes,
    digest: image.reference,
    signatures: async () => [],
  });
}
