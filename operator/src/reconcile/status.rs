//! The status stage: what the operator tells users and alerting. Pure: conditions, phase and
//! the member list are computed from the observation and the plan; `reconcile` writes them
//! through the status subresource.
//!
//! Conditions (docs/operator.md "Status, conditions, Events, metrics") keep
//! `lastTransitionTime` unless their status flips, and carry the generation they were computed
//! for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use raft_api::admin::NodeRole;
use raft_api::daemon::{MemberRole as ApiRole, PartitionState};
use raft_crds::{
    ClusterPhase, MemberRole, MemberStatus, OperationKind, OperationStatus, RaftClusterStatus,
    RecoveryState, RecoveryStatus,
};

use super::model::{Observed, is_caught_up};
use super::plan::{Outcome, Plan, Step, recover};

/// A partition reported for longer than this escalates (`PartitionPersistent`).
pub const PARTITION_ESCALATION: SignedDuration = SignedDuration::from_secs(60);
/// Replication p99 above this is a warning.
pub const MAX_COMMIT_P99_SECONDS: f64 = 1.0;
/// Success rate below this is a warning.
pub const MIN_SUCCESS_RATE: f64 = 0.99;

pub const AVAILABLE: &str = "Available";
pub const LEADER_ELECTED: &str = "LeaderElected";
pub const QUORUM_AVAILABLE: &str = "QuorumAvailable";
pub const PARTITION_DETECTED: &str = "PartitionDetected";
pub const DEGRADED: &str = "Degraded";
pub const PROGRESSING: &str = "Progressing";

/// One condition as computed, before timestamps are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

fn verdict(
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: impl Into<String>,
) -> Verdict {
    Verdict {
        type_,
        status,
        reason,
        message: message.into(),
    }
}

/// The new status: `operation` and `cluster_id` are what the reconcile decided to record.
pub fn build(
    o: &Observed,
    plan: &Plan,
    previous: &RaftClusterStatus,
    operation: Option<OperationStatus>,
    cluster_id: Option<String>,
) -> RaftClusterStatus {
    let verdicts = verdicts(o, plan, previous, operation.as_ref());
    let conditions = verdicts
        .iter()
        .map(|v| condition(v, previous, o.generation, o.now))
        .collect();
    let leader = o.leader.as_ref();
    let members = leader.map_or_else(
        || previous.members.clone(),
        |l| {
            l.cluster
                .members
                .iter()
                .map(|m| MemberStatus {
                    name: m.name.clone(),
                    node_id: m.node_id.clone(),
                    role: match m.role {
                        ApiRole::Voter => MemberRole::Voter,
                        ApiRole::Learner => MemberRole::Learner,
                    },
                    healthy: m.healthy,
                    matched_index: m.matched_index.and_then(|i| i64::try_from(i).ok()),
                })
                .collect::<Vec<_>>()
        },
    );
    let mut members = members;
    members.sort_by_key(|m| {
        (
            o.names.ordinal_of(&m.name).unwrap_or(u32::MAX),
            m.name.clone(),
        )
    });
    RaftClusterStatus {
        observed_generation: o.generation,
        phase: phase(o, &verdicts, operation.as_ref(), cluster_id.is_some()),
        replicas: o.pods.len() as i32,
        ready_replicas: o.pods.values().filter(|p| p.ready).count() as i32,
        selector: Some(o.names.selector_string()),
        cluster_id,
        parent_cluster_id: previous.parent_cluster_id.clone(),
        restored_from: previous.restored_from.clone(),
        recovery: recovery(o, plan, previous),
        sidecar_image: previous.sidecar_image.clone(),
        sidecar_upgrade_request: previous.sidecar_upgrade_request.clone(),
        leader: leader.map(|l| l.pod.clone()),
        term: leader
            .map(|l| l.cluster.term)
            .or(previous.term.map(|t| t as u64))
            .and_then(|t| i64::try_from(t).ok()),
        // Kept while no leader answers: after a quorum loss it is the last commit index seen,
        // what a recovery compares its survivor against.
        commit_index: leader
            .and_then(|l| i64::try_from(l.cluster.commit_index).ok())
            .or(previous.commit_index),
        members,
        operation,
        backup: None,
        conditions,
    }
}

