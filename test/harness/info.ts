import type {} from 'vitest';
import type { FixtureSet } from './fixtures.js';
import type { RegistryMode, RunningRegistry } from './registry.js';

export interface HarnessInfo {
  dir: string;
  registries: Record<RegistryMode, RunningRegistry>;
  tokenServerUrl: string;
  /** Directory holding ca.crt for the TLS registry. */
  caDir: string;
  user: string;
  password: string;
  fixtures: FixtureSet;
}

declare module 'vitest' {
  export interface ProvidedContext {
    harness: HarnessInfo;
  }
}
