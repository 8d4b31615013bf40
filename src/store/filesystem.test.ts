import { mkdtemp, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseStowageConfig } from '../config/stowage.js';
import { StowageError } from '../errors.js';
import { networkFilesystem, refuseNetworkFilesystem } from './filesystem.js';

// No test machine mounts NFS or SMB: those answers come from a statfs of the test's own.
const on = (type: number) => async () => ({ type });

describe('the local store on a network filesystem', () => {
  it('knows network filesystems from local ones by their statfs type', () => {
    expect(networkFilesystem(0x6969)).toBe('NFS');
    expect(networkFilesystem(0xfe534d42)).toBe('SMB2');
    expect(networkFilesystem(0x00c36400)).toBe('CephFS');
    // ext4, xfs, btrfs, tmpfs, overlayfs and FUSE (fuse-overlayfs in rootless containers) are not.
    for (const local of [0xef53, 0x58465342, 0x9123683e, 0x01021994, 0x794c7630, 0x65735546]) {
      expect(networkFilesystem(local)).toBeUndefined();
    }
  });

  it('is refused with the filesystem named and the ways out, unless it is one host’s', async () => {
    const err = await refuseNetworkFilesystem('/srv/stowage', { statfs: on(0x6969) }).catch((e) => e);
    expect(err).toBeInstanceOf(StowageError);
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain('on NFS');
    expect(err.message).toContain('[store.s3]');
    expect(err.message).toContain('network-filesystem = "one-host"');
    await expect(refuseNetworkFilesystem('/srv/stowage', { statfs: on(0x6969), allow: true })).resolves.toBe(
      undefined,
    );
  });

  it('accepts this machine’s own temporary directory, as statfs really reports it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stowage-fs-'));
    try {
      expect(networkFilesystem((await statfs(dir)).type)).toBeUndefined();
      await expect(refuseNetworkFilesystem(dir)).resolves.toBe(undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads [store] network-filesystem from stowage.toml', () => {
    const env = { HOME: '/home/u' };
    expect(
      parseStowageConfig('[store]\nnetwork-filesystem = "one-host"\n', 's.toml', env)
        .networkFilesystemOneHost,
    ).toBe(true);
    expect(parseStowageConfig('', 's.toml', env).networkFilesystemOneHost).toBe(false);
    expect(() => parseStowageConfig('[store]\nnetwork-filesystem = "yes"\n', 's.toml', env)).toThrow(
      /network-filesystem/,
    );
  });
});
