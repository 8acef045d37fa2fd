//! raft-sidecar: the consensus node that runs beside each daemon.
//!
//! Where a write goes: `api::daemon` (HTTP, loopback) → `raft::submit` (forward to the leader
//! over `transport` when this node follows; group concurrent operations into one Raft entry) →
//! openraft (`raft::node`) → `transport` (WebSocket to peers) and `store::log` (RocksDB,
//! synced) → once committed, `store::state_machine` applies it through the pure `journal` core
//! → the caller gets its answer and `/v1/journal` readers see it.

pub mod admission;
pub mod api;
pub mod cli;
pub mod config;
pub mod journal;
pub mod metrics;
pub mod operation;
pub mod raft;
pub mod store;
pub mod tls;
pub mod transport;
pub mod types;
pub mod write;
