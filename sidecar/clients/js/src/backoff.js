// Bounded exponential backoff with jitter, shared by submit retries and stream reconnects.
// The sidecar's `retryAfterMs` hint is honoured as a floor, but never beyond `maxDelayMs`.

/**
 * @typedef {object} BackoffPolicy
 * @property {number} baseDelayMs first delay before jitter
 * @property {number} maxDelayMs cap on any single delay, hints included
 */

/**
 * Delay before attempt `attempt + 1`, after `attempt` (≥ 1) failures.
 * Equal jitter: half the exponential step is fixed, half random, so concurrent clients spread
 * out while the delay still grows.
 * @param {BackoffPolicy} policy
 * @param {number} attempt
 * @param {number} [retryAfterMs] the sidecar's hint
 * @param {() => number} [random]
 */
export function backoffDelay(policy, attempt, retryAfterMs, random = Math.random) {
  const step = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  const jittered = step / 2 + random() * (step / 2);
  const floor = Number.isFinite(retryAfterMs) ? retryAfterMs : 0;
  return Math.round(Math.min(policy.maxDelayMs, Math.max(jittered, floor)));
}

/**
 * Wait `ms`, or reject with the signal's reason as soon as it aborts.
 * @param {number} ms
 * @param {AbortSignal} [signal]
 */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
