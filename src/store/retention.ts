/** Retention: which stored versions go. */

import { durationMs, type Retention } from '../config/stowage.js';
import type { StoredVersion } from './store.js';

/** The versions retention removes from a list (one repository's), newest of each tag always kept. */
export function retentionVictims(
  versions: StoredVersion[],
  rule: Retention,
  now = Date.now(),
): StoredVersion[] {
  if (!rule['keep-versions'] && !rule['keep-within']) return [];
  const byTag = new Map<string, StoredVersion[]>();
  for (const v of versions) {
    const key = `${v.repository}:${v.tag}`;
    const list = byTag.get(key);
    if (list) list.push(v);
    else byTag.set(key, [v]);
  }
  const victims: StoredVersion[] = [];
  for (const list of byTag.values()) {
    const newestFirst = [...list].reverse();
    newestFirst.forEach((v, rank) => {
      if (rank === 0) return;
      const byCount = rule['keep-versions'] !== undefined && rank < rule['keep-versions'];
      const byAge =
        rule['keep-within'] !== undefined && now - Date.parse(v.taken) < durationMs(rule['keep-within']);
      if (!byCount && !byAge) victims.push(v);
    });
  }
  return victims;
}