/// `status.recovery`: the answer to a new request (refused, or recovering from the survivor),
/// completed when the recovery finishes, else as it was.
fn recovery(o: &Observed, plan: &Plan, previous: &RaftClusterStatus) -> Option<RecoveryStatus> {
    let now = Time(o.now);
    let commit = o.recorded_commit_index.and_then(|i| i64::try_from(i).ok());
    if let Some(request) = o.recovery_request.as_ref().filter(|_| !o.paused) {
        let member = recover::requested_pod(request).to_owned();
        return Some(match recover::decide(o) {
            Some(Ok(s)) => RecoveryStatus {
                request: request.clone(),
                member: s.pod.clone(),
                state: RecoveryState::Recovering,
                message: format!(
                    "recovering from {} (last log index {}, term {}); the last commit index this \
                     operator saw is {}",
                    s.pod,
                    s.last_log_index,
                    s.last_log_term,
                    commit.map_or_else(|| "unknown".to_owned(), |c| c.to_string())
                ),
                at: now,
                survivor_last_log_index: i64::try_from(s.last_log_index).ok(),
                survivor_last_log_term: i64::try_from(s.last_log_term).ok(),
                last_known_commit_index: commit,
            },
            Some(Err(why)) => RecoveryStatus {
                request: request.clone(),
                member,
                state: RecoveryState::Refused,
                message: why,
                at: now,
                survivor_last_log_index: None,
                survivor_last_log_term: None,
                last_known_commit_index: commit,
            },
            None => return previous.recovery.clone(),
        });
    }
    match (&plan.step, &previous.recovery) {
        (Step::Finish(Outcome::Recovered { .. }), Some(r)) => Some(RecoveryStatus {
            state: RecoveryState::Completed,
            message: what_was_kept(r),
            at: now,
            ..r.clone()
        }),
        (
            Step::Finish(Outcome::Abandoned {
                kind: OperationKind::RecoverFromMember,
                why,
                ..
            }),
            Some(r),
        ) => Some(RecoveryStatus {
            state: RecoveryState::Refused,
            message: format!("given up: {why}"),
            at: now,
            ..r.clone()
        }),
        _ => previous.recovery.clone(),
    }
}

/// The survivor refused the recovery it was asked for (its own check: it is not cut off from a
/// quorum): the request is answered `Refused` with its reason.
pub fn recovery_refused(status: &mut RaftClusterStatus, why: &str, now: Timestamp) {
    if let Some(r) = &mut status.recovery {
        r.state = RecoveryState::Refused;
        r.message = format!("the survivor refused: {why}");
        r.at = Time(now);
    }
}

/// What a completed recovery kept, and what it lost as far as the operator can tell.
fn what_was_kept(r: &RecoveryStatus) -> String {
    let member = &r.member;
    match (r.survivor_last_log_index, r.last_known_commit_index) {
        (Some(kept), Some(commit)) if commit > kept => format!(
            "recovered from {member}: log entries {}..={commit} were committed (this operator \
             saw commit index {commit}) but {member} never had them, and they are lost, as is \
             anything the lost members committed after that",
            kept + 1
        ),
        (Some(kept), Some(commit)) => format!(
            "recovered from {member}, which held every entry committed as far as this operator \
             saw (commit index {commit}, its last index {kept}); only what the lost members \
             committed after the operator last looked can be lost"
        ),
        _ => format!("recovered from {member}"),
    }
}

/// Reason of `Progressing` while a failed restore of `spec.bootstrap.fromBackup` waits for its
/// next attempt.
pub const RESTORE_FAILED: &str = "RestoreFailed";

/// `Progressing` says why the restore failed and when it is tried again.
pub fn restore_failed(status: &mut RaftClusterStatus, waiting: &crate::backup::restore::Waiting) {
    if let Some(c) = status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == PROGRESSING)
    {
        c.reason = RESTORE_FAILED.to_owned();
        c.message = format!(
            "restoring spec.bootstrap.fromBackup failed ({} time(s)): {}; next attempt in {}s",
            waiting.failures,
            waiting.message,
            waiting.retry_in.as_secs()
        );
    }
}

