import { OUTCOME_EXIT } from '../errors.js';
import type { VerifyReport } from './verify.js';

/** Exit codes of `stowage verify`, by the most telling problem found (light: the CLI's help shows them). */
export const VERIFY_EXIT = {
  ok: 0,
  checksum: OUTCOME_EXIT.verifyChecksum,
  blob: OUTCOME_EXIT.verifyBlob,
  consistency: OUTCOME_EXIT.verifyConsistency,
} as const;

export function verifyExitCode(report: VerifyReport): number {
  const kinds = new Set(report.problems.map((p) => p.kind));
  // A damaged blob also changes the file's checksum; the blob is the news.
  if (kinds.has('blob')) return VERIFY_EXIT.blob;
  if (kinds.has('consistency')) return VERIFY_EXIT.consistency;
  if (kinds.has('checksum')) return VERIFY_EXIT.checksum;
  return VERIFY_EXIT.ok;
}
