/**
 * Jobs whose source names many repositories (`HOST/team/**`): the registry's catalog, matched by the
 * pattern and the job's `repositories` filters, gives one job per repository, each with the tags,
 * mirror and retention of the job it came from. The catalog is read once per job per run.
 */
import type { JobConfig, StowageConfig } from '../config/stowage.js';
import { isRepositoryPattern, mirrorFor, parseRepositoryPattern } from '../reference/pattern.js';
import { parseRepository } from '../reference/reference.js';
import type { Context } from '../registry/context.js';

export { isRepositoryPattern };

/** The repositories a pattern job takes, each as a job of its own (sorted by name). */
export async function expandPattern(
  ctx: Context,
  config: Pick<StowageConfig, 'limits'>,
  job: JobConfig,
  signal?: AbortSignal,
): Promise<JobConfig[]> {
  const pattern = parseRepositoryPattern(job.source);
  // The catalog is the registry's, asked of the endpoint the pattern's prefix resolves to.
  const { client } = await ctx.client(parseRepository(`${pattern.host}/${pattern.prefix || 'catalog'}`));
  const listed = await client.listRepositories({
    pageSize: config.limits[pattern.host]?.['catalog-page-size'],
    signal,
  });
  const include = job.repositories?.include?.map((r) => new RegExp(r));
  const exclude = job.repositories?.exclude?.map((r) => new RegExp(r));
  const chosen = listed
    .filter(
      (path) =>
        pattern.matches(path) &&
        (!include?.length || include.some((r) => r.test(path))) &&
        !exclude?.some((r) => r.test(path)),
    )
    .sort();
  return chosen.map((path) => {
    const { repositories: _, ...rest } = job;
    return {
      ...rest,
      source: `${pattern.host}/${path}`,
      ...(job.mirror ? { mirror: mirrorFor(job.mirror, pattern, path) } : {}),
    };
  });
}
