/**
 * One error tree for the whole engine. Every error has a stable `code`; the CLI maps codes to exit
 * codes and the API (later) maps them to HTTP statuses, each in one place.
 * Messages name the thing that failed and say what to do. They never contain secrets.
 */
export const ERROR_CODES = {
  INVALID_REFERENCE: { exit: 2, http: 400 },
  INVALID_ARGUMENT: { exit: 2, http: 400 },
  INVALID_CONFIG: { exit: 2, http: 500 },
  BLOCKED: { exit: 3, http: 403 },
  UNAUTHORIZED: { exit: 4, http: 401 },
  DENIED: { exit: 4, http: 403 },
  /** The trust policy (policy.json) refuses the image. */
  POLICY_REJECTED: { exit: 14, http: 403 },
  NOT_FOUND: { exit: 5, http: 404 },
  PLATFORM_NOT_FOUND: { exit: 5, http: 404 },
  UNSUPPORTED: { exit: 6, http: 415 },
  INVALID_MANIFEST: { exit: 6, http: 502 },
  INVALID_ARCHIVE: { exit: 6, http: 422 },
  TOO_LARGE: { exit: 6, http: 413 },
  DIGEST_MISMATCH: { exit: 7, http: 502 },
  NETWORK: { exit: 8, http: 502 },
  TLS: { exit: 8, http: 502 },
  REGISTRY: { exit: 8, http: 502 },
  IO: { exit: 9, http: 500 },
  RATE_LIMITED: { exit: 8, http: 429 },
  UNAVAILABLE: { exit: 8, http: 503 },
  ABORTED: { exit: 130, http: 499 },
  INTERNAL: { exit: 1, http: 500 },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Exit codes of outcomes that are not one error: a run in which some parts failed, and what verify
 * found. With ERROR_CODES, every exit code stowage uses (the README's table is this).
 */
export const OUTCOME_EXIT = {
  /** A sync in which some job or tag failed (the others still ran). */
  syncPartial: 13,
  /** verify: the archive's sha256 does not match, or is required and absent. */
  verifyChecksum: 10,
  /** verify: a blob or manifest is missing or damaged. */
  verifyBlob: 11,
  /** verify: manifests, configs and layers disagree. */
  verifyConsistency: 12,
} as const;

export class StowageError extends Error {
  readonly code: ErrorCode;
  /** A transient failure (connection, 5xx, 429): trying the operation again may succeed. */
  readonly retryable: boolean;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryable?: boolean }) {
    super(message, options);
    this.name = 'StowageError';
    this.code = code;
    this.retryable = options?.retryable ?? false;
  }
  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }
  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }
}

export function isStowageError(e: unknown): e is StowageError {
  return e instanceof StowageError;
}

/** Whether a failure (or what caused it) is a full disk or a quota reached. */
export function isNoSpace(e: unknown): boolean {
  for (
    let c = e as { code?: unknown; cause?: unknown } | undefined, i = 0;
    c && i < 5;
    c = c.cause as typeof c, i++
  ) {
    if (c.code === 'ENOSPC' || c.code === 'EDQUOT') return true;
  }
  return false;
}

/** Wraps anything thrown into a StowageError, keeping the original as the cause. */
export function toStowageError(e: unknown): StowageError {
  if (e instanceof StowageError) return e;
  if (e instanceof Error && e.name === 'AbortError') return new StowageError('ABORTED', 'operation aborted');
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && typeof err.syscall === 'string') {
    const where = err.path ? ` ${err.path}` : '';
    // A full disk is the user's to act on, not an internal error (it was exit 1); say so plainly.
    if (err.code === 'ENOSPC' || err.code === 'EDQUOT') {
      return new StowageError(
        'IO',
        `no space left on the device (${err.code === 'EDQUOT' ? 'disk quota exceeded' : 'the file system is full'}) while writing${where || ' the output'}; free some space or write elsewhere, then run again`,
        { cause: e },
      );
    }
    if (err.path) return new StowageError('IO', `${err.syscall}${where}: ${err.message}`, { cause: e });
    if (err.code === 'EIO' || err.code === 'EROFS' || err.code === 'EACCES' || err.code === 'EPERM')
      return new StowageError('IO', `${err.syscall}: ${err.message}`, { cause: e });
  }
  return new StowageError('INTERNAL', e instanceof Error ? e.message : String(e), { cause: e });
}
