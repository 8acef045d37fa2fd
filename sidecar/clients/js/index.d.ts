// Type declarations of @unrdf-consensus/client (hand-written; the sources are plain ESM).
/// <reference types="node" />

import { EventEmitter } from 'node:events';

/** Error codes of the sidecar (docs/sidecar.md "Error codes"), plus the client's UNAVAILABLE. */
export type ErrorCodeName =
  | 'INVALID_OPERATION'
  | 'UNAUTHORIZED'
  | 'NOT_FOUND'
  | 'ID_CONFLICT'
  | 'REFUSED'
  | 'COMPACTED'
  | 'PAYLOAD_TOO_LARGE'
  | 'NOT_LEADER'
  | 'INTERNAL'
  | 'NO_LEADER'
  | 'NO_QUORUM'
  | 'NOT_INITIALIZED'
  | 'SHUTTING_DOWN'
  | 'TIMEOUT'
  | 'BUSY'
  | 'UNAVAILABLE';

export declare const ErrorCode: Readonly<{ [K in ErrorCodeName]: K }>;

/** An error answered by the sidecar, or UNAVAILABLE when it did not answer. */
export declare class SidecarError extends Error {
  constructor(detail: {
    code: string;
    message: string;
    status?: number;
    leaderId?: string;
    leaderAdminAddr?: string;
    retryAfterMs?: number;
    firstIndex?: number;
    cause?: unknown;
  });
  readonly code: ErrorCodeName | (string & {});
  /** HTTP status; undefined for UNAVAILABLE and client-side checks. */
  readonly status: number | undefined;
  /** Leader's name, when the sidecar knew one. */
  readonly leaderId: string | undefined;
  /** Leader's admin address (NOT_LEADER). */
  readonly leaderAdminAddr: string | undefined;
  /** The sidecar's backoff hint (retryable codes). */
  readonly retryAfterMs: number | undefined;
  /** Oldest retained journal index (COMPACTED). */
  readonly firstIndex: number | undefined;
  /** Attempts made by replicateOperation() before it gave up with this error. */
  attempts?: number;
  static fromBody(status: number | undefined, detail: { code: string; message: string }): SidecarError;
}

/** 410 COMPACTED: resynchronise the daemon's state, then resume from `firstIndex`. */
export declare class CompactedError extends SidecarError {
  readonly code: 'COMPACTED';
  readonly firstIndex: number;
}

/** The sidecar did not answer (refused, dropped or timed-out connection); code UNAVAILABLE. */
export declare class SidecarUnavailableError extends SidecarError {
  constructor(message: string, cause?: unknown);
  readonly code: 'UNAVAILABLE';
}

/** What a daemon submits (`POST /v1/operations`). */
export interface Operation {
  /** 1–256 bytes; the retry and deduplication key. */
  id: string;
  type: string;
  payload?: unknown;
  daemonId?: string;
  timestamp?: number;
}

export type OperationStatus = 'PENDING' | 'REPLICATED' | 'COMMITTED' | 'FAILED';

/** Answer of replicateOperation(): the shape of the UNRDF daemon's Raft integration guide, plus `status` and `duplicate`. */
export interface ReplicationResult {
  operationId: string;
  replicated: boolean;
  committed: boolean;
  /** Journal position: dense, strictly increasing, the same on every node. */
  logIndex: number;
  /** Term of the Raft entry that committed the operation. */
  term: number;
  status: OperationStatus;
  /** The id was already committed: `logIndex`/`term` are the original ones. */
  duplicate: boolean;
}

/** One operation's answer in replicateMany(): its result, or why it failed. */
export type BatchItem = ReplicationResult | { operationId?: string; error: SidecarError };

export interface OperationState {
  operationId: string;
  status: OperationStatus;
  logIndex?: number;
  term?: number;
  reason?: string;
}

/** One committed operation (payload in canonical form: sorted keys). */
export interface JournalEntry {
  logIndex: number;
  term: number;
  operation: Operation;
}

