// The sidecar's consensus events (`GET /v1/events`), kept flowing across reconnects.
// The sidecar does not replay events a subscriber missed while disconnected, so after a
// reconnect the caller is told (`onConnect(reconnected=true)`) and can resynchronise from
// `/v1/state`.

import { backoffDelay, sleep } from './backoff.js';
import { openEventStream } from './stream.js';

/**
 * @typedef {object} EventFeedOptions
 * @property {string} endpoint
 * @property {import('./backoff.js').BackoffPolicy} reconnect
 * @property {number} connectTimeoutMs
 * @property {number} idleTimeoutMs
 * @property {(name: string, data: unknown) => void} onEvent
 * @property {(reconnected: boolean) => void} onConnect the subscription exists on the sidecar
 * @property {(error: Error | undefined, delayMs: number) => void} onDisconnect
 */

/** A running subscription; `ready` settles when the first connection is up. */
export class EventFeed {
  #opts;
  #controller = new AbortController();
  /** @type {Promise<void>} */
  ready;
  /** @type {Promise<void>} */
  done;

  /** @param {EventFeedOptions} opts */
  constructor(opts) {
    this.#opts = opts;
    let resolveReady;
    this.ready = new Promise((resolve) => {
      resolveReady = resolve;
    });
    this.done = this.#run(resolveReady);
  }

  /** Stop and close the connection. */
  close() {
    this.#controller.abort();
  }

  async #run(resolveReady) {
    const o = this.#opts;
    const signal = this.#controller.signal;
    let connected = false;
    let failures = 0;
    while (!signal.aborted) {
      let error;
      try {
        const stream = await openEventStream({
          url: `${o.endpoint}/v1/events`,
          connectTimeoutMs: o.connectTimeoutMs,
          idleTimeoutMs: o.idleTimeoutMs,
          signal,
        });
        failures = 0;
        o.onConnect(connected);
        if (!connected) resolveReady();
        connected = true;
        try {
          for await (const ev of stream.events) {
            o.onEvent(ev.event, parseData(ev.data));
          }
        } finally {
          stream.close();
        }
      } catch (err) {
        error = err;
      }
      if (signal.aborted) break;
      failures += 1;
      const delayMs = backoffDelay(o.reconnect, failures, error?.retryAfterMs);
      o.onDisconnect(error, delayMs);
      try {
        await sleep(delayMs, signal);
      } catch {
        break;
      }
    }
    resolveReady();
  }
}

function parseData(data) {
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}
