import { planOne } from '../engine/copy.js';
import { readConfig } from '../engine/plan.js';
import { planReferrers } from '../engine/referrers.js';
import { StowageError } from '../errors.js';
import { verifyBytes } from '../image/digest.js';
import { parseConfig, parseIndex, parseManifest } from '../image/documents.js';
import { isIndexMediaType } from '../image/mediatypes.js';
import { hostPlatform, type PlatformSpec, selectPlatform } from '../image/platform.js';
import { manifestSigner, trustedKeysFor } from '../policy/verify.js';
import {
  formatReference,
  type ImageReference,
  parseReference,
  parseRepository,
  repositoryName,
  withDefaultTag,
} from '../reference/reference.js';
import { registrySpelling } from '../reference/transport.js';
import type { Context } from '../registry/context.js';
import { isArchiveReference, openSource } from '../transports/open.js';

export interface InspectOptions {
  raw?: boolean;
  config?: boolean;
  platform?: PlatformSpec | undefined;
  /** Include the repository's tags (one more request), as skopeo inspect does. */
  tags?: boolean;
  signal?: AbortSignal | undefined;
}

export type InspectResult =
  | { kind: 'raw'; bytes: Buffer; mediaType: string; digest: string }
  | { kind: 'config'; bytes: Buffer }
  | { kind: 'summary'; summary: Record<string, unknown> };

/** skopeo-inspect-like information about an image in a registry. */
export async function inspect(
  ctx: Context,
  input: string,
  opts: InspectOptions = {},
): Promise<InspectResult> {
  const parsed = withDefaultTag(registryReference(input));
  return ctx.withCandidates(parsed, (ref) =>
    ctx.pullFrom(ref, async (client, endpoint) => {
      const reference = ref.digest ?? ref.tag!;
      const top = await client.getManifest(endpoint.path, reference, opts.signal);
      if (opts.raw) return { kind: 'raw', bytes: top.bytes, mediaType: top.mediaType, digest: top.digest };
      let manifest = top;
      if (isIndexMediaType(top.mediaType)) {
        const index = parseIndex(top.bytes, `index ${top.digest}`);
        const chosen = selectPlatform(index.manifests, opts.platform ?? hostPlatform(), formatReference(ref));
        manifest = await client.getManifest(endpoint.path, chosen.digest, opts.signal);
      }
      const m = parseManifest(manifest.bytes, `manifest ${manifest.digest}`);
      const configBytes = await client.getBlobBytes(endpoint.path, m.config.digest, opts.signal);
      verifyBytes(configBytes, m.config.digest, `config ${m.config.digest}`);
      if (opts.config) return { kind: 'config', bytes: configBytes };
      const config = parseConfig(configBytes, `config ${m.config.digest} of ${formatReference(ref)}`);
      const summary: Record<string, unknown> = {
        Name: repositoryName(ref),
        Digest: top.digest,
      };
      if (opts.tags !== false) summary.RepoTags = await client.listTags(endpoint.path, opts.signal);
      Object.assign(summary, {
        Created: config.created,
        Labels: config.config?.Labels ?? null,
        Architecture: config.architecture,
        Os: config.os,
        ...(config.variant ? { Variant: config.variant } : {}),
        Layers: m.layers.map((l) => l.digest),
        LayersData: m.layers.map((l) => ({
          MIMEType: l.mediaType,
          Digest: l.digest,
          Size: l.size,
          Annotations: l.annotations ?? null,
        })),
        Env: config.config?.Env ?? null,
        MediaType: manifest.mediaType,
        ManifestDigest: manifest.digest,
      });
      return { kind: 'summary', summary };
    }),
  );
}

/** All tags of a repository, as skopeo list-tags prints them. */
export async function listTags(
  ctx: Context,
  input: string,
  signal?: AbortSignal,
): Promise<{ Repository: string; Tags: string[] }> {
  // docker://REPO as well as REPO, as every other command reads references.
  const parsed = parseRepository(registrySpelling(input));
  return ctx.withCandidates(parsed, async (ref) => {
    const { client, endpoint } = await ctx.client(ref);
    const tags = await client.listTags(endpoint.path, signal);
    return { Repository: repositoryName(ref), Tags: tags };
  });
}

/** An image in a registry, spelled bare or as docker://; archives are inspected elsewhere. */
function registryReference(input: string): ImageReference {
  if (isArchiveReference(input)) {
    throw new StowageError('INVALID_ARGUMENT', `${input} is an archive, not an image in a registry`);
  }
  return parseReference(registrySpelling(input));
}

export interface ReferrerSummary {
  digest: string;
  artifactType: string;
  mediaType: string;
  size: number;
  /** The manifest it is attached to. */
  subject: string;
  /** cosign's tag it is found under. */
  tag?: string | undefined;
  /** For a signature: the trusted key (policy.json) that verifies it, where one does. */
  signer?: string | undefined;
}

/**
 * What is attached to an image (a registry reference or an archive): every signature, attestation and
 * SBOM, and what is attached to those, as copy and pull would carry them. Only manifests are read.
 */
export async function listReferrers(
  ctx: Context,
  input: string,
  opts: { platform?: PlatformSpec | undefined; signal?: AbortSignal | undefined } = {},
): Promise<{ Name: string; Digest: string; Referrers: ReferrerSummary[] }> {
  const opened = await openSource(ctx, input, { signal: opts.signal });
  try {
    const image = opened.images[0]!;
    const planned = await planOne(
      {
        source: opened.source,
        reference: image.reference,
        names: { repoTags: [], annotations: {} },
        label: image.asked,
      },
      { all: true, platforms: [opts.platform ?? hostPlatform()] },
      opts.signal,
    );
    const subjects = planned.plan.documents.map((d) => d.descriptor.digest);
    const found = await planReferrers(opened.source, subjects, {}, opts.signal);
    const keys = image.ref ? await trustedKeysFor(await ctx.policy(), image.ref) : [];
    const out: ReferrerSummary[] = [];
    for (const r of found) {
      const signer = keys.length
        ? await manifestSigner(
            keys,
            parseManifest(r.document.bytes, `attachment ${r.document.descriptor.digest}`),
            (layer) => readConfig(opened.source, layer, opts.signal),
          )
        : undefined;
      out.push({
        digest: r.document.descriptor.digest,
        artifactType: r.artifactType,
        mediaType: r.document.descriptor.mediaType,
        size: r.document.descriptor.size,
        subject: r.subject,
        ...(r.tag ? { tag: r.tag } : {}),
        ...(signer ? { signer } : {}),
      });
    }
    return { Name: image.asked, Digest: planned.plan.root.descriptor.digest, Referrers: out };
  } finally {
    await opened.close();
  }
}
