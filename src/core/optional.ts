/**
 * Packages only some deployments need (the S3 and PostgreSQL clients and pg-boss for replicas, the OS
 * keyring addon) are optional: `npm install` of stowage alone does not bring them. Where one is asked
 * for and missing, the error says which to install, before anything is opened.
 */
import { createRequire } from 'node:module';
import { StowageError } from '../errors.js';

/** Of these packages, those this installation cannot load. */
export function missingPackages(packages: readonly string[], from: string = import.meta.url): string[] {
  const require = createRequire(from);
  return packages.filter((p) => {
    try {
      require.resolve(p);
      return false;
    } catch (e) {
      // An ESM-only package without a require entry is there all the same.
      return (e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND';
    }
  });
}

/** Throws, naming them and the command that installs them, unless every package is installed. */
export function needPackages(packages: readonly string[], forWhat: string, from?: string): void {
  const missing = missingPackages(packages, from);
  if (missing.length === 0) return;
  throw new StowageError(
    'INVALID_CONFIG',
    `${forWhat} needs ${missing.join(', ')}, which this installation of stowage lacks (optional packages, for that use only): npm install ${missing.join(' ')}`,
  );
}

/** What replicas need, by part. */
export const S3_STORE_PACKAGES = ['@aws-sdk/client-s3', '@aws-sdk/lib-storage', 'pg'] as const;
export const PG_JOBS_PACKAGES = ['pg', 'pg-boss'] as const;
