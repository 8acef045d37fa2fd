// Public surface of the client: the ConsensusManager of the UNRDF daemon's Raft integration
// guide, the apply-loop helpers and the typed errors.

export { ConsensusManager, createConsensusManager, CONSENSUS_EVENTS } from './consensus-manager.js';
export { OperationHandler } from './operation-handler.js';
export { FileCheckpoint } from './checkpoint.js';
export { CompactedError, ErrorCode, SidecarError, SidecarUnavailableError } from './errors.js';
export { DEFAULT_RETRY, DEFAULT_RETRY_CODES } from './retry.js';
export { DEFAULT_ENDPOINT } from './endpoint.js';
