/**
 * Waits for a condition the test cannot be told of (a delivery arriving, a job ending on another
 * replica): `fn` is asked every `everyMs` until it gives a value (not undefined, not false), or the
 * wait fails after `ms` naming `what`.
 */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  ms = 90_000,
  everyMs = 50,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
