//! Daemon API (`/v1/…`, loopback): operations, journal, consensus state, events
//! (docs/sidecar.md "Daemon API").

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Body of `POST /v1/operations`, and the `operation` of every journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub id: String,
    #[serde(rename = "type")]
    pub op_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

/// Lifecycle of an operation as seen from one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationStatus {
    /// Accepted, not yet on a majority.
    Pending,
    /// On a majority, not yet applied on this node.
    Replicated,
    /// Applied on this node: in the journal.
    Committed,
    /// Rejected; `reason` says why.
    Failed,
}

/// Answer of `POST /v1/operations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitResult {
    pub operation_id: String,
    pub status: OperationStatus,
    pub replicated: bool,
    pub committed: bool,
    /// Position of the operation in the journal (dense, strictly increasing, same on every node).
    pub log_index: u64,
    pub term: u64,
    pub duplicate: bool,
}

/// Body of `POST /v1/operations:batch`: operations submitted together, each with its own id
/// and its own exactly-once semantics (not all-or-nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    pub operations: Vec<Operation>,
}

/// Answer of `POST /v1/operations:batch`: one item per operation, in the order submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    pub results: Vec<BatchItem>,
}

/// One operation of a batch: committed (as `POST /v1/operations` answers) or failed (with the
/// error it would have got alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchItem {
    Committed(SubmitResult),
    Failed(BatchFailure),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchFailure {
    /// The operation's id, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    pub error: crate::error::ErrorDetail,
}

/// Answer of `GET /v1/operations/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationState {
    pub operation_id: String,
    pub status: OperationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One committed operation in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub log_index: u64,
    pub term: u64,
    pub operation: Operation,
}

/// Answer of `GET /v1/journal?from=N&limit=M`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalPage {
    pub entries: Vec<JournalEntry>,
    /// Index to ask for next (`from` of the following page).
    pub next_index: u64,
    /// Oldest index still retained.
    pub first_index: u64,
    /// Newest journal index applied on this node.
    pub commit_index: u64,
}

/// `?consistency=` of the read endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// What this node has applied (may be behind the leader; the default).
    #[default]
    Local,
    /// Reflects every write acknowledged before the read began, on any node: the leader
    /// confirms it still leads with a quorum, and this node waits until it applied that far.
    Linearizable,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Local => "local",
            Consistency::Linearizable => "linearizable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionState {
    Healthy,
    Degraded,
    Minority,
    Leaderless,
}

impl PartitionState {
    pub const ALL: [PartitionState; 4] = [
        Self::Healthy,
        Self::Degraded,
        Self::Minority,
        Self::Leaderless,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Minority => "minority",
            Self::Leaderless => "leaderless",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Voter,
    Learner,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberState {
    pub node_id: String,
    pub name: String,
    pub address: String,
    pub role: MemberRole,
    pub healthy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact_ms: Option<u64>,
}

/// Answer of `GET /v1/state` (`getConsensusState()` of the UNRDF daemon's Raft integration
/// guide).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsensusState {
    pub node_id: String,
    pub node_name: String,
    pub cluster_id: String,
    pub leader_id: Option<String>,
    pub is_leader: bool,
    pub current_term: u64,
    pub partition_state: PartitionState,
    pub log_size: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub quorum_available: bool,
    pub members: Vec<MemberState>,
}

/// Events of `GET /v1/events`; the SSE event name is [`ConsensusEvent::name`], the data the
/// variant's fields as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data")]
pub enum ConsensusEvent {
    #[serde(rename = "consensus:leader_elected", rename_all = "camelCase")]
    LeaderElected { leader_id: String, term: u64 },
    #[serde(rename = "consensus:leader_lost", rename_all = "camelCase")]
    LeaderLost { term: u64 },
    #[serde(rename = "partition:detected", rename_all = "camelCase")]
    PartitionDetected {
        node_id: String,
        health: PartitionState,
    },
    #[serde(rename = "partition:recovered", rename_all = "camelCase")]
    PartitionRecovered { new_leader: Option<String> },
    #[serde(rename = "log:compacted", rename_all = "camelCase")]
    LogCompacted {
        entries_removed: u64,
        snapshot_index: u64,
    },
    #[serde(rename = "member:joined", rename_all = "camelCase")]
    MemberJoined { node_id: String },
    #[serde(rename = "member:removed", rename_all = "camelCase")]
    MemberRemoved { node_id: String },
}

impl ConsensusEvent {
    /// The SSE event name, as in the integration guide.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LeaderElected { .. } => "consensus:leader_elected",
            Self::LeaderLost { .. } => "consensus:leader_lost",
            Self::PartitionDetected { .. } => "partition:detected",
            Self::PartitionRecovered { .. } => "partition:recovered",
            Self::LogCompacted { .. } => "log:compacted",
            Self::MemberJoined { .. } => "member:joined",
            Self::MemberRemoved { .. } => "member:removed",
        }
    }

    /// The SSE data: the variant's fields as a JSON object.
    pub fn data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(mut v) => v.get_mut("data").map(Value::take).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_use_the_integration_guide_field_names() {
        let op: Operation = serde_json::from_str(
            r#"{"id":"task-123","type":"data_import","payload":{"a":1},"daemonId":"d-1","timestamp":7}"#,
        )
        .unwrap_or_else(|e| panic!("parse: {e}"));
        assert_eq!(op.op_type, "data_import");
        assert_eq!(op.daemon_id.as_deref(), Some("d-1"));
        let back = serde_json::to_value(&op).unwrap_or_default();
        assert_eq!(back["type"], "data_import");
        assert_eq!(back["daemonId"], "d-1");
    }

    #[test]
    fn events_carry_the_integration_guide_names_and_camel_case_data() {
        let ev = ConsensusEvent::LeaderElected {
            leader_id: "n-1".into(),
            term: 3,
        };
        assert_eq!(ev.name(), "consensus:leader_elected");
        assert_eq!(ev.data(), serde_json::json!({"leaderId": "n-1", "term": 3}));
        let ev = ConsensusEvent::LogCompacted {
            entries_removed: 10,
            snapshot_index: 99,
        };
        assert_eq!(
            ev.data(),
            serde_json::json!({"entriesRemoved": 10, "snapshotIndex": 99})
        );
    }
}
