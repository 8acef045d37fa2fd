// Typed errors of the client. Every failure a caller can act on carries the sidecar's error
// `code` (docs/sidecar.md "Error codes"), so code branches on `err.code`, never on message text.

/** Codes the sidecar answers with (docs/sidecar.md "Error codes"), plus `UNAVAILABLE`. */
export const ErrorCode = Object.freeze({
  INVALID_OPERATION: 'INVALID_OPERATION',
  UNAUTHORIZED: 'UNAUTHORIZED',
  NOT_FOUND: 'NOT_FOUND',
  ID_CONFLICT: 'ID_CONFLICT',
  REFUSED: 'REFUSED',
  COMPACTED: 'COMPACTED',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  NOT_LEADER: 'NOT_LEADER',
  INTERNAL: 'INTERNAL',
  NO_LEADER: 'NO_LEADER',
  NO_QUORUM: 'NO_QUORUM',
  NOT_INITIALIZED: 'NOT_INITIALIZED',
  SHUTTING_DOWN: 'SHUTTING_DOWN',
  TIMEOUT: 'TIMEOUT',
  // Overload: nothing was proposed; retry after `retryAfterMs` with the same id.
  BUSY: 'BUSY',
  // Client-side: the sidecar could not be reached, or the connection broke or timed out before
  // an answer. Like TIMEOUT, the outcome of a submit is unknown, so a same-id retry is safe.
  UNAVAILABLE: 'UNAVAILABLE',
});

/**
 * An error answered by the sidecar (`{"error": {code, message, …}}`), or `UNAVAILABLE` when
 * no answer came. Fields mirror the wire body; absent ones are `undefined`.
 */
export class SidecarError extends Error {
  /**
   * @param {object} detail
   * @param {string} detail.code
   * @param {string} detail.message
   * @param {number} [detail.status] HTTP status (absent for UNAVAILABLE)
   * @param {string} [detail.leaderId]
   * @param {string} [detail.leaderAdminAddr]
   * @param {number} [detail.retryAfterMs]
   * @param {number} [detail.firstIndex]
   * @param {unknown} [detail.cause]
   */
  constructor({ code, message, status, leaderId, leaderAdminAddr, retryAfterMs, firstIndex, cause }) {
    super(`${code}: ${message}`, cause === undefined ? undefined : { cause });
    this.name = 'SidecarError';
    this.code = code;
    this.status = status;
    this.leaderId = leaderId;
    this.leaderAdminAddr = leaderAdminAddr;
    this.retryAfterMs = retryAfterMs;
    this.firstIndex = firstIndex;
    /** @type {number | undefined} attempts replicateOperation() made before giving up with this */
    this.attempts = undefined;
  }

  /** Build the right subclass from an error body's `error` object. */
  static fromBody(status, detail) {
    const fields = { ...detail, status };
    if (detail.code === ErrorCode.COMPACTED) return new CompactedError(fields);
    return new SidecarError(fields);
  }
}

/**
 * The journal no longer holds the asked-for index (410 `COMPACTED`): the daemon must
 * resynchronise its own state and resume from `firstIndex`.
 */
export class CompactedError extends SidecarError {
  constructor(fields) {
    super({ ...fields, code: ErrorCode.COMPACTED });
    this.name = 'CompactedError';
  }
}

/** The sidecar did not answer: refused connection, dropped connection or client-side timeout. */
export class SidecarUnavailableError extends SidecarError {
  constructor(message, cause) {
    super({ code: ErrorCode.UNAVAILABLE, message, cause });
    this.name = 'SidecarUnavailableError';
  }
}