/// Reason of `Degraded` when a recorded step has not finished within [`STEP_STUCK_AFTER`].
pub const STEP_STUCK: &str = "StepStuck";
/// How long a recorded step may take before `Degraded` says it is stuck. Longer than any step
/// takes when it can make progress (a learner catching up on a large snapshot included), so
/// the condition means a person should look.
pub const STEP_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Reason of `Degraded` when the token Secret is gone while the cluster's identity exists.
pub const IDENTITY_LOST: &str = "IdentityLost";

/// With `spec.tls.issuerRef`: certificates the cluster needs are not issued yet.
pub const CERTIFICATES_PENDING: &str = "CertificatesPending";

/// The status while the reconcile cannot go on (the cluster's identity lost, certificates not
/// issued): the previous one with `Degraded` set (`reason`) and the phase `Degraded`; nothing
/// else is known to have changed.
pub fn blocked(
    previous: &RaftClusterStatus,
    generation: Option<i64>,
    now: Timestamp,
    reason: &'static str,
    message: String,
) -> RaftClusterStatus {
    let v = verdict(DEGRADED, true, reason, message);
    let mut status = previous.clone();
    status.conditions.retain(|c| c.type_ != DEGRADED);
    status
        .conditions
        .push(condition(&v, previous, generation, now));
    status.phase = ClusterPhase::Degraded;
    status.observed_generation = generation;
    status
}

fn condition(
    v: &Verdict,
    previous: &RaftClusterStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if v.status { "True" } else { "False" };
    let last = previous
        .conditions
        .iter()
        .find(|c| c.type_ == v.type_)
        .filter(|c| c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: v.type_.to_owned(),
        status: status.to_owned(),
        reason: v.reason.to_owned(),
        message: v.message.clone(),
        last_transition_time: last,
        observed_generation: generation,
    }
}

/// All six conditions, in a fixed order.
pub fn verdicts(
    o: &Observed,
    plan: &Plan,
    previous: &RaftClusterStatus,
    operation: Option<&OperationStatus>,
) -> Vec<Verdict> {
    let leader_elected = leader_elected(o);
    let quorum = quorum_available(o);
    let available = if leader_elected.status && quorum.status {
        verdict(
            AVAILABLE,
            true,
            "LeaderAndQuorum",
            "a leader is elected and has a quorum",
        )
    } else if !leader_elected.status {
        verdict(
            AVAILABLE,
            false,
            leader_elected.reason,
            leader_elected.message.clone(),
        )
    } else {
        verdict(AVAILABLE, false, quorum.reason, quorum.message.clone())
    };
    vec![
        available,
        leader_elected,
        quorum,
        partition_detected(o, previous),
        degraded(o, plan),
        progressing(plan, operation),
    ]
}

fn leader_elected(o: &Observed) -> Verdict {
    let statuses: Vec<_> = o.pods.values().filter_map(|p| p.status()).collect();
    if statuses.iter().all(|s| !s.initialized) {
        return verdict(
            LEADER_ELECTED,
            false,
            "NotInitialized",
            "the cluster is not initialized yet",
        );
    }
    let top_term = statuses.iter().map(|s| s.term).max().unwrap_or(0);
    let leaders: Vec<&str> = statuses
        .iter()
        .filter(|s| s.role == NodeRole::Leader && s.term == top_term)
        .map(|s| s.name.as_str())
        .collect();
    match leaders.as_slice() {
        [one] => verdict(
            LEADER_ELECTED,
            true,
            "LeaderElected",
            format!("{one} leads term {top_term}"),
        ),
        [] => verdict(
            LEADER_ELECTED,
            false,
            "NoLeader",
            format!("no reachable member leads term {top_term}"),
        ),
        many => verdict(
            LEADER_ELECTED,
            false,
            "MultipleLeaders",
            format!("members {} all claim term {top_term}", many.join(", ")),
        ),
    }
}

