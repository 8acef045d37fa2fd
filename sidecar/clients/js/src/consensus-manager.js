// The ConsensusManager API of the UNRDF daemon's Raft integration guide (method names, result
// shapes, event names), backed by the local raft-sidecar's daemon API instead of an in-memory
// log. Moving a daemon onto real consensus is a change of import, plus `await` on
// getConsensusState() (it now asks the sidecar).

import { EventEmitter, setMaxListeners } from 'node:events';

import { AdminClient } from './admin.js';
import { sleep } from './backoff.js';
import { resolveEndpoint } from './endpoint.js';
import { ErrorCode, SidecarError } from './errors.js';
import { EventFeed } from './events.js';
import { requestJson } from './http.js';
import { watchJournal } from './journal.js';
import { DEFAULT_RETRY, withRetry } from './retry.js';

/** Event names the sidecar sends on `/v1/events`, re-emitted unchanged. */
export const CONSENSUS_EVENTS = Object.freeze([
  'consensus:leader_elected',
  'consensus:leader_lost',
  'partition:detected',
  'partition:recovered',
  'log:compacted',
  'member:joined',
  'member:removed',
]);

const DEFAULTS = Object.freeze({
  initializeTimeoutMs: 30000,
  // Above the sidecar's --write-timeout-ms (5 s): the sidecar answers TIMEOUT itself first.
  requestTimeoutMs: 10000,
  // The sidecar sends an SSE keep-alive every 15 s; three missed ones mean a dead connection.
  idleTimeoutMs: 45000,
  reconnect: Object.freeze({ baseDelayMs: 100, maxDelayMs: 2000 }),
  // The sidecar's default --max-operation-bytes. An operation above it is refused here, before
  // it is sent: a sidecar refuses a body far above its limit without reading it, and fetch then
  // reports a broken pipe instead of the 413.
  maxOperationBytes: 1024 * 1024,
});

export class ConsensusManager extends EventEmitter {
  /** Daemon API base URL in use. */
  endpoint;
  /** Cached view, refreshed by getConsensusState(), initialize() and events. */
  nodeId = null;
  nodeName = null;
  clusterId = null;
  leaderId = null;
  isLeader = false;
  currentTerm = 0;
  partitionState = 'healthy';

  #opts;
  #retry;
  #admin;
  /** @type {EventFeed | null} */
  #feed = null;
  /** @type {Promise<void> | null} */
  #initializing = null;
  /** @type {string | null} the leader last reported by an event (or found by initialize()) */
  #announcedLeader = null;
  #closing = new AbortController();

  /**
   * `new ConsensusManager(options)`, or the integration guide's `new ConsensusManager(daemon,
   * raftCoordinator, clusterManager, options)`: the coordinator and cluster manager are not
   * needed (the sidecar does their work) and are ignored; the daemon only lends its `daemonId`.
   * @param {...any} args
   */
  constructor(...args) {
    super();
    const guideStyle = args.length > 1 || typeof args[0]?.emit === 'function';
    const daemon = guideStyle ? args[0] : undefined;
    const options = (guideStyle ? args[3] : args[0]) ?? {};
    this.#opts = {
      ...DEFAULTS,
      ...options,
      reconnect: { ...DEFAULTS.reconnect, ...options.reconnect },
      daemonId: options.daemonId ?? daemon?.daemonId,
    };
    this.#retry = { ...DEFAULT_RETRY, ...options.retry };
    this.endpoint = resolveEndpoint(options.endpoint);
    this.#admin = options.admin ? new AdminClient(options.admin) : null;
    // Every pending retry and open stream listens on this signal; dozens at once are normal.
    setMaxListeners(0, this.#closing.signal);
  }

