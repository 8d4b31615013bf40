/**
 * The local store's lock is a file holding its owner's pid, judged stale when that process is gone:
 * sound on one host, meaningless across hosts, where another host's pid looks dead here. So the local
 * store refuses a directory on a network filesystem (two hosts mounting it would each take the other's
 * lock for stale and write the index together), unless told the mount has one writer host. Replicas on
 * several hosts use the S3 store, whose locks live in PostgreSQL.
 */
import { statfs } from 'node:fs/promises';
import { StowageError } from '../errors.js';

/** statfs f_type magic numbers of network and cluster filesystems (linux/magic.h and the filesystems'). */
const NETWORK_FILESYSTEMS = new Map<number, string>([
  [0x6969, 'NFS'],
  [0x517b, 'SMB'],
  [0xff534d42, 'CIFS'],
  [0xfe534d42, 'SMB2'],
  [0x00c36400, 'CephFS'],
  [0x01021997, '9P'],
  [0x5346414f, 'AFS'],
  [0x6b414653, 'AFS'],
  [0x0bd00bd0, 'Lustre'],
  [0x47504653, 'GPFS'],
  [0x7461636f, 'OCFS2'],
  [0x01161970, 'GFS2'],
]);

/** The network filesystem a statfs type names, if it is one. */
export function networkFilesystem(type: number): string | undefined {
  return NETWORK_FILESYSTEMS.get(type);
}

/** Refuses a store directory on a network filesystem (see the top), naming the filesystem and the ways out. */
export async function refuseNetworkFilesystem(
  path: string,
  opts: { allow?: boolean | undefined; statfs?: (path: string) => Promise<{ type: number }> } = {},
): Promise<void> {
  if (opts.allow) return;
  const info = await (opts.statfs ?? statfs)(path).catch(() => undefined);
  const fs = info && networkFilesystem(info.type);
  if (!fs) return;
  throw new StowageError(
    'INVALID_CONFIG',
    `the store ${path} is on ${fs}, a network filesystem: the local store's lock cannot keep two hosts apart there. Put the store on a local disk, use [store.s3] and [server] database for several hosts, or set [store] network-filesystem = "one-host" if only this host ever writes it`,
  );
}
