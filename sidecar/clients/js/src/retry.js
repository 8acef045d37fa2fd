// Retrying a submit. Safe only because the operation id travels unchanged: the sidecar
// deduplicates inside the replicated state machine (docs/sidecar.md "Exactly once"), so a retry
// of an operation that did commit is answered as a duplicate, never executed twice.

import { backoffDelay, sleep } from './backoff.js';
import { ErrorCode, SidecarError } from './errors.js';

/**
 * Codes retried by default: the four the sidecar uses for "no decision yet" (TIMEOUT: outcome
 * unknown; NO_LEADER, NO_QUORUM: election or partition; BUSY: overload, after its
 * `retryAfterMs`), plus UNAVAILABLE, the client's code for a sidecar that did not answer
 * (restarting container, dropped connection): also unknown.
 */
export const DEFAULT_RETRY_CODES = Object.freeze([
  ErrorCode.TIMEOUT,
  ErrorCode.NO_LEADER,
  ErrorCode.NO_QUORUM,
  ErrorCode.BUSY,
  ErrorCode.UNAVAILABLE,
]);

/**
 * @typedef {object} RetryPolicy
 * @property {number} maxAttempts attempts in all, the first included
 * @property {number} baseDelayMs
 * @property {number} maxDelayMs
 * @property {number} deadlineMs no new attempt starts after this long since the first
 * @property {readonly string[]} codes
 */

/** @type {RetryPolicy} */
export const DEFAULT_RETRY = Object.freeze({
  maxAttempts: 20,
  baseDelayMs: 50,
  maxDelayMs: 2000,
  deadlineMs: 30000,
  codes: DEFAULT_RETRY_CODES,
});

/**
 * Run `attempt` until it succeeds, fails with a code outside `policy.codes`, or the policy is
 * exhausted; then the last error is thrown, with `attempts` set on it.
 * @template T
 * @param {(attempt: number) => Promise<T>} attempt
 * @param {RetryPolicy} policy
 * @param {object} [hooks]
 * @param {AbortSignal} [hooks.signal]
 * @param {(info: {attempt: number, code: string, delayMs: number, error: SidecarError}) => void} [hooks.onRetry]
 * @returns {Promise<T>}
 */
export async function withRetry(attempt, policy, { signal, onRetry } = {}) {
  const started = Date.now();
  for (let n = 1; ; n++) {
    try {
      return await attempt(n);
    } catch (err) {
      if (!(err instanceof SidecarError) || !policy.codes.includes(err.code)) {
        if (err instanceof SidecarError) err.attempts = n;
        throw err;
      }
      const delayMs = backoffDelay(policy, n, err.retryAfterMs);
      const outOfTime = Date.now() - started + delayMs > policy.deadlineMs;
      if (n >= policy.maxAttempts || outOfTime) {
        err.attempts = n;
        throw err;
      }
      onRetry?.({ attempt: n, code: err.code, delayMs, error: err });
      await sleep(delayMs, signal);
    }
  }
}
