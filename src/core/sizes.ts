/**
 * Sizes as people write them, one grammar for stowage.toml and the command line: a number (decimals
 * allowed) and a unit, binary (KiB, MiB, GiB, TiB) or decimal (KB, MB, GB, TB), B or none for bytes,
 * in any case.
 */
const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
};

/** The number of bytes `text` says, or undefined when it is not a size. */
export function byteSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  return m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : undefined;
}
