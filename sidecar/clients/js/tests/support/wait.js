// Waiting on named conditions with deadlines: the only way tests synchronise with the cluster.

/**
 * Poll `probe` until it returns a value other than undefined/false, or fail after `withinMs`
 * naming `what` and the last thing seen.
 * @template T
 * @param {string} what the condition, for the failure message
 * @param {() => Promise<T | undefined | false> | T | undefined | false} probe
 * @param {{withinMs?: number, everyMs?: number}} [opts]
 * @returns {Promise<T>}
 */
export async function waitFor(what, probe, { withinMs = 15000, everyMs = 50 } = {}) {
  const deadline = Date.now() + withinMs;
  let last = 'nothing yet';
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      last = err?.message ?? String(err);
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${withinMs} ms waiting for ${what} (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/**
 * Resolve with the first `name` event of `emitter` whose data satisfies `accept`, or fail
 * after `withinMs`.
 */
export function nextEvent(emitter, name, { withinMs = 15000, accept = () => true } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(name, listener);
      reject(new Error(`timed out after ${withinMs} ms waiting for event ${name}`));
    }, withinMs);
    function listener(data) {
      if (!accept(data)) return;
      clearTimeout(timer);
      emitter.off(name, listener);
      resolve(data);
    }
    emitter.on(name, listener);
  });
}

/** `promise`, or a failure naming `what` if it has not settled within `withinMs`. */
export async function withDeadline(what, promise, { withinMs = 15000 } = {}) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${withinMs} ms waiting for ${what}`)), withinMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
