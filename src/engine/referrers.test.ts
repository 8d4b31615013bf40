import { describe, expect, it } from 'vitest';
import { FakeSource } from '../../test/harness/fake-source.js';
import { MediaType } from '../image/mediatypes.js';
import { artifactTypeOf, planReferrers } from './referrers.js';

function signed() {
  const src = new FakeSource();
  const image = src.image('1', [src.blob('layer')]);
  const sbom = src.attach(image, 'application/spdx+json', '{"sbom":1}');
  const att = src.attach(image, 'application/vnd.in-toto+json', '{"att":1}');
  const sbomSig = src.attach(
    sbom,
    'application/vnd.dev.cosign.simplesigning.v1+json',
    'sig of sbom',
    `${sbom.digest.replace(':', '-')}.sig`,
  );
  const sigSig = src.attach(
    sbomSig,
    'application/vnd.dev.cosign.simplesigning.v1+json',
    'sig of sig',
    `${sbomSig.digest.replace(':', '-')}.sig`,
  );
  return { src, image, sbom, att, sbomSig, sigSig };
}

describe('planReferrers', () => {
  it('finds attachments and theirs in turn, each once, subjects before what is attached to them', async () => {
    const { src, image, sbom, att, sbomSig, sigSig } = signed();
    const found = await planReferrers(src, [image.digest, image.digest], {});
    expect(found.map((r) => r.document.descriptor.digest)).toEqual([
      sbom.digest,
      att.digest,
      sbomSig.digest,
      sigSig.digest,
    ]);
    expect(found[2]).toMatchObject({ subject: sbom.digest, tag: `${sbom.digest.replace(':', '-')}.sig` });
    // Each carries its blobs (config and layers, once), read from nothing but manifests.
    expect(found[0]!.blobs.map((b) => b.mediaType)).toEqual([
      'application/vnd.oci.empty.v1+json',
      'application/spdx+json',
    ]);
    expect(src.reads).toEqual([]);
  });

  it('filters the first level by artifact type, keeping what is attached to the kept ones', async () => {
    const { src, image, sbom, sbomSig, sigSig } = signed();
    const found = await planReferrers(src, [image.digest], { artifactTypes: ['application/spdx+json'] });
    expect(found.map((r) => r.document.descriptor.digest)).toEqual([
      sbom.digest,
      sbomSig.digest,
      sigSig.digest,
    ]);
    expect(await planReferrers(src, [image.digest], { carry: false })).toEqual([]);
  });

  it('says what an attachment is: its artifactType, else its config type, else its first layer', () => {
    const desc = (mediaType: string) => ({ mediaType, digest: `sha256:${'0'.repeat(64)}`, size: 1 });
    const base = { schemaVersion: 2, mediaType: MediaType.OciManifest };
    expect(
      artifactTypeOf({
        ...base,
        artifactType: 'x/y',
        config: desc(MediaType.OciConfig),
        layers: [],
      } as never),
    ).toBe('x/y');
    expect(
      artifactTypeOf({
        ...base,
        config: desc('application/vnd.cncf.helm.config.v1+json'),
        layers: [],
      } as never),
    ).toBe('application/vnd.cncf.helm.config.v1+json');
    expect(
      artifactTypeOf({
        ...base,
        config: desc(MediaType.OciConfig),
        layers: [desc('application/vnd.dev.cosign.simplesigning.v1+json')],
      } as never),
    ).toBe('application/vnd.dev.cosign.simplesigning.v1+json');
  });
});