fn quorum_available(o: &Observed) -> Verdict {
    let Some(leader) = &o.leader else {
        return verdict(
            QUORUM_AVAILABLE,
            false,
            "NoLeader",
            "no leader answers: writes are not possible",
        );
    };
    let voters: Vec<_> = leader.voters().collect();
    let healthy = voters.iter().filter(|m| m.healthy).count();
    let majority = voters.len() / 2 + 1;
    if leader.has_quorum() && healthy >= majority {
        verdict(
            QUORUM_AVAILABLE,
            true,
            "QuorumAvailable",
            format!("{healthy} of {} voters healthy", voters.len()),
        )
    } else {
        verdict(
            QUORUM_AVAILABLE,
            false,
            "QuorumLost",
            format!(
                "{healthy} of {} voters healthy (need {majority}); leader reports {:?}",
                voters.len(),
                leader.status.partition_state
            ),
        )
    }
}

fn partition_detected(o: &Observed, previous: &RaftClusterStatus) -> Verdict {
    let statuses: Vec<_> = o
        .pods
        .values()
        .filter_map(|p| p.status())
        .filter(|s| s.initialized && s.role != NodeRole::Removed)
        .collect();
    let cut_off: Vec<&str> = statuses
        .iter()
        .filter(|s| {
            matches!(
                s.partition_state,
                PartitionState::Minority | PartitionState::Leaderless
            )
        })
        .map(|s| s.name.as_str())
        .collect();
    let mut leaders: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s.leader_id.as_deref())
        .collect();
    leaders.sort_unstable();
    leaders.dedup();
    let message = if !cut_off.is_empty() {
        Some(format!(
            "members report a partition: {}",
            cut_off.join(", ")
        ))
    } else if leaders.len() > 1 {
        Some(format!(
            "members disagree on the leader: {}",
            leaders.join(", ")
        ))
    } else {
        None
    };
    let Some(message) = message else {
        return verdict(
            PARTITION_DETECTED,
            false,
            "NoPartition",
            "every member agrees on the leader",
        );
    };
    let since = previous
        .conditions
        .iter()
        .find(|c| c.type_ == PARTITION_DETECTED && c.status == "True")
        .map(|c| c.last_transition_time.0);
    let persistent = since.is_some_and(|t| o.now.duration_since(t) >= PARTITION_ESCALATION);
    if persistent {
        verdict(
            PARTITION_DETECTED,
            true,
            "PartitionPersistent",
            format!("{message} (for over 60 s)"),
        )
    } else {
        verdict(PARTITION_DETECTED, true, "PartitionDetected", message)
    }
}

fn degraded(o: &Observed, plan: &Plan) -> Verdict {
    let mut problems = Vec::new();
    let mut reason = "Healthy";
    if let Some(leader) = &o.leader {
        let unhealthy: Vec<&str> = leader
            .voters()
            .filter(|m| !is_caught_up(m))
            .map(|m| m.name.as_str())
            .collect();
        if !unhealthy.is_empty() {
            reason = "MemberUnhealthy";
            problems.push(format!(
                "voters unhealthy or lagging: {}",
                unhealthy.join(", ")
            ));
        }
        if leader.cluster.joint && o.operation.is_none() {
            reason = "StuckJointConfiguration";
            problems.push("joint configuration with no step in flight".to_owned());
        }
        let size = leader.voters().count() as u32;
        let blocked = matches!(&plan.step, Step::Wait { blocked, operation: None } if blocked.reason.blocks_change() || blocked.reason == super::plan::WaitReason::Paused);
        if size != o.desired_replicas && blocked {
            reason = "MembershipNotDesired";
            problems.push(format!(
                "{size} voters, {} desired, and the change is blocked",
                o.desired_replicas
            ));
        }
        if let Some(p99) = leader
            .health
            .commit_p99_seconds
            .filter(|p| *p > MAX_COMMIT_P99_SECONDS)
        {
            reason = "SlowReplication";
            problems.push(format!(
                "replication p99 up to {p99} s (limit {MAX_COMMIT_P99_SECONDS} s)"
            ));
        }
        if let Some(rate) = leader.health.success_rate.filter(|r| *r < MIN_SUCCESS_RATE) {
            reason = "LowSuccessRate";
            problems.push(format!(
                "write success rate {:.2} % (limit 99 %)",
                rate * 100.0
            ));
        }
    }
    if let Some(op) = &o.operation {
        let age = o.now.duration_since(op.started_at.0);
        let stuck = SignedDuration::try_from(STEP_STUCK_AFTER).is_ok_and(|limit| age > limit);
        if stuck {
            reason = STEP_STUCK;
            problems.push(format!(
                "step {:?} of {} recorded {}s ago has not finished (phase {:?})",
                op.kind,
                op.name,
                age.as_secs(),
                op.phase
            ));
        }
    }
    if problems.is_empty() {
        verdict(
            DEGRADED,
            false,
            "Healthy",
            "every voter is healthy and caught up",
        )
    } else {
        verdict(DEGRADED, true, reason, problems.join("; "))
    }
}

