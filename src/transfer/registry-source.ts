import { verifyBytes } from '../image/digest.js';
import type { Descriptor } from '../image/schemas.js';
import type { ManifestResponse, RegistryClient } from '../registry/client.js';
import type { ImageSource } from './source.js';

/** A repository in a registry as an image source. */
export class RegistrySource implements ImageSource {
  readonly description: string;
  constructor(
    readonly client: RegistryClient,
    readonly repository: string,
  ) {
    this.description = `${client.host}/${repository}`;
  }

  getManifest(reference: string, signal?: AbortSignal): Promise<ManifestResponse> {
    return this.client.getManifest(this.repository, reference, signal);
  }

  async getBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<AsyncIterable<Uint8Array>> {
    const kept = this.client.keptBlob(this.repository, descriptor.digest);
    if (kept)
      return (async function* () {
        yield kept;
      })();
    const { body } = await this.client.getBlob(this.repository, descriptor.digest, signal);
    return body;
  }

  async readSmallBlob(descriptor: Descriptor, signal?: AbortSignal): Promise<Buffer> {
    return this.client.readKept(this.repository, descriptor.digest, signal, (bytes) =>
      verifyBytes(bytes, descriptor.digest, `blob ${descriptor.digest} of ${this.description}`),
    );
  }

  getBlobTail(descriptor: Descriptor, length: number, signal?: AbortSignal): Promise<Buffer | undefined> {
    return this.client.getBlobTail(this.repository, descriptor.digest, descriptor.size, length, signal);
  }

  async close(): Promise<void> {}
}
