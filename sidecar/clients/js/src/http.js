// One JSON request to a sidecar, with a deadline. Every failure becomes a SidecarError so
// callers (retry, journal, admin) classify outcomes by `code` alone.

import { SidecarError, SidecarUnavailableError } from './errors.js';

/**
 * @param {object} req
 * @param {string} req.url
 * @param {string} [req.method]
 * @param {unknown} [req.body] serialised as JSON
 * @param {Record<string,string>} [req.headers]
 * @param {number} req.timeoutMs the request is aborted (UNAVAILABLE) after this long
 * @param {AbortSignal} [req.signal] caller cancellation (rejects with the signal's reason)
 * @returns {Promise<any>} the parsed JSON answer of a 2xx response
 */
export async function requestJson({ url, method = 'GET', body, headers = {}, timeoutMs, signal }) {
  const timeout = AbortSignal.timeout(timeoutMs);
  const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
  const init = { method, headers: { accept: 'application/json', ...headers }, signal: combined };
  if (body !== undefined) {
    // A string body gets a Content-Length; the sidecar refuses chunked request bodies.
    init.body = JSON.stringify(body);
    init.headers['content-type'] = 'application/json';
  }
  let response;
  let text;
  try {
    response = await fetch(url, init);
    text = await response.text();
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    const why = timeout.aborted ? `no answer within ${timeoutMs} ms` : describe(err);
    throw new SidecarUnavailableError(`${method} ${url}: ${why}`, err);
  }
  return parseAnswer(response, text, `${method} ${url}`);
}

/** Turn a response into its JSON value, or throw the SidecarError its error body describes. */
export function parseAnswer(response, text, what) {
  let json;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (response.ok) {
    if (json === undefined) {
      throw new SidecarError({ code: 'INTERNAL', status: response.status, message: `${what}: answer is not JSON` });
    }
    return json;
  }
  if (json && typeof json.error === 'object' && typeof json.error.code === 'string') {
    throw SidecarError.fromBody(response.status, json.error);
  }
  throw new SidecarError({
    code: 'INTERNAL',
    status: response.status,
    message: `${what}: HTTP ${response.status} without an error body: ${text.slice(0, 200)}`,
  });
}

/** Undici hides the useful part (ECONNREFUSED, ECONNRESET) in `cause`. */
export function describe(err) {
  const cause = err?.cause;
  if (cause?.code) return `${cause.code}${cause.message ? ` (${cause.message})` : ''}`;
  return err?.message ?? String(err);
}
