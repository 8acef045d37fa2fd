//! Admin API (`/admin/v1/…`, bearer token): status, membership, snapshots (docs/sidecar.md).
//! The operator drives clusters with these types.

use serde::{Deserialize, Serialize};

use crate::daemon::{MemberRole, PartitionState};

/// Raft role of a node, or `removed` once it learned it is no longer a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Leader,
    Candidate,
    Follower,
    Learner,
    /// Not yet a member of any cluster (fresh data dir, waiting to be added or initialized).
    Uninitialized,
    /// Was a member; a committed configuration removed it. Raft is shut down.
    Removed,
    /// Shutting down.
    Stopping,
}

/// Answer of `GET /admin/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node_id: String,
    pub name: String,
    pub cluster_id: String,
    pub initialized: bool,
    pub role: NodeRole,
    pub term: u64,
    pub leader_id: Option<String>,
    pub leader_node_id: Option<String>,
    pub last_log_index: u64,
    /// Term of the entry at `lastLogIndex`: a log is more up to date than another when this is
    /// higher, or equal with a higher `lastLogIndex` (which survivor to recover from).
    #[serde(default)]
    pub last_log_term: u64,
    pub last_applied_index: u64,
    pub partition_state: PartitionState,
    /// How this node is reached by peers.
    pub peer_address: String,
    /// How the operator reaches this node's admin API.
    pub admin_address: String,
    /// The certificate files in use (absent with `--insecure-plaintext`, and from sidecars that
    /// predate it): what a certificate or CA rotation waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInUse>,
    /// The backup this node's store was restored from (`raft-sidecar restore`); absent for a
    /// store that was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFrom>,
}

/// Where a restored store came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFrom {
    pub kind: RestoreKind,
    /// The cluster the backup was taken from, as its manifest named it (a recovery's own).
    pub parent_cluster_id: Option<String>,
    pub snapshot_id: String,
    /// The last entry the restored state holds.
    pub last_log_index: u64,
    pub last_log_term: u64,
    /// SHA-256 of the backup image (a recovery's: of the survivor's state), lowercase hex.
    pub sha256: String,
}

/// `backup`: `raft-sidecar restore`; `recovery`: `raft-sidecar recover` of a survivor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RestoreKind {
    Backup,
    Recovery,
}

/// Which certificate files a node uses now: lowercase hex SHA-256 of each file's bytes as it
/// read them (PEM), so whoever wrote the files can tell whether the node has loaded them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsInUse {
    /// Of `--tls-cert`.
    pub certificate_sha256: String,
    /// Of `--tls-ca` (the whole bundle).
    pub ca_sha256: String,
}

/// Lowercase hex SHA-256 as [`TlsInUse`] reports it, from a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Answer of `GET` and `PUT /admin/v1/settings`: the cluster's replicated settings, as this
/// node has applied them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSettings {
    /// How long a committed operation id is remembered; `null` until the cluster's first entry
    /// is applied (it adopts its first leader's `--dedupe-window`).
    pub dedupe_window_ms: Option<u64>,
    /// The replicated dedupe clock: milliseconds measured by leaders' monotonic clocks (not a
    /// date).
    pub dedupe_clock_ms: u64,
}

/// Body of `PUT /admin/v1/settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsUpdate {
    /// The new dedupe window; must be longer than the leader's `--write-timeout-ms`.
    pub dedupe_window_ms: u64,
}

/// A member to add, or one of the members given to `initialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberSpec {
    /// Node id, as printed by `/admin/v1/status` (decimal string or number).
    #[serde(with = "node_id_string")]
    pub node_id: u64,
    pub name: String,
    /// Peer address (`host:port` of the WebSocket transport).
    pub address: String,
    /// Admin address (`host:port`), so followers can point callers at the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_address: Option<String>,
}

/// Body of `POST /admin/v1/initialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitializeRequest {
    pub members: Vec<MemberSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    /// `false` when the same initialization had already happened (the call is a no-op).
    pub initialized: bool,
}

