// The apply loop's source: committed operations in journal order, across reconnects.
// Contract (docs/sidecar.md "GET /v1/journal/watch?from=N"): SSE `id:` is the entry's logIndex,
// indices increase strictly, and the watch resumes after `Last-Event-ID`. The iterator remembers
// the last index it handed out and resumes right after it, so a reconnect never skips nor
// repeats an entry.

import { backoffDelay, sleep } from './backoff.js';
import { ErrorCode, SidecarError } from './errors.js';
import { openEventStream } from './stream.js';

// Codes after which watching again can succeed: the sidecar is electing, starting or restarting.
/** @type {Set<string>} */
const RECONNECTABLE = new Set([
  ErrorCode.UNAVAILABLE,
  ErrorCode.NO_LEADER,
  ErrorCode.NO_QUORUM,
  ErrorCode.NOT_INITIALIZED,
  ErrorCode.SHUTTING_DOWN,
  ErrorCode.TIMEOUT,
]);

/**
 * @typedef {object} JournalOptions
 * @property {string} endpoint daemon API base URL
 * @property {number} [from] first logIndex wanted (default: the oldest retained)
 * @property {AbortSignal} [signal] ends the iteration (without an error)
 * @property {import('./backoff.js').BackoffPolicy} reconnect
 * @property {number} connectTimeoutMs
 * @property {number} idleTimeoutMs
 * @property {(info: {attempt: number, delayMs: number, error?: Error, nextIndex: number}) => void} [onReconnect]
 */

/**
 * Committed operations from `from` on, live ones included; never ends on its own.
 * Throws CompactedError when `from` (or the resume point) is below the retained journal, and
 * SidecarError for errors reconnecting cannot fix (e.g. INTERNAL from a storage failure).
 * @param {JournalOptions} opts
 * @returns {AsyncGenerator<import('../index.js').JournalEntry>}
 */
export async function* watchJournal(opts) {
  const { endpoint, signal } = opts;
  /** @type {number | undefined} */
  let next = opts.from;
  let failures = 0;
  while (!signal?.aborted) {
    let stream;
    try {
      const query = next === undefined ? '' : `?from=${next}`;
      stream = await openEventStream({
        url: `${endpoint}/v1/journal/watch${query}`,
        // Last-Event-ID is the standard resume header; `from` says the same for proxies that
        // drop unknown headers. The sidecar gives the header precedence.
        headers: next !== undefined && next > 1 ? { 'last-event-id': String(next - 1) } : {},
        connectTimeoutMs: opts.connectTimeoutMs,
        idleTimeoutMs: opts.idleTimeoutMs,
        signal,
      });
    } catch (err) {
      if (signal?.aborted) return;
      if (!(err instanceof SidecarError) || !RECONNECTABLE.has(err.code)) throw err;
      failures += 1;
      const delayMs = backoffDelay(opts.reconnect, failures, err.retryAfterMs);
      opts.onReconnect?.({ attempt: failures, delayMs, error: err, nextIndex: next ?? 0 });
      if (!(await pause(delayMs, signal))) return;
      continue;
    }

    /** @type {SidecarError | undefined} */
    let ended;
    try {
      for await (const ev of stream.events) {
        if (ev.event === 'error') {
          const err = streamError(ev.data);
          // A node that is cut off or was removed ends its watches with a retryable code:
          // reconnect (with backoff) instead of ending the iteration.
          if (!RECONNECTABLE.has(err.code)) throw err;
          ended = err;
          break;
        }
        if (ev.event !== 'operation') continue;
        const entry = JSON.parse(ev.data);
        // Defensive: a resumed stream must start after what was delivered; never repeat.
        if (next !== undefined && entry.logIndex < next) continue;
        next = entry.logIndex + 1;
        failures = 0;
        yield entry;
        if (signal?.aborted) return;
      }
    } finally {
      // Runs on consumer `break`/`return` too, so the connection never outlives the loop.
      stream.close();
    }
    if (signal?.aborted) return;
    // The stream ended (sidecar restart, dropped connection, idle watchdog, or an error event
    // with a retryable code): resume.
    failures += 1;
    const delayMs = backoffDelay(opts.reconnect, failures, ended?.retryAfterMs);
    opts.onReconnect?.({ attempt: failures, delayMs, error: ended, nextIndex: next ?? 0 });
    if (!(await pause(delayMs, signal))) return;
  }
}

function streamError(data) {
  let detail;
  try {
    detail = JSON.parse(data).error;
  } catch {
    detail = undefined;
  }
  if (!detail || typeof detail.code !== 'string') {
    return new SidecarError({ code: ErrorCode.INTERNAL, message: `undecodable stream error: ${data}` });
  }
  // Same status as the HTTP answer the code maps to, so callers see one shape either way.
  return SidecarError.fromBody(detail.code === ErrorCode.COMPACTED ? 410 : 500, detail);
}

/** Sleep; false when the signal ended the wait. */
async function pause(ms, signal) {
  try {
    await sleep(ms, signal);
    return true;
  } catch {
    return false;
  }
}
