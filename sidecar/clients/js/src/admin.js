// The admin API calls a daemon may make outside Kubernetes (inside, the operator owns
// membership). Membership calls must reach the leader: a follower answers 421 NOT_LEADER with
// the leader's admin address and does not forward, so this client follows that hint.

import { readFileSync } from 'node:fs';

import { backoffDelay, sleep } from './backoff.js';
import { baseUrl } from './endpoint.js';
import { ErrorCode, SidecarError } from './errors.js';
import { requestJson } from './http.js';

/**
 * @typedef {object} AdminOptions
 * @property {string} address admin address of any member (`host:port` or URL)
 * @property {string} [token] the cluster token
 * @property {string} [tokenFile] file holding the token (read at each call: rotation-friendly)
 */

// Membership calls answer within 15 s server-side (then 504 TIMEOUT), so allow a little more.
const MEMBERSHIP_TIMEOUT_MS = 20000;
const MAX_HOPS = 3;

export class AdminClient {
  #address;
  #token;
  #tokenFile;

  /** @param {AdminOptions} opts */
  constructor({ address, token, tokenFile }) {
    if (!address) throw new TypeError('admin.address is required');
    if (!token && !tokenFile) throw new TypeError('admin.token or admin.tokenFile is required');
    this.#address = baseUrl(address);
    this.#token = token;
    this.#tokenFile = tokenFile;
  }

  #headers() {
    const token = this.#token ?? readFileSync(this.#tokenFile, 'utf8').trim();
    return { authorization: `Bearer ${token}` };
  }

  /**
   * `DELETE /admin/v1/members/{nodeId}` on the leader. Retries NO_LEADER and TIMEOUT (the
   * sidecar documents that repeating a membership change completes it) within `deadlineMs`.
   * @param {string} nodeId numeric node id, as a decimal string
   * @param {{deadlineMs: number, reconnect: import('./backoff.js').BackoffPolicy}} policy
   * @returns {Promise<{removed: boolean, logIndex?: number}>}
   */
  async removeMember(nodeId, { deadlineMs, reconnect }) {
    const started = Date.now();
    let target = this.#address;
    let hops = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        return await requestJson({
          url: `${target}/admin/v1/members/${encodeURIComponent(nodeId)}`,
          method: 'DELETE',
          headers: this.#headers(),
          timeoutMs: MEMBERSHIP_TIMEOUT_MS,
        });
      } catch (err) {
        if (!(err instanceof SidecarError)) throw err;
        if (err.code === ErrorCode.NOT_LEADER && err.leaderAdminAddr && hops < MAX_HOPS) {
          hops += 1;
          target = baseUrl(err.leaderAdminAddr);
          continue;
        }
        const retryable = err.code === ErrorCode.NO_LEADER || err.code === ErrorCode.TIMEOUT
          || err.code === ErrorCode.NOT_LEADER || err.code === ErrorCode.UNAVAILABLE;
        const delayMs = backoffDelay(reconnect, attempt, err.retryAfterMs);
        if (!retryable || Date.now() - started + delayMs > deadlineMs) throw err;
        // A leader change may have moved leadership away from the node we were sent to.
        if (err.code !== ErrorCode.TIMEOUT) {
          target = this.#address;
          hops = 0;
        }
        await sleep(delayMs);
      }
    }
  }
}
