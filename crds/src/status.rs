//! Observed state: what the operator last saw of a cluster and the one membership step it has
//! in flight. Written only by the operator, through the status subresource.
//!
//! Raft terms and indexes are `u64` in the sidecar; they are `i64` here because Kubernetes
//! schemas know only `int32`/`int64` (unsigned formats draw warnings and are not enforced).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Status of a `RaftCluster`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RaftClusterStatus {
    /// `metadata.generation` of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of the cluster's state.
    #[serde(default)]
    pub phase: ClusterPhase,
    /// Pods of the StatefulSet (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods, in string form (used by the scale subresource and HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The cluster a restored cluster's backup was taken from (`spec.bootstrap.fromBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_cluster_id: Option<String>,
    /// The backup it was restored from: snapshot, last log index and SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<RestoredFromStatus>,
    /// The last recovery from a permanent quorum loss asked for (annotation
    /// `consensus.unrdf.io/recover-from`): refused, in progress or completed, and what it may
    /// have lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStatus>,
    /// Identity of the Raft cluster, set once at bootstrap and never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Image of the members' sidecar container. `spec.sidecar.image` when it is set; otherwise
    /// the operator's default image when the cluster was created (or when the
    /// `consensus.unrdf.io/upgrade-sidecar` annotation last took a new value). Upgrading the
    /// operator does not change it, so no cluster restarts because its operator did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_image: Option<String>,
    /// Value of the `consensus.unrdf.io/upgrade-sidecar` annotation last acted on: a value not
    /// seen here moves the cluster onto the operator's default image (unless the spec names
    /// one) and its current pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_upgrade_request: Option<String>,
    /// Pod name of the current leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Raft term of the current leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<i64>,
    /// Leader's commit index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_index: Option<i64>,
    /// Committed membership, as the leader reports it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The one membership step in flight, recorded before it is acted on so a restarted
    /// operator resumes it instead of starting another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationStatus>,
    /// Scheduled backups (`spec.backup`): the last good one, the last failure, the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// Available, LeaderElected, QuorumAvailable, PartitionDetected, Degraded, Progressing,
    /// BackupReady.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Summary of a cluster's state (the `Phase` column).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Created; nothing is running yet.
    #[default]
    Pending,
    /// Pods are starting and the cluster is being initialized.
    Bootstrapping,
    /// Membership equals the desired size and every voter is healthy.
    Running,
    /// A member is being added or removed.
    Scaling,
    /// Pods are being restarted onto a new revision.
    Updating,
    /// The cluster has quorum but a voter is unhealthy or lagging.
    Degraded,
    /// No majority of voters is reachable: writes are impossible.
    QuorumLost,
}

/// The backup a cluster was restored from, as its first member reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredFromStatus {
    /// The backup's name and where it was (`s3://bucket/prefix/NAME`).
    pub backup: String,
    pub snapshot_id: String,
    pub last_log_index: i64,
    pub last_log_term: i64,
    /// SHA-256 of the image, lowercase hex.
    pub sha256: String,
}

/// A recovery from a permanent quorum loss.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStatus {
    /// The annotation's value this answers (a new value is a new request).
    pub request: String,
    /// The survivor the cluster is rebuilt from.
    pub member: String,
    pub state: RecoveryState,
    /// Why it was refused, or what the recovery kept and may have lost.
    pub message: String,
    /// When `state` was last set.
    pub at: Time,
    /// The survivor's last log entry when the recovery was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivor_last_log_index: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivor_last_log_term: Option<i64>,
    /// The highest commit index this operator saw before the quorum was lost. Entries above the
    /// survivor's last index, up to this one, were committed and are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_known_commit_index: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RecoveryState {
    /// Not carried out; `message` says why. Ask again with a new annotation value.
    Refused,
    /// The survivor is becoming the only voter.
    Recovering,
    /// The survivor leads alone; the other members are added one at a time.
    Completed,
}

/// What the operator knows of the cluster's backups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The newest backup that completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful: Option<BackupRecord>,
    /// When the last attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,
    /// Why the last attempt failed, when it did (cleared by the next success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<BackupFailure>,
    /// The next scheduled backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_at: Option<Time>,
    /// Value of the `consensus.unrdf.io/backup-now` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// When the operator first saw `spec.backup`: scheduled times before it do not count as
    /// missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_at: Option<Time>,
}

/// One backup in the bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Object name of the image (its manifest is `<name>.manifest.json`).
    pub name: String,
    /// `s3://bucket/prefix`.
    pub location: String,
    /// When it started.
    pub started_at: Time,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
    pub size_bytes: i64,
    /// The last Raft log index it includes.
    pub last_log_index: i64,
    /// The newest journal index it includes.
    pub journal_last_index: i64,
    /// SHA-256 of the image, lowercase hex.
    pub sha256: String,
}

/// A failed backup attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupFailure {
    pub at: Time,
    pub message: String,
}

/// One member of the committed membership.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Pod name.
    pub name: String,
    /// Raft node id (stable for the life of the member's volume).
    pub node_id: String,
    /// Voter or learner.
    pub role: MemberRole,
    /// Whether the leader hears from the member.
    pub healthy: bool,
    /// Highest log index the leader knows is replicated on the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_index: Option<i64>,
}

/// Role of a member in the committed membership.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Voter,
    Learner,
}

/// The membership step in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    /// What the step does.
    pub kind: OperationKind,
    /// Pod the step is about.
    pub name: String,
    /// Raft node id the step is about, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// How far the step has got.
    pub phase: OperationPhase,
    /// When the step was recorded.
    pub started_at: Time,
}

/// Kinds of membership step (one at a time per cluster).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationKind {
    /// Initialize the cluster on the lowest ordinal with all initial pods.
    Initialize,
    /// Add the next ordinal as a learner, then promote it to voter.
    AddMember,
    /// Remove the highest ordinal (scale down), then shrink the StatefulSet and drop its volume.
    RemoveMember,
    /// Remove the old node id of a pod whose volume was lost; the pod then rejoins through
    /// `AddMember` under its new node id, at the same size.
    ReplaceMember,
    /// Delete an outdated pod so it restarts on the new revision.
    RestartMember,
    /// Restore `spec.bootstrap.fromBackup` into the lowest ordinal, which then restarts as
    /// the only voter; the others are added one at a time.
    RestoreFromBackup,
    /// After a permanent quorum loss, on request: make the named survivor the only voter;
    /// the others are then added one at a time.
    RecoverFromMember,
}

/// Progress of the step in flight (docs/operator.md).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationPhase {
    /// Recorded, not acted on yet.
    Recorded,
    /// Changing the StatefulSet's replica count.
    ResizingStatefulSet,
    /// Waiting for the pod to become Ready.
    AwaitingPod,
    /// Asking the leader to add the member as a learner.
    AddingLearner,
    /// Waiting for the learner to catch up with the leader's log.
    AwaitingCatchUp,
    /// Asking the leader to promote the learner to voter.
    Promoting,
    /// Asking the leader to remove the member.
    RemovingMember,
    /// Waiting for the membership change to commit and leave joint configuration.
    AwaitingCommit,
    /// Deleting the removed member's volume claim.
    DeletingVolume,
    /// Deleting an outdated pod.
    DeletingPod,
    /// Waiting for the restarted member to rejoin and catch up.
    AwaitingRejoin,
}
