/** Where blobs are known to be, per registry host: digest -> repositories. Lives as long as a Context. */
export class BlobLocations {
  private readonly byHost = new Map<string, Map<string, Set<string>>>();

  add(host: string, repo: string, digest: string): void {
    const digests = this.byHost.get(host) ?? new Map<string, Set<string>>();
    this.byHost.set(host, digests);
    const repos = digests.get(digest) ?? new Set<string>();
    digests.set(digest, repos);
    repos.add(repo);
  }

  /** Other repositories of `host` known to hold `digest`. */
  candidates(host: string, digest: string, except: string): string[] {
    return [...(this.byHost.get(host)?.get(digest) ?? [])].filter((r) => r !== except);
  }
}
