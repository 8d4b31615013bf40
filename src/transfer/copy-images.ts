/**
 * The one entry point from references to the engine: every pull, push, copy, export, the service's
 * jobs and the console go through copyImages(). It opens each source, lets the trust policy admit
 * each image before anything of it is read, opens every destination (credentials and blocked
 * registries checked before a byte moves), plans the images, and hands them to the engine's fan-out
 * (engine/fan-out.ts), which owns the dry run and the digest cache. The callers only say where images
 * come from and where they go.
 */
import type { ArchiveFormat } from '../archive/formats.js';
import type { BlobStats } from '../engine/blobs.js';
import { type PlannedImage, planOne, type Selection } from '../engine/copy.js';
import type { ImageNames } from '../engine/destination.js';
import { copyToEach, type FanOutOptions, type FanOutResult, type Target } from '../engine/fan-out.js';
import { StowageError } from '../errors.js';
import type { Signer } from '../policy/sign.js';
import { formatReference, type ImageReference } from '../reference/reference.js';
import type { Context } from '../registry/context.js';
import {
  admitImage,
  type OpenedSource,
  openArchiveDestination,
  openRegistryDestination,
  openSource,
  type SourceImage,
} from '../transports/open.js';
import type { RegistryDestination } from '../transports/registry/destination.js';

/** Where one image comes from. */
export type ImageFrom = (
  | /** A reference as the user wrote it: opened here, closed at the end. */ { input: string }
  /** An image of a source opened by the caller (an archive's many images, a stored version). */
  | { opened: OpenedSource; image: SourceImage }
) & {
  /** What reads it; absent for a stored version, which the trust policy admitted on its way in. */
  ctx?: Context | undefined;
  /** What the destination calls it (default: nothing; an archive's writer then names it by digest). */
  names?: ((image: SourceImage) => ImageNames) | undefined;
  /** A repository of a registry known to hold its blobs, where the source does not say. */
  origin?: { host: string; repository: string } | undefined;
};

/** Where the images go. */
export type ImageTo =
  | {
      /** Tags of one repository (one destination; the manifest is put under each). */
      registry: ImageReference[];
      ctx: Context;
      /** Counts to add to (a push's destinations share one). */
      stats?: BlobStats | undefined;
      /** Check every blob against the source even where the registry has it (restoring an archive). */
      verifyExisting?: boolean | undefined;
      chunkSize?: number | undefined;
      /** Signed as skopeo signs: the destination reference, with its tag. */
      signer?: Signer | undefined;
    }
  | { archive: ArchiveFormat; path: string; checksum?: boolean | undefined }
  /** A destination the caller built (the store). */
  | { target: Target };

export interface CopyImagesOptions extends FanOutOptions {
  selection: Selection;
}

export interface CopyImagesResult extends FanOutResult {
  /** What each image was opened as, in the order given. */
  sources: SourceImage[];
}

/** One image opened, admitted and planned. */
async function openImage(
  from: ImageFrom,
  selection: Selection,
  opts: CopyImagesOptions,
  close: (() => Promise<void>)[],
): Promise<{ planned: PlannedImage; image: SourceImage }> {
  let opened: OpenedSource;
  let image: SourceImage;
  if ('input' in from) {
    if (!from.ctx) throw new StowageError('INTERNAL', `${from.input} has no context to be read with`);
    opened = await openSource(from.ctx, from.input, { signal: opts.signal });
    close.push(() => opened.close());
    image = opened.images[0]!;
  } else {
    ({ opened, image } = from);
  }
  // The trust policy first: nothing of an image it refuses is read.
  if (from.ctx) await admitImage(from.ctx, opened, image, opts.signal);
  const planned = await planOne(
    {
      source: opened.source,
      reference: image.reference,
      names: from.names?.(image) ?? { repoTags: [], annotations: {} },
      label: image.asked,
      origin: from.origin ?? image.origin,
    },
    selection,
    opts.signal,
  ).catch((e) => {
    throw wholeIndexMissing(e, selection, image.asked);
  });
  return { planned, image };
}

/** An archive whose index names platforms it lacks cannot be copied whole: say what to do instead. */
function wholeIndexMissing(e: unknown, selection: Selection, what: string): unknown {
  if (
    selection.all &&
    e instanceof StowageError &&
    e.code === 'INVALID_ARCHIVE' &&
    /manifest .* is missing/.test(e.message)
  ) {
    return new StowageError(
      'INVALID_ARCHIVE',
      `${what} is an index whose platforms are not all in the archive, so it cannot be copied whole; choose one platform with --platform (${e.message})`,
    );
  }
  return e;
}

/** The destination a target names, opened (a registry's credentials checked). */
async function openTarget(to: ImageTo): Promise<Target> {
  if ('target' in to) return to.target;
  if ('archive' in to)
    return { destination: openArchiveDestination(to.archive, to.path, { checksum: to.checksum }) };
  const [first] = to.registry;
  if (!first) throw new StowageError('INTERNAL', 'a registry destination names at least one tag');
  const destination = await openRegistryDestination(to.ctx, first, {
    tags: to.registry.map((r) => r.tag!).filter(Boolean),
    verifyExisting: to.verifyExisting,
    stats: to.stats,
    chunkSize: to.chunkSize,
    sign: to.signer ? { signer: to.signer, identity: formatReference(first) } : undefined,
  });
  return { destination };
}

/**
 * Starts each destination registry's first request (GET /v2/: its scheme and auth challenge) while the
 * sources open and plan; a copy between registries otherwise asks it only after the source's manifest,
 * config and attachments, one more round trip in a row (25 ms on loopback, more across a network).
 * Nothing is sent or checked early: a failed first request is not remembered, so openTarget and the
 * copy meet the same error in their turn and report it where they always did.
 */
function warmDestinations(to: ImageTo[], signal: AbortSignal | undefined): void {
  for (const t of to) {
    if (!('registry' in t) || !t.registry[0]) continue;
    t.ctx
      .client(t.registry[0])
      .then(({ client }) => client.ping(signal))
      .catch(() => {});
  }
}

/**
 * Copies every image of `from` into every destination of `to`. A destination's failure is in its
 * outcome (see firstFailure); what stops all of them (a source refused or unreadable, an abort) throws.
 */
export async function copyImages(
  from: ImageFrom[],
  to: ImageTo[],
  opts: CopyImagesOptions,
): Promise<CopyImagesResult> {
  const close: (() => Promise<void>)[] = [];
  warmDestinations(to, opts.signal);
  try {
    const planned: PlannedImage[] = [];
    const sources: SourceImage[] = [];
    for (const f of from) {
      const o = await openImage(f, opts.selection, opts, close);
      planned.push(o.planned);
      sources.push(o.image);
    }
    const targets: Target[] = [];
    for (const t of to) targets.push(await openTarget(t));
    // Layers in an image's origin repository count as there: mounted, not sent.
    for (const t of targets) {
      const d = t.destination as Partial<RegistryDestination>;
      for (const p of planned) d.mountFromOrigin?.(p.origin);
    }
    const result = await copyToEach(planned, targets, opts);
    return { ...result, sources };
  } finally {
    for (const c of close.splice(0)) await c().catch(() => {});
  }
}
