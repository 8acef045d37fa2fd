//! Kubernetes Events: one for each completed step and each alert transition (leader change,
//! quorum lost/regained, partition, blocked change), with reasons from fixed sets.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use raft_crds::{OperationKind, RaftClusterStatus, RecoveryState};

use super::plan::{Outcome, Plan, Step};
use super::status::{DEGRADED, PARTITION_DETECTED, QUORUM_AVAILABLE, STEP_STUCK};
use crate::error::Error;
use crate::resources::ca_rotation::RotationStep;

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}

/// The member's pod as the Event's related object: the recorder folds Events with the same
/// reason and related object into one series, so each member keeps its own.
fn about_pod(mut e: Event, namespace: Option<&str>, pod: &str) -> Event {
    e.secondary = Some(ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(pod.to_owned()),
        namespace: namespace.map(str::to_owned),
        ..ObjectReference::default()
    });
    e
}

fn condition_is(status: &RaftClusterStatus, type_: &str, value: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == value)
}

/// Events for what this reconcile did and what changed since the previous status.
pub fn announce(
    plan: &Plan,
    namespace: Option<&str>,
    previous: &RaftClusterStatus,
    now: &RaftClusterStatus,
) -> Vec<Event> {
    let mut out = Vec::new();
    match &plan.step {
        Step::Record(op) => {
            let (reason, what) = match op.kind {
                OperationKind::Initialize => ("Bootstrapping", "initialize the cluster on"),
                OperationKind::RestoreFromBackup => {
                    ("Bootstrapping", "restore spec.bootstrap.fromBackup into")
                }
                OperationKind::RecoverFromMember => (
                    "Recovering",
                    "recover the cluster (lost quorum) from the survivor",
                ),
                OperationKind::AddMember => ("AddingMember", "add"),
                OperationKind::RemoveMember => ("RemovingMember", "remove"),
                OperationKind::ReplaceMember => ("ReplacingMember", "replace the lost member of"),
                OperationKind::RestartMember => ("RollingUpdate", "restart"),
            };
            out.push(about_pod(
                event(
                    EventType::Normal,
                    reason,
                    "RecordStep",
                    format!("recorded step: {what} {}", op.name),
                ),
                namespace,
                &op.name,
            ));
        }
        Step::Finish(outcome) => {
            let pod = match outcome {
                Outcome::Initialized { .. } | Outcome::Restored { .. } => None,
                Outcome::MemberAdded { name, .. }
                | Outcome::Recovered { name, .. }
                | Outcome::MemberRemoved { name, .. }
                | Outcome::MemberReplaced { name, .. }
                | Outcome::MemberRestarted { name }
                | Outcome::Abandoned { name, .. } => Some(name.as_str()),
            };
            let (reason, note) = match outcome {
                Outcome::Initialized { cluster_id } => (
                    "ClusterInitialized",
                    format!("cluster {cluster_id} initialized"),
                ),
                Outcome::Restored { cluster_id, from } => (
                    "ClusterRestored",
                    match from {
                        Some(f) => format!(
                            "cluster {cluster_id} restored from snapshot {} of cluster {} (log \
                             index {}); the other members join one at a time",
                            f.snapshot_id,
                            f.parent_cluster_id.as_deref().unwrap_or("?"),
                            f.last_log_index
                        ),
                        None => format!("cluster {cluster_id} restored from a backup"),
                    },
                ),
                Outcome::Recovered { name, node_id } => (
                    "ClusterRecovered",
                    format!(
                        "{name} (now node {node_id}) leads as the only voter; the other members \
                         are added one at a time (see status.recovery for what may be lost)"
                    ),
                ),
                Outcome::MemberAdded { name, node_id } => {
                    ("MemberAdded", format!("{name} (node {node_id}) is a voter"))
                }
                Outcome::MemberRemoved { name, node_id } => (
                    "MemberRemoved",
                    format!("{name} (node {node_id}) removed; its volume claim is gone"),
                ),
                Outcome::MemberReplaced { name, node_id } => (
                    "MemberRemoved",
                    format!(
                        "old node {node_id} of {name} removed (volume lost); {name} rejoins as a new member"
                    ),
                ),
                Outcome::MemberRestarted { name } => (
                    "MemberRestarted",
                    format!("{name} restarted on the new revision and caught up"),
                ),
                Outcome::Abandoned { kind, name, why } => (
                    "StepAbandoned",
                    format!(
                        "{} {name} abandoned before anything irreversible: {why}",
                        match kind {
                            OperationKind::AddMember => "adding",
                            OperationKind::RemoveMember => "removing",
                            _ => "the step on",
                        }
                    ),
                ),
            };
            let e = event(EventType::Normal, reason, "FinishStep", note);
            out.push(match pod {
                Some(pod) => about_pod(e, namespace, pod),
                None => e,
            });
        }
        Step::Wait {
            blocked,
            operation: None,
        } if blocked.reason.blocks_change() => {
            out.push(event(
                EventType::Warning,
                "ScaleBlocked",
                "Wait",
                blocked.message.clone(),
            ));
        }
        _ => {}
    }
    if let Some(r) = &now.recovery
        && r.state == RecoveryState::Refused
        && previous
            .recovery
            .as_ref()
            .is_none_or(|p| p.request != r.request || p.state != RecoveryState::Refused)
    {
        out.push(event(
            EventType::Warning,
            "RecoveryRefused",
            "Recover",
            format!("recovery from {} refused: {}", r.member, r.message),
        ));
    }
    if previous.leader.is_some() && now.leader.is_some() && previous.leader != now.leader {
        out.push(event(
            EventType::Normal,
            "LeaderChanged",
            "Observe",
            format!(
                "leader {} → {}",
                previous.leader.as_deref().unwrap_or("-"),
                now.leader.as_deref().unwrap_or("-")
            ),
        ));
    }
    if condition_is(previous, QUORUM_AVAILABLE, "True")
        && condition_is(now, QUORUM_AVAILABLE, "False")
    {
        out.push(event(
            EventType::Warning,
            "QuorumLost",
            "Observe",
            condition_message(now, QUORUM_AVAILABLE),
        ));
    }
    if condition_is(previous, QUORUM_AVAILABLE, "False")
        && condition_is(now, QUORUM_AVAILABLE, "True")
    {
        out.push(event(
            EventType::Normal,
            "QuorumRestored",
            "Observe",
            condition_message(now, QUORUM_AVAILABLE),
        ));
    }
    if let (Some(from), Some(to)) = (&previous.sidecar_image, &now.sidecar_image)
        && from != to
    {
        out.push(event(
            EventType::Normal,
            "SidecarImageChanged",
            "Reconcile",
            format!("sidecar image {from} → {to}: members restart onto it one at a time"),
        ));
    }
    out.extend(backup_events(previous, now));
    if degraded_for(now, STEP_STUCK) && !degraded_for(previous, STEP_STUCK) {
        out.push(event(
            EventType::Warning,
            STEP_STUCK,
            "Observe",
            condition_message(now, DEGRADED),
        ));
    }
    if !condition_is(previous, PARTITION_DETECTED, "True")
        && condition_is(now, PARTITION_DETECTED, "True")
    {
        out.push(event(
            EventType::Warning,
            "PartitionDetected",
            "Observe",
            condition_message(now, PARTITION_DETECTED),
        ));
    }
    out
}

