/**
 * How the store's repositories are named when served as a registry. A stored repository is
 * REGISTRY-HOST/PATH as synced (`127.0.0.1:5000/team/app`); a colon is not allowed in a repository
 * name (skopeo and podman refuse it), so a host's port is spelled HOST_PORT: it is served as
 * `127.0.0.1_5000/team/app`. A host name holds no underscore, so the spelling reads back one way.
 *
 * Every version answers to its digest; the newest of a tag answers to the tag; an older one also to
 * `TAG--ID`, its version id (12 hex digits of sha256 of "repository:tag@digest"). A source tag spelled
 * so would have to hold the hash of its own name and digest; should one exist, the source tag wins.
 */

/** The served name of a stored repository. */
export function servedName(repository: string): string {
  const slash = repository.indexOf('/');
  if (slash < 0) return repository;
  const host = repository.slice(0, slash);
  return `${host.replace(/:(\d+)$/, '_$1')}${repository.slice(slash)}`;
}

/** The stored repository a served name stands for. */
export function storedName(served: string): string {
  const slash = served.indexOf('/');
  if (slash < 0) return served;
  const host = served.slice(0, slash);
  return `${host.replace(/_(\d+)$/, ':$1')}${served.slice(slash)}`;
}

/** The OCI distribution spec's repository name grammar (what clients accept). */
const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

export function isServableName(served: string): boolean {
  return served.length <= 255 && NAME.test(served);
}

export function isTag(reference: string): boolean {
  return TAG.test(reference);
}

/** The tag an older version of `tag` also answers to (undefined when it would be too long for a tag). */
export function versionTag(tag: string, id: string): string | undefined {
  const t = `${tag}--${id}`;
  return TAG.test(t) ? t : undefined;
}

/** The tag and version id a `TAG--ID` reference names, if it is one. */
export function parseVersionTag(reference: string): { tag: string; id: string } | undefined {
  const m = /^(.+)--([0-9a-f]{12})$/.exec(reference);
  return m ? { tag: m[1]!, id: m[2]! } : undefined;
}

/** The subject a cosign attachment tag (sha256-HEX.sig, .att, .sbom) stands for. */
export function cosignSubject(tag: string): string | undefined {
  const m = /^sha256-([0-9a-f]{64})\.(sig|att|sbom)$/.exec(tag);
  return m ? `sha256:${m[1]}` : undefined;
}
