import { StowageError } from '../errors.js';
import type { Descriptor, Platform } from './schemas.js';

export interface PlatformSpec {
  os: string;
  architecture: string;
  variant?: string | undefined;
}

const ARCH: Record<string, string> = {
  x64: 'amd64',
  ia32: '386',
  arm64: 'arm64',
  arm: 'arm',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
};

/** The platform images are chosen for by default: linux on the host's architecture. */
export function hostPlatform(): PlatformSpec {
  const architecture = ARCH[process.arch] ?? process.arch;
  let variant: string | undefined;
  if (architecture === 'arm64') variant = 'v8';
  if (architecture === 'arm') {
    const v = (process.config.variables as Record<string, unknown>).arm_version;
    variant = `v${v ?? 7}`;
  }
  return { os: 'linux', architecture, variant };
}

/** Parses os/arch[/variant], as podman --platform takes it. */
export function parsePlatform(s: string): PlatformSpec {
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/i.test(p))) {
    throw new StowageError(
      'INVALID_ARGUMENT',
      `invalid platform "${s}": use os/arch[/variant], e.g. linux/arm64`,
    );
  }
  const [os, arch, variant] = parts as [string, string, string | undefined];
  return normalizePlatform({ os: os.toLowerCase(), architecture: arch.toLowerCase(), variant });
}

export function normalizePlatform(p: PlatformSpec): PlatformSpec {
  let { architecture, variant } = p;
  if (architecture === 'x86_64' || architecture === 'x86-64') architecture = 'amd64';
  if (architecture === 'aarch64') architecture = 'arm64';
  if (architecture === 'arm64' && !variant) variant = 'v8';
  if (architecture === 'arm' && !variant) variant = 'v7';
  return { os: p.os, architecture, variant };
}

export function formatPlatform(p: PlatformSpec | Platform | undefined): string {
  if (!p) return 'unknown';
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

export function platformMatches(want: PlatformSpec, have: Platform | undefined): boolean {
  if (!have) return false;
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  return w.os === h.os && w.architecture === h.architecture && (w.variant ?? '') === (h.variant ?? '');
}

/** Picks the manifest for a platform from an index, as containerd and podman do. */
export function selectPlatform(manifests: Descriptor[], want: PlatformSpec, what: string): Descriptor {
  const found = manifests.find((m) => platformMatches(want, m.platform));
  if (found) return found;
  const available = manifests
    .filter((m) => m.platform && m.platform.architecture !== 'unknown')
    .map((m) => formatPlatform(m.platform));
  throw new StowageError(
    'PLATFORM_NOT_FOUND',
    `${what} has no image for ${formatPlatform(want)}; available: ${available.join(', ') || 'none'}; choose one with --platform or take them all with --all`,
  );
}