export interface JournalPage {
  entries: JournalEntry[];
  nextIndex: number;
  firstIndex: number;
  commitIndex: number;
}

export type PartitionState = 'healthy' | 'degraded' | 'minority' | 'leaderless';

export interface MemberState {
  nodeId: string;
  name: string;
  address: string;
  role: 'voter' | 'learner';
  healthy: boolean;
  matchedIndex?: number;
  lastContactMs?: number;
}

/** `?consistency=` of the read calls: `local` (the default) or `linearizable`. */
export type Consistency = 'local' | 'linearizable';

/** `GET /v1/state` plus the integration guide's `lastAppliedIndex` and `timestamp`. Indices are Raft log indices. */
export interface ConsensusState {
  /** Numeric node id, as a decimal string. */
  nodeId: string;
  nodeName: string;
  clusterId: string;
  /** Leader's name, or null. */
  leaderId: string | null;
  isLeader: boolean;
  currentTerm: number;
  partitionState: PartitionState;
  logSize: number;
  lastLogIndex: number;
  commitIndex: number;
  appliedIndex: number;
  snapshotIndex: number;
  quorumAvailable: boolean;
  members: MemberState[];
  lastAppliedIndex: number;
  timestamp: Date;
}

export interface BackoffPolicy {
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface RetryPolicy extends BackoffPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** No new attempt starts after this long since the first. */
  deadlineMs: number;
  /** Codes that are retried with the same id. */
  codes: readonly string[];
}

export declare const DEFAULT_RETRY: Readonly<RetryPolicy>;
export declare const DEFAULT_RETRY_CODES: readonly ErrorCodeName[];
export declare const DEFAULT_ENDPOINT: 'http://127.0.0.1:7080';
export declare const CONSENSUS_EVENTS: readonly (keyof SidecarEvents)[];

export interface AdminOptions {
  /** Admin address of any member (`host:port` or URL); NOT_LEADER answers are followed. */
  address: string;
  token?: string;
  /** Read at each call. */
  tokenFile?: string;
}

export interface ConsensusManagerOptions {
  /** Daemon API of the local sidecar. Default: `RAFT_API`, else http://127.0.0.1:7080. */
  endpoint?: string;
  /** Added to operations that carry none. */
  daemonId?: string;
  /** Needed by removeNodeGracefully() only. */
  admin?: AdminOptions;
  /** initialize() deadline. Default 30000. */
  initializeTimeoutMs?: number;
  /** Per HTTP request. Default 10000 (above the sidecar's 5 s write timeout). */
  requestTimeoutMs?: number;
  /** Silence after which an event stream is dropped and reopened. Default 45000. */
  idleTimeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** Reconnect backoff of the event and journal streams. Default {100, 2000}. */
  reconnect?: Partial<BackoffPolicy>;
  /** Operations larger than this (as JSON) are refused with PAYLOAD_TOO_LARGE before they are
   * sent. Set it to the sidecar's --max-operation-bytes. Default 1048576 (its default). */
  maxOperationBytes?: number;
}

/** Events re-emitted from the sidecar's `/v1/events`. */
export interface SidecarEvents {
  'consensus:leader_elected': { leaderId: string; term: number; resynced?: true };
  'consensus:leader_lost': { term: number; resynced?: true };
  'partition:detected': { nodeId: string; health: 'minority' | 'leaderless' };
  'partition:recovered': { newLeader: string | null };
  'log:compacted': { entriesRemoved: number; snapshotIndex: number };
  'member:joined': { nodeId: string };
  'member:removed': { nodeId: string };
}

/** Events of the client itself. */
export interface ClientEvents {
  'consensus:initialized': { nodeId: string; nodeName: string };
  'sidecar:connected': { reconnected: boolean };
  'sidecar:disconnected': { error: Error | undefined; delayMs: number };
  'sidecar:error': SidecarError;
  'operation:retry': { operationId: string; attempt: number; code: string; delayMs: number; error: SidecarError };
  'journal:reconnect': { attempt: number; delayMs: number; error?: Error; nextIndex: number };
}