/// One member in `GET /admin/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub node_id: String,
    pub name: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_address: Option<String>,
    pub role: MemberRole,
    pub healthy: bool,
    pub matched_index: Option<u64>,
    /// Raft log entries this member is behind the leader's last log index.
    pub lag: Option<u64>,
    /// For how long the leader's log has held entries this member lacks (0: it has them all);
    /// absent when unknown (older than the leader's history, or an older sidecar). Under load
    /// a healthy follower lags hundreds of entries but only milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    pub last_contact_ms: Option<u64>,
}

/// Answer of `GET /admin/v1/cluster`: membership from the leader's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub leader_id: Option<String>,
    pub leader_node_id: Option<String>,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    /// A joint configuration (membership change half done) is in effect.
    pub joint: bool,
    pub members: Vec<ClusterMember>,
}

/// Answer of membership calls (`add`, `promote`, `remove`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MembershipResult {
    /// Whether the call changed the membership (false: it already was as asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
    /// Raft log index of the committed configuration.
    pub log_index: u64,
}

/// Body of `POST /admin/v1/leadership/transfer` (optional: an empty body lets the leader choose
/// its most caught-up follower).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferRequest {
    /// The voter to hand leadership to (decimal string or number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_node_id: Option<String>,
}

/// Answer of `POST /admin/v1/leadership/transfer`: who leads now, and how long writes waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferResult {
    /// The node that led and handed over.
    pub from_node_id: String,
    /// The node that leads now (the chosen one, unless another won the election).
    pub leader_node_id: String,
    pub leader_id: String,
    /// The new leader's term.
    pub term: u64,
    /// From the call until a new leader was known: how long new writes were held.
    pub took_ms: u64,
}

/// Answer of `POST /admin/v1/snapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotResult {
    pub snapshot_index: u64,
    pub purged_up_to: Option<u64>,
}

/// Answer of `POST /admin/v1/restore`: the backup checked out and is staged; the node stops
/// and starts again on it as the only member of its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    #[serde(with = "node_id_string")]
    pub node_id: u64,
    pub snapshot_id: String,
    pub last_log_index: u64,
    pub last_log_term: u64,
    /// The restored journal holds `journalFirstIndex..journalNextIndex`; the cluster's next
    /// journal record gets `journalNextIndex`.
    pub journal_first_index: u64,
    pub journal_next_index: u64,
    pub size_bytes: u64,
    /// The node is stopping to start again on the restored store (`raft-sidecar run` exits 0;
    /// its container, or any supervisor, starts it again).
    pub restarting: bool,
}

/// Body of `POST /admin/v1/recover`: `force` must be true (the node discards the rest of the
/// membership and may lose entries only the lost members held).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverRequest {
    #[serde(default)]
    pub force: bool,
}

/// Answer of `POST /admin/v1/recover`: what the survivor holds; it restarts as the only voter
/// of its cluster, under a new node id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoverResult {
    /// The survivor's node id before the recovery.
    #[serde(with = "node_id_string")]
    pub node_id: u64,
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub last_applied_index: u64,
    pub restarting: bool,
}

mod node_id_string {
    //! Node ids are u64 but travel as decimal strings (JavaScript cannot hold a u64); accept both.
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Num(u64),
            Str(String),
        }
        match Either::deserialize(d)? {
            Either::Num(n) => Ok(n),
            Either::Str(s) => s
                .parse()
                .map_err(|_| D::Error::custom(format!("bad node id {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_node_ids_travel_as_strings_and_accept_numbers() {
        let m: MemberSpec =
            serde_json::from_str(r#"{"nodeId": 42, "name": "a", "address": "h:1"}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.node_id, 42);
        let m: MemberSpec = serde_json::from_str(
            r#"{"nodeId": "18446744073709551615", "name": "a", "address": "h:1"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.node_id, u64::MAX);
        assert_eq!(
            serde_json::to_value(&m).unwrap_or_default()["nodeId"],
            "18446744073709551615"
        );
        assert!(
            serde_json::from_str::<MemberSpec>(r#"{"nodeId": "x", "name": "a", "address": "h"}"#)
                .is_err()
        );
    }
}