fn progressing(plan: &Plan, operation: Option<&OperationStatus>) -> Verdict {
    let kind_reason = |k: OperationKind| match k {
        OperationKind::Initialize | OperationKind::RestoreFromBackup => "Bootstrapping",
        OperationKind::RecoverFromMember => "Recovering",
        OperationKind::AddMember => "AddingMember",
        OperationKind::RemoveMember => "RemovingMember",
        OperationKind::ReplaceMember => "ReplacingMember",
        OperationKind::RestartMember => "RollingUpdate",
    };
    match (&plan.step, operation) {
        (Step::Wait { blocked, .. }, _) if blocked.reason.blocks_change() => verdict(
            PROGRESSING,
            true,
            blocked.reason.as_str(),
            blocked.message.clone(),
        ),
        (Step::Wait { blocked, .. }, Some(op)) => verdict(
            PROGRESSING,
            true,
            kind_reason(op.kind),
            format!("{} {}: {}", kind_reason(op.kind), op.name, blocked.message),
        ),
        (Step::Wait { blocked, .. }, None) => verdict(
            PROGRESSING,
            true,
            blocked.reason.as_str(),
            blocked.message.clone(),
        ),
        (_, Some(op)) => verdict(
            PROGRESSING,
            true,
            kind_reason(op.kind),
            format!("{} {} ({:?})", kind_reason(op.kind), op.name, op.phase),
        ),
        (Step::Idle, None) => verdict(
            PROGRESSING,
            false,
            "Reconciled",
            "membership and pods match the spec",
        ),
        (_, None) => verdict(PROGRESSING, false, "Reconciled", "the last step finished"),
    }
}