export type ConsensusManagerEvents = SidecarEvents & ClientEvents;

export interface RemovalResult {
  /** As given: a name or a numeric id. */
  nodeId: string;
  /** Numeric id removed, or null when the name is not a member. */
  memberId: string | null;
  removed: boolean;
  /** Raft log index of the committed configuration. */
  logIndex?: number;
  timestamp: number;
}

export declare class ConsensusManager extends EventEmitter {
  constructor(options?: ConsensusManagerOptions);
  /** The integration guide's signature: raftCoordinator and clusterManager are ignored. */
  constructor(daemon: { daemonId?: string; emit: Function }, raftCoordinator?: unknown, clusterManager?: unknown, options?: ConsensusManagerOptions);

  readonly endpoint: string;
  /** Cached view: refreshed by initialize(), getConsensusState() and events. */
  nodeId: string | null;
  nodeName: string | null;
  clusterId: string | null;
  leaderId: string | null;
  isLeader: boolean;
  currentTerm: number;
  partitionState: PartitionState;

  initialize(): Promise<void>;
  replicateOperation(operation: Operation, options?: { signal?: AbortSignal }): Promise<ReplicationResult>;
  /** Several operations in one request, each with its own id, result and exactly-once semantics. */
  replicateMany(operations: Operation[], options?: { signal?: AbortSignal }): Promise<BatchItem[]>;
  /** `consistency: 'linearizable'`: reflects every write acknowledged before the call (the leader confirms with a quorum; this node waits until it applied that far), else rejects with NO_LEADER/NO_QUORUM/TIMEOUT. */
  getConsensusState(options?: { consistency?: Consistency }): Promise<ConsensusState>;
  getOperation(id: string, options?: { consistency?: Consistency }): Promise<OperationState>;
  readJournal(query?: { from?: number; limit?: number; consistency?: Consistency }): Promise<JournalPage>;
  journal(options?: { from?: number; signal?: AbortSignal }): AsyncGenerator<JournalEntry, void, undefined>;
  removeNodeGracefully(nodeId: string): Promise<RemovalResult>;
  shutdown(): Promise<void>;

  on<K extends keyof ConsensusManagerEvents>(event: K, listener: (data: ConsensusManagerEvents[K]) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once<K extends keyof ConsensusManagerEvents>(event: K, listener: (data: ConsensusManagerEvents[K]) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off<K extends keyof ConsensusManagerEvents>(event: K, listener: (data: ConsensusManagerEvents[K]) => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}

export declare function createConsensusManager(options?: ConsensusManagerOptions): ConsensusManager;
export declare function createConsensusManager(daemon: { daemonId?: string; emit: Function }, raftCoordinator?: unknown, clusterManager?: unknown, options?: ConsensusManagerOptions): ConsensusManager;

/** A durable "last applied logIndex". `save` must be durable before it resolves. */
export interface Checkpoint {
  /** 0 when nothing was applied yet. */
  load(): number | Promise<number>;
  /** `entry` is absent when the index comes from a resynchronisation (onCompacted). */
  save(logIndex: number, entry?: JournalEntry): void | Promise<void>;
}

export interface OperationHandlerOptions {
  checkpoint: Checkpoint;
  apply(entry: JournalEntry): unknown | Promise<unknown>;
  /** Resynchronise the daemon's state and return the logIndex it now reflects. */
  onCompacted?(error: CompactedError): number | Promise<number>;
}

/** Runs `apply` once per committed operation, in order, after the checkpoint. */
export declare class OperationHandler {
  constructor(manager: ConsensusManager, options: OperationHandlerOptions);
  /** Last applied logIndex, as saved. */
  lastApplied: number;
  /** Resolves when `signal` aborts or the manager shuts down. */
  run(options?: { signal?: AbortSignal }): Promise<void>;
}

/** Checkpoint in a file, replaced atomically on each save. */
export declare class FileCheckpoint implements Checkpoint {
  constructor(path: string);
  load(): Promise<number>;
  save(logIndex: number): Promise<void>;
}
