// One connection to an SSE endpoint of the sidecar. Reconnecting is the caller's job (journal
// and events resume differently); this module only opens, watches for silence, and closes.

import { SidecarUnavailableError } from './errors.js';
import { describe, parseAnswer } from './http.js';
import { parseSse } from './sse.js';

/**
 * @typedef {object} OpenStream
 * @property {AsyncGenerator<import('./sse.js').SseEvent>} events ends when the connection ends
 * @property {() => void} close drop the connection now
 */

/**
 * Open `url` as an event stream. Resolves once the sidecar answered with a 2xx and headers,
 * i.e. once the subscription exists on the sidecar. A non-2xx answer rejects with the
 * SidecarError of its body (e.g. 410 COMPACTED); no answer rejects with UNAVAILABLE.
 * @param {object} opts
 * @param {string} opts.url
 * @param {Record<string,string>} [opts.headers]
 * @param {number} opts.connectTimeoutMs deadline for the answer's headers
 * @param {number} opts.idleTimeoutMs the sidecar sends a keep-alive every 15 s; silence longer
 *   than this means a dead connection, which is dropped so the caller reconnects
 * @param {AbortSignal} [opts.signal]
 * @returns {Promise<OpenStream>}
 */
export async function openEventStream({ url, headers = {}, connectTimeoutMs, idleTimeoutMs, signal }) {
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const connectTimer = setTimeout(() => controller.abort(new Error('connect timeout')), connectTimeoutMs);
  const release = () => {
    clearTimeout(connectTimer);
    signal?.removeEventListener('abort', onAbort);
  };

  let response;
  try {
    response = await fetch(url, {
      headers: { accept: 'text/event-stream', ...headers },
      signal: controller.signal,
    });
  } catch (err) {
    release();
    if (signal?.aborted) throw signal.reason;
    const why = controller.signal.aborted ? `no answer within ${connectTimeoutMs} ms` : describe(err);
    throw new SidecarUnavailableError(`GET ${url}: ${why}`, err);
  }
  clearTimeout(connectTimer);
  if (!response.ok) {
    release();
    const text = await response.text().catch(() => '');
    parseAnswer(response, text, `GET ${url}`); // throws the body's error
  }

  let idleTimer;
  const touch = () => {
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => controller.abort(new Error('idle timeout')), idleTimeoutMs);
  };
  touch();
  const close = () => {
    clearTimeout(idleTimer);
    release();
    controller.abort();
  };

  async function* events() {
    try {
      yield* parseSse(response.body, touch);
    } catch (err) {
      // A dropped connection ends the stream like a clean close: callers reconnect either way,
      // and the caller's own abort is reported by its signal, not by an error here.
      if (!controller.signal.aborted && !isConnectionError(err)) throw err;
    } finally {
      close();
    }
  }

  return { events: events(), close };
}

function isConnectionError(err) {
  return err?.name === 'TypeError' || err?.name === 'AbortError' || typeof err?.code === 'string';
}