/// Whether `Degraded` is True for `reason`.
fn degraded_for(s: &RaftClusterStatus, reason: &str) -> bool {
    s.conditions
        .iter()
        .any(|c| c.type_ == DEGRADED && c.status == "True" && c.reason == reason)
}

fn condition_message(s: &RaftClusterStatus, type_: &str) -> String {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// A step of a CA rotation.
pub fn ca_rotation(step: RotationStep) -> Event {
    event(
        EventType::Normal,
        step.reason(),
        "RotateCA",
        step.note().to_owned(),
    )
}

/// The reconcile cannot go on (`reason`: why, a static string such as `IdentityLost`, the
/// token Secret missing while the cluster's identity exists).
pub fn blocked(reason: &'static str, mut note: String) -> Event {
    truncate(&mut note);
    event(EventType::Warning, reason, "Reconcile", note)
}

/// Event notes are limited to 1 kB; cut on a character boundary.
fn truncate(note: &mut String) {
    let cut = (0..=note.len().min(1000))
        .rev()
        .find(|i| note.is_char_boundary(*i))
        .unwrap_or(0);
    note.truncate(cut);
}

/// The Event for a failed reconcile (reason is the error's static category).
/// A restore of `spec.bootstrap.fromBackup` failed; the next attempt follows after `retry_in`.
pub fn restore_failed(message: &str, retry_in: std::time::Duration) -> Event {
    let mut note = format!(
        "{message}; trying again in {}",
        humantime::format_duration(std::time::Duration::from_secs(retry_in.as_secs()))
    );
    truncate(&mut note);
    event(EventType::Warning, "RestoreFailed", "Restore", note)
}

pub fn failure(error: &Error) -> Event {
    let mut note = error.to_string();
    truncate(&mut note);
    event(EventType::Warning, error.category(), "Reconcile", note)
}

/// `BackupCompleted` when `status.backup.lastSuccessful` names a new backup, `BackupFailed`
/// when `lastFailure` records a new failure.
fn backup_events(previous: &RaftClusterStatus, now: &RaftClusterStatus) -> Vec<Event> {
    let (before, after) = (previous.backup.as_ref(), now.backup.as_ref());
    let mut out = Vec::new();
    if let Some(done) = after.and_then(|b| b.last_successful.as_ref())
        && before
            .and_then(|b| b.last_successful.as_ref())
            .is_none_or(|b| b.name != done.name)
    {
        out.push(event(
            EventType::Normal,
            "BackupCompleted",
            "Backup",
            format!(
                "{} in {}: {} bytes up to log index {}, in {} ms",
                done.name, done.location, done.size_bytes, done.last_log_index, done.duration_ms
            ),
        ));
    }
    if let Some(failed) = after.and_then(|b| b.last_failure.as_ref())
        && before.and_then(|b| b.last_failure.as_ref()) != Some(failed)
    {
        out.push(event(
            EventType::Warning,
            "BackupFailed",
            "Backup",
            failed.message.clone(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use raft_crds::{BackupFailure, BackupRecord, BackupStatus};

    use super::*;

    fn with_backup(done: Option<&str>, failed: Option<&str>) -> RaftClusterStatus {
        let at = Time("2026-12-06T03:00:00Z".parse().unwrap());
        RaftClusterStatus {
            backup: Some(BackupStatus {
                last_successful: done.map(|name| BackupRecord {
                    name: name.into(),
                    location: "s3://b/p".into(),
                    started_at: at.clone(),
                    duration_ms: 900,
                    size_bytes: 4096,
                    last_log_index: 77,
                    journal_last_index: 70,
                    sha256: "ab".into(),
                }),
                last_failure: failed.map(|message| BackupFailure {
                    at: at.clone(),
                    message: message.into(),
                }),
                ..BackupStatus::default()
            }),
            ..RaftClusterStatus::default()
        }
    }

    #[test]
    fn a_new_backup_and_a_new_failure_are_announced_once() {
        let none = RaftClusterStatus::default();
        let first = with_backup(Some("a.rsnp"), None);
        let reasons = |e: Vec<Event>| e.into_iter().map(|e| e.reason).collect::<Vec<_>>();
        assert_eq!(reasons(backup_events(&none, &first)), ["BackupCompleted"]);
        assert!(backup_events(&first, &first).is_empty(), "nothing new");
        let failed = with_backup(Some("a.rsnp"), Some("Secret s3 not found"));
        let events = backup_events(&first, &failed);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].reason.as_str(), events[0].type_),
            ("BackupFailed", EventType::Warning)
        );
        assert!(backup_events(&failed, &failed).is_empty());
        let second = with_backup(Some("b.rsnp"), None);
        assert_eq!(
            reasons(backup_events(&failed, &second)),
            ["BackupCompleted"]
        );
    }
}
