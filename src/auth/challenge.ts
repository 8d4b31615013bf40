/** WWW-Authenticate parsing (RFC 7235): scheme followed by auth-params, quoted or token values. */
export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (!header) return [];
  const values = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const value of values) {
    let i = 0;
    let current: Challenge | undefined;
    const s = value;
    while (i < s.length) {
      while (i < s.length && (s[i] === ' ' || s[i] === ',')) i++;
      const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)/.exec(s.slice(i));
      if (!m) break;
      const token = m[1]!;
      i += token.length;
      let j = i;
      while (j < s.length && s[j] === ' ') j++;
      if (s[j] === '=' && current) {
        i = j + 1;
        while (i < s.length && s[i] === ' ') i++;
        let val = '';
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === '\\' && i + 1 < s.length) i++;
            val += s[i];
            i++;
          }
          i++;
        } else {
          const vm = /^[^,\s]*/.exec(s.slice(i))!;
          val = vm[0];
          i += val.length;
        }
        current.params[token.toLowerCase()] = val;
      } else {
        current = { scheme: token.toLowerCase(), params: {} };
        out.push(current);
      }
    }
  }
  return out;
}
