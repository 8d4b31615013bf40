/**
 * Opens the archive store the configuration names: the local OCI layout at its path (the default), or
 * with [store.s3] and [server] database the replicated store, blobs in the bucket and the version index
 * in PostgreSQL. Callers close what they open (the replicated store holds database connections).
 * The replicated store's modules load only when it is asked for.
 */
import { hostname } from 'node:os';
import { databasePassword, replicaName, s3Credentials } from '../config/replicas.js';
import type { StowageConfig } from '../config/stowage.js';
import { needPackages, S3_STORE_PACKAGES } from '../core/optional.js';
import { StowageError } from '../errors.js';
import type { ArchiveStore } from './archive-store.js';
import { Store } from './store.js';

export async function openStore(
  config: StowageConfig,
  opts: {
    sweep?: boolean;
    create?: boolean;
    env?: NodeJS.ProcessEnv;
    /** This replica's name on the blob leases it takes (default: host name and pid). */
    replica?: string | undefined;
  } = {},
): Promise<ArchiveStore> {
  const s3 = config.s3;
  if (!s3)
    return Store.open(config.storePath, {
      ...opts,
      networkFilesystemOneHost: config.networkFilesystemOneHost,
    });
  const env = opts.env ?? process.env;
  const database = config.server.database;
  if (!database) throw new StowageError('INVALID_CONFIG', '[store.s3] needs [server] database');
  const password = await databasePassword(config.server, env);
  // Loaded only here: the S3 and PostgreSQL clients (and node:http2 with them) cost every other
  // command its start-up time, and are optional packages.
  needPackages(S3_STORE_PACKAGES, 'the S3 store ([store.s3])');
  const [{ S3Blobs }, { PgVersionIndex }, { ReplicatedStore }, { BlobLeases }] = await Promise.all([
    import('./s3-blobs.js'),
    import('./pg-index.js'),
    import('./replicated.js'),
    import('./blob-leases.js'),
  ]);
  const blobs = new S3Blobs({
    endpoint: s3.endpoint,
    bucket: s3.bucket,
    prefix: s3.prefix ?? '',
    region: s3.region ?? 'us-east-1',
    pathStyle: s3['path-style'] ?? true,
    credentials: await s3Credentials(s3, env),
  });
  try {
    // The index of this bucket and prefix: one database can serve several stores.
    const index = await PgVersionIndex.open(database, { password, store: blobs.description });
    const replica = opts.replica ?? replicaName(env, hostname(), process.pid);
    const leases = new BlobLeases(
      index.connections,
      blobs.description,
      replica,
      `blob leases at ${index.description}`,
    );
    const { PgBundleHistory } = await import('./pg-bundles.js');
    const bundles = new PgBundleHistory(index.connections, index.description, blobs.description);
    return new ReplicatedStore(blobs, index, { leases, bundles });
  } catch (e) {
    blobs.close();
    throw e;
  }
}
