// The apply loop, done right: the OperationHandler of the UNRDF daemon's Raft integration guide
// kept executed ids in a Set ("persistent store in production"). Here the journal gives one
// total order with dense indices, so a single durable number, the last applied logIndex, is
// enough to run each operation once.

import { CompactedError } from './errors.js';

/**
 * @typedef {object} Checkpoint
 * @property {() => number | Promise<number>} load last applied logIndex (0: nothing applied)
 * @property {(logIndex: number, entry?: import('../index.js').JournalEntry) => void | Promise<void>} save
 *   record `logIndex` as applied, durably, before resolving
 */

/**
 * Runs `apply` once per committed operation, in journal order, resuming after the checkpoint.
 *
 * Exactly once holds in the process across reconnects, leader changes and client retries (the
 * sidecar journals each operation id once). Across a crash it holds when `apply`'s effect and
 * `checkpoint.save` commit atomically (one database transaction: `save` receives the entry);
 * with separate stores, only the one operation in flight at the crash can run again.
 */
export class OperationHandler {
  #manager;
  #checkpoint;
  #apply;
  #onCompacted;
  #running = false;
  /** Last applied logIndex, as saved. */
  lastApplied = 0;

  /**
   * @param {import('./consensus-manager.js').ConsensusManager} manager
   * @param {object} opts
   * @param {Checkpoint} opts.checkpoint
   * @param {(entry: import('../index.js').JournalEntry) => unknown | Promise<unknown>} opts.apply
   * @param {(error: CompactedError) => number | Promise<number>} [opts.onCompacted] resynchronise
   *   the daemon's own state (e.g. from a peer's backup) and return the logIndex it now reflects;
   *   without it, COMPACTED ends run() with the error
   */
  constructor(manager, { checkpoint, apply, onCompacted }) {
    if (typeof checkpoint?.load !== 'function' || typeof checkpoint?.save !== 'function') {
      throw new TypeError('checkpoint must have load() and save(logIndex)');
    }
    if (typeof apply !== 'function') throw new TypeError('apply must be a function');
    this.#manager = manager;
    this.#checkpoint = checkpoint;
    this.#apply = apply;
    this.#onCompacted = onCompacted;
  }

  /**
   * Apply operations until `signal` aborts or the manager shuts down (then resolves). Rejects
   * when `apply` or `save` throws (the failed operation is not marked applied: the next run
   * starts with it) or on an unhandled COMPACTED.
   * @param {{signal?: AbortSignal}} [options]
   */
  async run({ signal } = {}) {
    if (this.#running) throw new Error('OperationHandler.run() is already running');
    this.#running = true;
    try {
      this.lastApplied = checkIndex(await this.#checkpoint.load(), 'checkpoint.load()');
      for (;;) {
        try {
          await this.#drain(signal);
          return;
        } catch (err) {
          if (!(err instanceof CompactedError) || !this.#onCompacted) throw err;
          const resumed = checkIndex(await this.#onCompacted(err), 'onCompacted()');
          if (resumed + 1 < (err.firstIndex ?? 0)) {
            throw new RangeError(`onCompacted() returned ${resumed}, but the journal starts at ${err.firstIndex}`);
          }
          await this.#checkpoint.save(resumed);
          this.lastApplied = resumed;
        }
      }
    } finally {
      this.#running = false;
    }
  }

  async #drain(signal) {
    for await (const entry of this.#manager.journal({ from: this.lastApplied + 1, signal })) {
      if (entry.logIndex <= this.lastApplied) continue;
      await this.#apply(entry);
      await this.#checkpoint.save(entry.logIndex, entry);
      this.lastApplied = entry.logIndex;
    }
  }
}

function checkIndex(value, what) {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`${what} must give a non-negative integer logIndex, got ${value}`);
  }
  return value;
}