  /**
   * Wait until the sidecar answers and a leader is known, then subscribe to its events.
   * Rejects with the last error (or NO_LEADER) once `initializeTimeoutMs` has passed.
   * @returns {Promise<void>}
   */
  async initialize() {
    // One event subscription per manager, even when initialize() is called concurrently.
    this.#initializing ??= this.#initialize().catch((err) => {
      this.#initializing = null;
      throw err;
    });
    return this.#initializing;
  }

  async #initialize() {
    const deadline = Date.now() + this.#opts.initializeTimeoutMs;
    await this.#waitForLeader(deadline);
    const feed = new EventFeed({
      endpoint: this.endpoint,
      reconnect: this.#opts.reconnect,
      connectTimeoutMs: this.#opts.requestTimeoutMs,
      idleTimeoutMs: this.#opts.idleTimeoutMs,
      onEvent: (name, data) => this.#onSidecarEvent(name, data),
      onConnect: (reconnected) => this.#onConnect(reconnected),
      onDisconnect: (error, delayMs) => this.#emitSafely('sidecar:disconnected', { error, delayMs }),
    });
    this.#feed = feed;
    // Bounded like the rest of initialize(); afterwards the feed reconnects by itself.
    const timer = new AbortController();
    const deadlinePassed = sleep(Math.max(0, deadline - Date.now()), AbortSignal.any([timer.signal, this.#closing.signal]))
      .then(() => false, () => false);
    const opened = await Promise.race([feed.ready.then(() => true), deadlinePassed]);
    timer.abort();
    this.#assertOpen(); // shutdown() during initialize() also ends the wait
    if (!opened) {
      feed.close();
      this.#feed = null;
      throw new SidecarError({
        code: ErrorCode.UNAVAILABLE,
        message: `event stream of ${this.endpoint} did not open within ${this.#opts.initializeTimeoutMs} ms`,
      });
    }
    this.#emitSafely('consensus:initialized', { nodeId: this.nodeId, nodeName: this.nodeName });
  }

  /** Poll `/v1/state` until a leader is known, or throw the last error at `deadline`. */
  async #waitForLeader(deadline) {
    let lastError;
    for (let attempt = 1; ; attempt++) {
      this.#assertOpen();
      try {
        // A sidecar that accepts connections but never answers must not stretch the deadline.
        const timeoutMs = Math.max(1, Math.min(this.#opts.requestTimeoutMs, deadline - Date.now()));
        const state = await this.#request({ path: '/v1/state', timeoutMs });
        this.#remember(state);
        if (state.leaderId) return;
        lastError = new SidecarError({ code: ErrorCode.NO_LEADER, message: 'the sidecar knows no leader yet' });
      } catch (err) {
        if (!(err instanceof SidecarError)) throw err;
        lastError = err;
      }
      const delayMs = Math.min(this.#opts.reconnect.maxDelayMs, 50 * attempt);
      if (Date.now() + delayMs > deadline) {
        throw new SidecarError({
          code: lastError.code,
          status: lastError.status,
          message: `sidecar at ${this.endpoint} not ready within ${this.#opts.initializeTimeoutMs} ms: ${lastError.message}`,
          cause: lastError,
        });
      }
      await sleep(delayMs, this.#closing.signal);
    }
  }

  /**
   * Submit an operation and wait until it is committed and applied on this node. Retries
   * the retry policy's codes with the same id, so a retry is never a second execution.
   * @param {{id: string, type: string, payload?: unknown, daemonId?: string, timestamp?: number}} operation
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<import('../index.js').ReplicationResult>}
   */
  /** The body sent for one operation (with this manager's daemonId), or why it is refused. */
  #operationBody(operation) {
    if (operation === null || typeof operation !== 'object' || Array.isArray(operation)) {
      throw new SidecarError({ code: ErrorCode.INVALID_OPERATION, message: 'an operation must be an object with id and type' });
    }
    const body = { ...operation };
    if (body.daemonId === undefined && this.#opts.daemonId !== undefined) body.daemonId = this.#opts.daemonId;
    const size = Buffer.byteLength(JSON.stringify(body));
    if (size > this.#opts.maxOperationBytes) {
      throw new SidecarError({
        code: ErrorCode.PAYLOAD_TOO_LARGE,
        message: `operation is ${size} bytes; the limit (maxOperationBytes, the sidecar's --max-operation-bytes) is ${this.#opts.maxOperationBytes}`,
      });
    }
    return body;
  }

  async replicateOperation(operation, { signal } = {}) {
    this.#assertOpen();
    const body = this.#operationBody(operation);
    const cancel = this.#signal(signal);
    return withRetry(
      () => this.#request({ path: '/v1/operations', method: 'POST', body, signal: cancel }),
      this.#retry,
      {
        signal: cancel,
        onRetry: (info) => this.#emitSafely('operation:retry', { operationId: body.id, ...info }),
      },
    );
  }

  /**
   * Replicate several operations in one request (`POST /v1/operations:batch`): each has its own
   * id, its own result and its own exactly-once semantics (not all-or-nothing). Resolves to one
   * item per operation, in order: the result `replicateOperation()` would give, or
   * `{ operationId, error }` with a `SidecarError` (an operation refused here before sending,
   * such as one over `maxOperationBytes`, or by the sidecar). An item whose error is retryable
   * may be submitted again under the same id. The request as a whole is retried like
   * `replicateOperation()`'s (safe: every operation is exactly once); it rejects only when the
   * batch itself is refused (more than the sidecar's `--max-batch-operations`, too large).
   * @param {import('../index.js').Operation[]} operations
   * @param {{signal?: AbortSignal}} [options]
   * @returns {Promise<import('../index.js').BatchItem[]>}
   */
  async replicateMany(operations, { signal } = {}) {
    this.#assertOpen();
    if (!Array.isArray(operations)) {
      throw new SidecarError({ code: ErrorCode.INVALID_OPERATION, message: 'replicateMany takes an array of operations' });
    }
    const items = new Array(operations.length);
    const sent = [];
    operations.forEach((operation, i) => {
      try {
        sent.push({ i, body: this.#operationBody(operation) });
      } catch (error) {
        items[i] = { operationId: operation?.id, error };
      }
    });
    if (sent.length > 0) {
      const cancel = this.#signal(signal);
      const answer = await withRetry(
        () =>
          this.#request({
            path: '/v1/operations:batch',
            method: 'POST',
            body: { operations: sent.map((s) => s.body) },
            signal: cancel,
          }),
        this.#retry,
        {
          signal: cancel,
          onRetry: (info) => this.#emitSafely('operation:retry', { operationId: sent[0].body.id, batch: sent.length, ...info }),
        },
      );
      answer.results.forEach((result, k) => {
        const { i } = sent[k];
        items[i] = result.error ? { operationId: result.operationId, error: new SidecarError(result.error) } : result;
      });
    }
    return items;
  }

  /**
   * The sidecar's `/v1/state`, plus the integration guide's `lastAppliedIndex` and `timestamp`.
   * `consistency: 'linearizable'` reflects every write acknowledged before the call.
   * @param {{consistency?: 'local' | 'linearizable'}} [options]
   * @returns {Promise<import('../index.js').ConsensusState>}
   */
  async getConsensusState({ consistency } = {}) {
    const state = await this.#request({ path: `/v1/state${consistencyQuery(consistency)}` });
    this.#remember(state);
    return { ...state, lastAppliedIndex: state.appliedIndex, timestamp: new Date() };
  }

  /**
   * Where an operation stands on this node (`PENDING`, `REPLICATED`, `COMMITTED`, `FAILED`).
   * Unknown ids reject with NOT_FOUND. With `consistency: 'linearizable'`, an operation
   * acknowledged anywhere before the call is never NOT_FOUND here.
   * @param {string} id
   * @param {{consistency?: 'local' | 'linearizable'}} [options]
   */
  async getOperation(id, { consistency } = {}) {
    const path = `/v1/operations/${encodeURIComponent(id)}${consistencyQuery(consistency)}`;
    return this.#request({ path });
  }

  /**
   * One page of the journal (`GET /v1/journal`).
   * @param {{from?: number, limit?: number, consistency?: 'local' | 'linearizable'}} [query]
   */
  async readJournal({ from, limit, consistency } = {}) {
    const params = new URLSearchParams();
    if (from !== undefined) params.set('from', String(from));
    if (limit !== undefined) params.set('limit', String(limit));
    if (consistency !== undefined) params.set('consistency', consistency);
    const query = params.size > 0 ? `?${params}` : '';
    return this.#request({ path: `/v1/journal${query}` });
  }

  /**
   * Committed operations in order, from `from` (default: the oldest retained), live ones
   * included, resuming after reconnects from the last delivered index. Throws CompactedError
   * when the journal no longer holds the next index. Ends when `signal` aborts or on shutdown().
   * @param {{from?: number, signal?: AbortSignal}} [options]
   */
  journal({ from, signal } = {}) {
    this.#assertOpen();
    return watchJournal({
      endpoint: this.endpoint,
      from,
      signal: this.#signal(signal),
      reconnect: this.#opts.reconnect,
      connectTimeoutMs: this.#opts.requestTimeoutMs,
      idleTimeoutMs: this.#opts.idleTimeoutMs,
      onReconnect: (info) => this.#emitSafely('journal:reconnect', info),
    });
  }

  /**
   * Remove a member through the admin API (needs `admin` options: outside Kubernetes only;
   * inside, the operator owns membership). `nodeId` is the member's numeric id or its name.
   * The sidecar refuses (409 REFUSED) a removal that would leave no healthy quorum.
   * @param {string} nodeId
   */
  async removeNodeGracefully(nodeId) {
    this.#assertOpen();
    if (!this.#admin) {
      throw new TypeError('removeNodeGracefully needs the admin option ({address, token | tokenFile})');
    }
    if (typeof nodeId !== 'string' || nodeId === '') throw new TypeError('nodeId must be a non-empty string');
    let memberId = nodeId;
    if (!/^\d+$/.test(nodeId)) {
      const state = await this.getConsensusState();
      const member = state.members.find((m) => m.name === nodeId);
      if (!member) return { nodeId, memberId: null, removed: false, timestamp: Date.now() };
      memberId = member.nodeId;
    }
    const result = await this.#admin.removeMember(memberId, {
      deadlineMs: this.#retry.deadlineMs,
      reconnect: this.#opts.reconnect,
    });
    return { nodeId, memberId, ...result, timestamp: Date.now() };
  }

  /**
   * Close the event stream and every journal iterator, abandon pending retries, and drop all
   * listeners (as the integration guide's ConsensusManager does). The sidecar keeps running: it
   * is not the daemon's to stop.
   */
  async shutdown() {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort(new SidecarError({ code: ErrorCode.SHUTTING_DOWN, message: 'ConsensusManager was shut down' }));
    this.#feed?.close();
    await this.#feed?.done;
    this.removeAllListeners();
  }

  /**
   * @param {{path: string, method?: string, body?: unknown, signal?: AbortSignal, timeoutMs?: number}} req
   */
  async #request({ path, method = 'GET', body, signal, timeoutMs = this.#opts.requestTimeoutMs }) {
    return requestJson({
      url: `${this.endpoint}${path}`,
      method,
      body,
      timeoutMs,
      signal: signal ?? this.#closing.signal,
    });
  }

  #signal(signal) {
    return signal ? AbortSignal.any([signal, this.#closing.signal]) : this.#closing.signal;
  }

  #assertOpen() {
    if (this.#closing.signal.aborted) throw this.#closing.signal.reason;
  }

  #remember(state) {
    this.nodeId = state.nodeId;
    this.nodeName = state.nodeName;
    this.clusterId = state.clusterId;
    this.leaderId = state.leaderId ?? null;
    this.isLeader = Boolean(state.isLeader);
    this.currentTerm = state.currentTerm;
    this.partitionState = state.partitionState;
  }

  #onSidecarEvent(name, data) {
    if (name === 'error') {
      // Never emit 'error' for this: an EventEmitter without an 'error' listener would throw.
      const detail = data?.error ?? { code: ErrorCode.INTERNAL, message: String(data) };
      this.#emitSafely('sidecar:error', SidecarError.fromBody(undefined, detail));
      return;
    }
    switch (name) {
      case 'consensus:leader_elected':
        this.leaderId = data.leaderId;
        this.currentTerm = data.term;
        this.isLeader = data.leaderId === this.nodeName;
        // Already reported by the resync after a reconnect: listeners hear of a change once.
        if (!this.#announce(data.leaderId)) return;
        break;
      case 'consensus:leader_lost':
        this.leaderId = null;
        this.isLeader = false;
        if (!this.#announce(null)) return;
        break;
      case 'partition:detected':
        this.partitionState = data.health;
        break;
      case 'partition:recovered':
        this.#refreshQuietly();
        break;
      default:
        break;
    }
    this.#emitSafely(name, data);
  }

  /**
   * Record `leaderId` as the leader listeners know of; false when they already do.
   * @param {string | null} leaderId
   */
  #announce(leaderId) {
    if (leaderId === this.#announcedLeader) return false;
    this.#announcedLeader = leaderId;
    return true;
  }

  /** Events missed while disconnected are not replayed: derive the leader change from state. */
  async #onConnect(reconnected) {
    this.#emitSafely('sidecar:connected', { reconnected });
    if (!reconnected) {
      this.#announcedLeader = this.leaderId;
      return;
    }
    await this.#refreshQuietly();
    if (!this.#announce(this.leaderId)) return;
    if (this.leaderId) {
      this.#emitSafely('consensus:leader_elected', { leaderId: this.leaderId, term: this.currentTerm, resynced: true });
    } else {
      this.#emitSafely('consensus:leader_lost', { term: this.currentTerm, resynced: true });
    }
  }

  async #refreshQuietly() {
    try {
      await this.getConsensusState();
    } catch {
      // Best effort: the next event or call refreshes the cache again.
    }
  }

  /** A throwing listener must not kill the event stream; rethrow it outside the loop. */
  #emitSafely(name, payload) {
    try {
      this.emit(name, payload);
    } catch (err) {
      process.nextTick(() => {
        throw err;
      });
    }
  }
}

/**
 * The integration guide's factory, same signature.
 * @param {...any} args see the ConsensusManager constructor
 */
export function createConsensusManager(...args) {
  return new ConsensusManager(...args);
}

/** `?consistency=…` for a read, or nothing for the default (local). */
function consistencyQuery(consistency) {
  return consistency === undefined ? '' : `?consistency=${encodeURIComponent(consistency)}`;
}