fn phase(
    o: &Observed,
    verdicts: &[Verdict],
    operation: Option<&OperationStatus>,
    bootstrapped: bool,
) -> ClusterPhase {
    let is = |t: &str| verdicts.iter().any(|v| v.type_ == t && v.status);
    if o.pods.is_empty() && !bootstrapped {
        return ClusterPhase::Pending;
    }
    if !bootstrapped {
        return ClusterPhase::Bootstrapping;
    }
    if !is(QUORUM_AVAILABLE) {
        return ClusterPhase::QuorumLost;
    }
    match operation.map(|op| op.kind) {
        Some(OperationKind::Initialize | OperationKind::RestoreFromBackup) => {
            ClusterPhase::Bootstrapping
        }
        Some(OperationKind::RecoverFromMember) => ClusterPhase::QuorumLost,
        Some(
            OperationKind::AddMember | OperationKind::RemoveMember | OperationKind::ReplaceMember,
        ) => ClusterPhase::Scaling,
        Some(OperationKind::RestartMember) => ClusterPhase::Updating,
        None if is(DEGRADED) => ClusterPhase::Degraded,
        None => ClusterPhase::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::model::fixtures::*;
    use crate::reconcile::plan::plan;

    fn status_of(o: &Observed, previous: &RaftClusterStatus) -> RaftClusterStatus {
        let p = plan(o);
        build(o, &p, previous, o.operation.clone(), o.cluster_id.clone())
    }

    fn cond<'a>(s: &'a RaftClusterStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_recovery_request_is_answered_once_and_its_completion_says_what_was_lost() {
        use raft_crds::RecoveryState;
        // Refused while the cluster is healthy; the answer names the request.
        let mut o = healthy(3);
        o.recovery_request = Some("rc-0@1".into());
        let s = status_of(&o, &RaftClusterStatus::default());
        let r = s.recovery.unwrap();
        assert_eq!(
            (r.state, r.request.as_str()),
            (RecoveryState::Refused, "rc-0@1")
        );
        assert!(
            r.message.contains("quorum may be reachable"),
            "{}",
            r.message
        );

        // Accepted once the majority is gone: the survivor's log and the last commit seen.
        let mut o = lost_majority(45);
        o.recovery_request = Some("rc-0@2".into());
        let accepted = status_of(&o, &RaftClusterStatus::default());
        let r = accepted.recovery.clone().unwrap();
        assert_eq!(r.state, RecoveryState::Recovering);
        assert_eq!(
            (r.survivor_last_log_index, r.last_known_commit_index),
            (Some(45), Some(50))
        );

        // Completed: entries 46..=50 were committed and the survivor never had them.
        o.recovery_request = None;
        let mut done = healthy(1);
        done.operation = Some(op(
            OperationKind::RecoverFromMember,
            0,
            raft_crds::OperationPhase::AwaitingCommit,
        ));
        let mut leader = node_status(0, NodeRole::Leader, true);
        leader.node_id = "777".into();
        done.leader.as_mut().unwrap().status = leader;
        let s = status_of(&done, &accepted);
        let r = s.recovery.unwrap();
        assert_eq!(r.state, RecoveryState::Completed);
        assert!(r.message.contains("46..=50"), "{}", r.message);
    }

    #[test]
    fn a_step_recorded_longer_ago_than_the_limit_is_degraded_step_stuck() {
        let mut o = healthy(3);
        o.operation = Some(op(
            raft_crds::OperationKind::AddMember,
            3,
            raft_crds::OperationPhase::AwaitingCatchUp,
        ));
        o.now = Timestamp::from_second(5 * 60).unwrap();
        assert_ne!(
            cond(&status_of(&o, &Default::default()), DEGRADED).reason,
            STEP_STUCK
        );
        o.now = Timestamp::from_second(11 * 60).unwrap();
        let s = status_of(&o, &Default::default());
        let d = cond(&s, DEGRADED);
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", STEP_STUCK));
        assert!(
            d.message.contains("rc-3") && d.message.contains("660s"),
            "{}",
            d.message
        );
        let events = super::super::events::announce(&plan(&o), None, &Default::default(), &s);
        assert!(
            events.iter().any(|e| e.reason == STEP_STUCK),
            "an Event when it becomes stuck"
        );
    }

    #[test]
    fn a_lost_identity_is_degraded_and_keeps_everything_else() {
        let before = status_of(&healthy(3), &RaftClusterStatus::default());
        let s = blocked(
            &before,
            Some(7),
            Timestamp::now(),
            IDENTITY_LOST,
            "gone".into(),
        );
        assert_eq!(s.phase, ClusterPhase::Degraded);
        let d = cond(&s, DEGRADED);
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", IDENTITY_LOST)
        );
        assert_eq!(s.conditions.len(), before.conditions.len());
        assert_eq!(s.cluster_id, before.cluster_id);
        assert_eq!(s.members, before.members);
    }

    #[test]
    fn a_healthy_cluster_is_available_running_and_not_progressing() {
        let s = status_of(&healthy(3), &RaftClusterStatus::default());
        assert_eq!(s.phase, ClusterPhase::Running);
        for (t, want) in [
            (AVAILABLE, "True"),
            (LEADER_ELECTED, "True"),
            (QUORUM_AVAILABLE, "True"),
            (PARTITION_DETECTED, "False"),
            (DEGRADED, "False"),
            (PROGRESSING, "False"),
        ] {
            assert_eq!(cond(&s, t).status, want, "{t}");
            assert_eq!(cond(&s, t).observed_generation, Some(1));
        }
        assert_eq!(s.leader.as_deref(), Some("rc-0"));
        assert_eq!(s.members.len(), 3);
        assert_eq!(s.term, Some(3));
    }

    #[test]
    fn losing_two_of_three_voters_is_quorum_lost_and_not_available() {
        let mut o = healthy(3);
        o.member_mut(1).healthy = false;
        o.member_mut(2).healthy = false;
        o.leader_mut().status.partition_state = PartitionState::Minority;
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(cond(&s, QUORUM_AVAILABLE).status, "False");
        assert_eq!(cond(&s, QUORUM_AVAILABLE).reason, "QuorumLost");
        assert_eq!(cond(&s, AVAILABLE).status, "False");
        assert_eq!(s.phase, ClusterPhase::QuorumLost);
    }

    #[test]
    fn no_leader_is_reported_as_such() {
        let mut o = healthy(3);
        o.leader = None;
        for p in o.pods.values_mut() {
            if let Ok(s) = &mut p.node {
                s.role = NodeRole::Follower;
            }
        }
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(cond(&s, LEADER_ELECTED).reason, "NoLeader");
        assert_eq!(cond(&s, AVAILABLE).status, "False");
    }

    #[test]
    fn one_unhealthy_voter_is_degraded_but_available() {
        let mut o = healthy(3);
        o.member_mut(2).healthy = false;
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(cond(&s, DEGRADED).status, "True");
        assert_eq!(cond(&s, DEGRADED).reason, "MemberUnhealthy");
        assert_eq!(cond(&s, AVAILABLE).status, "True");
        assert_eq!(s.phase, ClusterPhase::Degraded);
    }

    #[test]
    fn slow_replication_and_failing_writes_are_warnings() {
        let mut o = healthy(3);
        o.leader_mut().health.commit_p99_seconds = Some(2.048);
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(cond(&s, DEGRADED).reason, "SlowReplication");
        o.leader_mut().health.success_rate = Some(0.9);
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(cond(&s, DEGRADED).reason, "LowSuccessRate");
    }

    #[test]
    fn a_partition_escalates_after_a_minute_and_keeps_its_transition_time() {
        let mut o = healthy(3);
        o.pods
            .get_mut(&2)
            .unwrap()
            .node
            .as_mut()
            .unwrap()
            .partition_state = PartitionState::Minority;
        let first = status_of(&o, &RaftClusterStatus::default());
        let c = cond(&first, PARTITION_DETECTED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "PartitionDetected")
        );
        let since = c.last_transition_time.clone();

        o.now += SignedDuration::from_secs(61);
        let later = status_of(&o, &first);
        let c = cond(&later, PARTITION_DETECTED);
        assert_eq!(c.reason, "PartitionPersistent");
        assert_eq!(c.last_transition_time, since, "status did not flip");
    }

    #[test]
    fn members_disagreeing_on_the_leader_is_a_partition() {
        let mut o = healthy(3);
        o.pods.get_mut(&1).unwrap().node.as_mut().unwrap().leader_id = Some("rc-2".into());
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(cond(&s, PARTITION_DETECTED).status, "True");
    }

    #[test]
    fn progressing_names_the_step_or_what_blocks_it() {
        let mut o = healthy(3);
        o.desired_replicas = 5;
        o.operation = Some(op(
            raft_crds::OperationKind::AddMember,
            3,
            raft_crds::OperationPhase::AwaitingPod,
        ));
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(cond(&s, PROGRESSING).reason, "AddingMember");
        assert_eq!(s.phase, ClusterPhase::Scaling);

        o.operation = None;
        o.member_mut(1).healthy = false;
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(cond(&s, PROGRESSING).reason, "MemberUnhealthy");
        assert_eq!(cond(&s, DEGRADED).reason, "MembershipNotDesired");
    }

    #[test]
    fn a_fresh_cluster_is_bootstrapping() {
        let o = fresh(3);
        let s = status_of(&o, &RaftClusterStatus::default());
        assert_eq!(s.phase, ClusterPhase::Bootstrapping);
        assert_eq!(cond(&s, LEADER_ELECTED).reason, "NotInitialized");
    }
}
