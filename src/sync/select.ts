/** Which tags of a repository a job takes: explicit list, regex allow/deny, a semver range, the newest N. */
import semver from 'semver';
import type { JobConfig } from '../config/stowage.js';

/** A tag as a semantic version, if it reads as one: v1.2.3, 1.2.3-rc.1, or 3.20 and 7 (zeros filled in). */
export function tagVersion(tag: string): semver.SemVer | undefined {
  const t = tag.replace(/^v(?=\d)/, '');
  const short = /^(\d+)(?:\.(\d+))?$/.exec(t);
  const text = short ? `${short[1]}.${short[2] ?? 0}.0` : t;
  return semver.parse(text, { loose: true }) ?? undefined;
}

export function selectTags(
  available: string[],
  job: Pick<JobConfig, 'tags' | 'include' | 'exclude' | 'semver' | 'newest'>,
): string[] {
  let tags = job.tags ? [...new Set(job.tags)] : [...new Set(available)];
  if (job.include?.length) {
    const res = job.include.map((r) => new RegExp(r));
    tags = tags.filter((t) => res.some((r) => r.test(t)));
  }
  if (job.exclude?.length) {
    const res = job.exclude.map((r) => new RegExp(r));
    tags = tags.filter((t) => !res.some((r) => r.test(t)));
  }
  if (job.semver) {
    const range = job.semver;
    tags = tags.filter((t) => {
      const v = tagVersion(t);
      return v !== undefined && semver.satisfies(v, range, { includePrerelease: false });
    });
  }
  // Each tag read as a version once, not once per comparison (a sort of 10,000 tags compares 130,000 times).
  const versions = new Map<string, semver.SemVer | undefined>();
  const versionOf = (t: string) => {
    if (!versions.has(t)) versions.set(t, tagVersion(t));
    return versions.get(t);
  };
  const bySemver = (a: string, b: string) => {
    const va = versionOf(a);
    const vb = versionOf(b);
    if (va && vb) return semver.compare(vb, va) || (a < b ? -1 : 1);
    if (va) return -1;
    if (vb) return 1;
    return a < b ? -1 : a > b ? 1 : 0;
  };
  if (job.newest)
    tags = tags
      .filter((t) => versionOf(t))
      .sort(bySemver)
      .slice(0, job.newest);
  return tags.sort(bySemver);
}
