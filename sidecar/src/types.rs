//! The openraft type configuration of the sidecar: what a node, an entry and a response are.
//! Everything openraft-specific that other modules name goes through these aliases, so moving
//! to openraft 0.10 later touches this module and the adapters only.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::journal::{OpOutcome, Proposal};

/// A node id: random, generated when a data dir is first initialized, never reused.
pub type NodeId = u64;

/// What the Raft membership stores about each member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Human name (the pod name); shown as `leaderId`.
    pub name: String,
    /// `host:port` of the peer transport.
    pub peer_addr: String,
    /// `host:port` of the admin API (may be empty when unknown).
    pub admin_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_addr)
    }
}

/// The state machine's answer for one entry: one outcome per operation of its proposal
/// (empty for blank and membership entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub outcomes: Vec<OpOutcome>,
}

// The proposal is behind an `Arc`: openraft clones an entry each time it reads one back
// (replication to every follower, apply), and a deep clone copies every operation's id, type
// and payload. The encoding is the proposal's own (serde's `rc`), on disk and on the wire.
openraft::declare_raft_types!(
    /// openraft type configuration of the sidecar.
    pub TypeConfig:
        D = Arc<Proposal>,
        R = ApplyResponse,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = tokio::fs::File,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type Membership = openraft::Membership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Member>;
