//! The pure middle of the reconcile pipeline: observed state → at most one next step.
//!
//! Every safety rule of docs/operator.md ("How a reconcile works") lives here, and nothing here
//! does I/O:
//! 1. one membership change at a time, recorded in `status.operation` *before* it is acted on
//!    (`Step::Record`), so a restarted operator resumes it instead of starting another;
//! 2. the leader's committed membership is the truth: the StatefulSet size follows it and
//!    changes only to carry out a recorded step; a missing pod never shrinks anything;
//! 3. no change without health (a leader with a recent quorum, every voter healthy and caught
//!    up, no joint configuration); otherwise `Step::Wait` names the reason;
//! 4. `paused` stops everything.
//!
//! Each recorded step is goal-seeking: the plan looks at what is already true (is the learner
//! there? is the member gone?) rather than trusting the recorded phase, so a crash between an
//! action and the write of its new phase repeats nothing harmful: every action is idempotent
//! (`initialize` with the same members, adding a learner twice, removing a non-member, deleting
//! something already gone).

use raft_api::admin::{MemberSpec, NodeRole};
use raft_api::daemon::MemberRole;
use raft_crds::{OperationKind, OperationPhase, OperationStatus};

use super::model::{LeaderView, Observed, PodView, is_caught_up};

/// The plan's answer: the StatefulSet size to apply, and the one step to take.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub statefulset_replicas: u32,
    pub step: Step,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to change: membership matches the spec and every pod runs the current revision.
    Idle,
    /// Something must become true first; `operation` is the recorded step to keep (with an
    /// updated phase, when it moved on), if any.
    Wait {
        blocked: Blocked,
        operation: Option<OperationStatus>,
    },
    /// Write this step into `status.operation`; act on it only in a later reconcile.
    Record(OperationStatus),
    /// Perform `action`, then store `next` as the step's progress.
    Act {
        action: Action,
        next: OperationStatus,
    },
    /// The recorded step is complete: clear `status.operation` and announce it.
    Finish(Outcome),
    /// The sidecars are already initialized (e.g. the status was lost): record their cluster id.
    Adopt { cluster_id: String },
}

/// The side effect of a step (besides the StatefulSet size, which every reconcile applies).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing but the StatefulSet size and the phase change.
    None,
    /// `POST /admin/v1/initialize` on `pod` with every initial member.
    Initialize {
        pod: String,
        members: Vec<MemberSpec>,
    },
    /// `POST /admin/v1/members` on the leader.
    AddLearner(MemberSpec),
    /// `POST /admin/v1/members/{id}/promote` on the leader.
    Promote(u64),
    /// `DELETE /admin/v1/members/{id}` on the leader (graceful removal).
    Remove(u64),
    /// Delete a pod (rolling restart onto the new revision).
    DeletePod { name: String, uid: String },
    /// Delete a volume claim (a removed member's data must never come back).
    DeletePvc { name: String },
    /// Delete a pod's claim, then the pod, so it comes back with an empty volume (a pod whose
    /// data dir belongs to a member that was removed).
    DiscardVolume {
        pod: String,
        uid: String,
        pvc: String,
    },
}

/// Why the plan is waiting: a static category (used for the `Progressing` reason, Events and
/// metric labels) and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub reason: WaitReason,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitReason {
    Paused,
    WaitingForPods,
    WaitingForLeader,
    WaitingForQuorum,
    JointConfiguration,
    MemberUnhealthy,
    AwaitingPod,
    AwaitingCatchUp,
    AwaitingCommit,
    AwaitingPodDeletion,
    AwaitingVolumeDeletion,
    AwaitingRejoin,
}

impl WaitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paused => "Paused",
            Self::WaitingForPods => "WaitingForPods",
            Self::WaitingForLeader => "WaitingForLeader",
            Self::WaitingForQuorum => "WaitingForQuorum",
            Self::JointConfiguration => "JointConfiguration",
            Self::MemberUnhealthy => "MemberUnhealthy",
            Self::AwaitingPod => "AwaitingPod",
            Self::AwaitingCatchUp => "AwaitingCatchUp",
            Self::AwaitingCommit => "AwaitingCommit",
            Self::AwaitingPodDeletion => "AwaitingPodDeletion",
            Self::AwaitingVolumeDeletion => "AwaitingVolumeDeletion",
            Self::AwaitingRejoin => "AwaitingRejoin",
        }
    }

    /// A wait that blocks a change the spec asks for (rather than a step's normal progress).
    pub fn blocks_change(self) -> bool {
        matches!(
            self,
            Self::WaitingForLeader
                | Self::WaitingForQuorum
                | Self::JointConfiguration
                | Self::MemberUnhealthy
        )
    }
}

/// A completed step, announced as an Event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Initialized { cluster_id: String },
    MemberAdded { name: String, node_id: String },
    MemberRemoved { name: String, node_id: String },
    MemberReplaced { name: String, node_id: String },
    MemberRestarted { name: String },
}

fn wait(reason: WaitReason, message: impl Into<String>) -> Blocked {
    Blocked {
        reason,
        message: message.into(),
    }
}

/// The next step for one cluster.
pub fn plan(o: &Observed) -> Plan {
    let replicas = hold_size(o);
    let step = if o.paused {
        Step::Wait {
            blocked: wait(
                WaitReason::Paused,
                "spec.paused is true: membership changes and restarts are stopped",
            ),
            operation: o.operation.clone(),
        }
    } else if let Some(op) = &o.operation {
        return continue_step(o, op);
    } else if o.cluster_id.is_none() {
        bootstrap(o)
    } else {
        next_change(o)
    };
    Plan {
        statefulset_replicas: replicas,
        step,
    }
}

/// The StatefulSet size when no recorded step changes it: what the committed membership calls
/// for; without a leader to ask, the current size (never smaller: a transient loss shrinks
/// nothing); before bootstrap, the spec.
fn hold_size(o: &Observed) -> u32 {
    let current = o.statefulset.as_ref().map(|s| s.replicas);
    match (o.cluster_id.is_some(), o.membership_extent(), current) {
        (false, _, Some(current)) => current,
        (false, _, None) => o.desired_replicas,
        (true, Some(extent), _) if extent > 0 => extent,
        (true, _, Some(current)) => current,
        (true, _, None) => o.recorded_members.max(1),
    }
}

fn new_step(
    kind: OperationKind,
    name: &str,
    node_id: Option<u64>,
    o: &Observed,
) -> OperationStatus {
    OperationStatus {
        kind,
        name: name.to_owned(),
        node_id: node_id.map(|id| id.to_string()),
        phase: OperationPhase::Recorded,
        started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(o.now),
    }
}

fn with_phase(op: &OperationStatus, phase: OperationPhase) -> OperationStatus {
    OperationStatus {
        phase,
        ..op.clone()
    }
}

fn member_spec(pod: &PodView) -> Option<MemberSpec> {
    let status = pod.status()?;
    Some(MemberSpec {
        node_id: pod.node_id()?,
        name: pod.name.clone(),
        address: status.peer_address.clone(),
        admin_address: Some(status.admin_address.clone()),
    })
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

/// Every initial pod (ordinals below the StatefulSet size) Ready and answering as
/// uninitialized, lowest ordinal first; or why not.
fn initial_members(o: &Observed, size: u32) -> Result<Vec<MemberSpec>, Blocked> {
    let mut members = Vec::new();
    for i in 0..size {
        match o.pods.get(&i) {
            Some(p) if p.is_uninitialized() => {
                members.extend(member_spec(p));
            }
            _ => {}
        }
    }
    if members.len() as u32 == size && size > 0 {
        Ok(members)
    } else {
        Err(wait(
            WaitReason::WaitingForPods,
            format!(
                "{} of {size} initial pods are Ready and answer as uninitialized",
                members.len()
            ),
        ))
    }
}

fn initialized_cluster_id(o: &Observed) -> Option<String> {
    o.pods
        .values()
        .filter_map(PodView::status)
        .find(|s| s.initialized)
        .map(|s| s.cluster_id.clone())
}

fn bootstrap(o: &Observed) -> Step {
    // Never initialize twice: sidecars that already are members mean the cluster exists.
    if let Some(cluster_id) = initialized_cluster_id(o) {
        return Step::Adopt { cluster_id };
    }
    let size = hold_size(o);
    match initial_members(o, size) {
        Ok(_) => Step::Record(new_step(
            OperationKind::Initialize,
            &o.names.pod(0),
            None,
            o,
        )),
        Err(blocked) => Step::Wait {
            blocked,
            operation: None,
        },
    }
}

fn continue_initialize(o: &Observed, step: &OperationStatus) -> Step {
    if let Some(leader) = &o.leader
        && !leader.cluster.joint
        && !leader.cluster.members.is_empty()
    {
        return Step::Finish(Outcome::Initialized {
            cluster_id: leader.status.cluster_id.clone(),
        });
    }
    if o.pods
        .get(&0)
        .and_then(PodView::status)
        .is_some_and(|s| s.initialized)
    {
        return Step::Wait {
            blocked: wait(
                WaitReason::WaitingForLeader,
                "initialized; waiting for the first leader",
            ),
            operation: Some(with_phase(step, OperationPhase::AwaitingCommit)),
        };
    }
    match initial_members(o, hold_size(o)) {
        Ok(members) => Step::Act {
            action: Action::Initialize {
                pod: o.names.pod(0),
                members,
            },
            next: with_phase(step, OperationPhase::AwaitingCommit),
        },
        Err(blocked) => Step::Wait {
            blocked,
            operation: Some(step.clone()),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Health gate (rule 3)

/// The cluster may change: a leader with a recent quorum, no joint configuration, and every
/// voter except `except` (the member about to be removed) healthy and caught up.
fn gate(o: &Observed, except: Option<u64>) -> Result<&LeaderView, Blocked> {
    let leader = o
        .leader
        .as_ref()
        .ok_or_else(|| wait(WaitReason::WaitingForLeader, "no leader answers"))?;
    if !leader.has_quorum() {
        return Err(wait(
            WaitReason::WaitingForQuorum,
            format!(
                "leader {} has no recent quorum acknowledgement ({:?})",
                leader.pod, leader.status.partition_state
            ),
        ));
    }
    if leader.cluster.joint {
        return Err(wait(
            WaitReason::JointConfiguration,
            "the membership is in a joint configuration",
        ));
    }
    let lagging: Vec<&str> = leader
        .voters()
        .filter(|m| except.is_none_or(|id| m.node_id.parse() != Ok(id)))
        .filter(|m| !is_caught_up(m))
        .map(|m| m.name.as_str())
        .collect();
    if !lagging.is_empty() {
        return Err(wait(
            WaitReason::MemberUnhealthy,
            format!("voters not healthy and caught up: {}", lagging.join(", ")),
        ));
    }
    Ok(leader)
}

fn blocked_step(blocked: Blocked, operation: Option<OperationStatus>) -> Step {
    Step::Wait { blocked, operation }
}

/// A recorded step that cannot go on until a leader answers; the step stays recorded.
fn awaiting_leader(step: &OperationStatus) -> Step {
    blocked_step(
        wait(WaitReason::WaitingForLeader, "no leader answers"),
        Some(step.clone()),
    )
}

// ---------------------------------------------------------------------------------------------
// Choosing the next change (no step in flight)

fn next_change(o: &Observed) -> Step {
    let Some(leader) = &o.leader else {
        return blocked_step(
            wait(WaitReason::WaitingForLeader, "no leader answers"),
            None,
        );
    };
    if leader.cluster.joint {
        return blocked_step(
            wait(
                WaitReason::JointConfiguration,
                "the membership is in a joint configuration with no step of ours in flight",
            ),
            None,
        );
    }
    if let Some(step) = replacement(o, leader) {
        return step;
    }
    if let Some(step) = unfinished_learner(o, leader) {
        return step;
    }
    if let Some(step) = resize(o, leader) {
        return step;
    }
    if let Some(step) = rolling_update(o, leader) {
        return step;
    }
    Step::Idle
}

/// A pod answering with a node id other than the member recorded under its name lost its
/// volume: remove the old id (then it is added back under the new one).
fn replacement(o: &Observed, leader: &LeaderView) -> Option<Step> {
    for pod in o.pods.values() {
        if pod.terminating || !pod.ready {
            continue;
        }
        let (Some(status), Some(new_id)) = (pod.status(), pod.node_id()) else {
            continue;
        };
        if status.initialized {
            continue;
        }
        let Some(member) = leader.member_by_name(&pod.name) else {
            continue;
        };
        let Ok(old_id) = member.node_id.parse::<u64>() else {
            continue;
        };
        if old_id == new_id {
            continue;
        }
        return Some(match gate(o, Some(old_id)) {
            Ok(_) => Step::Record(new_step(
                OperationKind::ReplaceMember,
                &pod.name,
                Some(old_id),
                o,
            )),
            Err(blocked) => blocked_step(blocked, None),
        });
    }
    None
}

/// A learner of ours with no step in flight (e.g. added by hand): finish adding it.
fn unfinished_learner(o: &Observed, leader: &LeaderView) -> Option<Step> {
    let learner = leader
        .cluster
        .members
        .iter()
        .find(|m| m.role == MemberRole::Learner && o.ordinal(m).is_some())?;
    Some(Step::Record(new_step(
        OperationKind::AddMember,
        &learner.name,
        learner.node_id.parse().ok(),
        o,
    )))
}

/// Membership size versus `spec.replicas`: add the lowest missing ordinal, or remove the
/// highest, one member at a time.
fn resize(o: &Observed, leader: &LeaderView) -> Option<Step> {
    let ours: Vec<(u32, u64)> = leader
        .cluster
        .members
        .iter()
        .filter_map(|m| Some((o.ordinal(m)?, m.node_id.parse().ok()?)))
        .collect();
    let count = ours.len() as u32;
    if count < o.desired_replicas {
        let k = (0..).find(|i| !ours.iter().any(|(o, _)| o == i))?;
        return Some(match gate(o, None) {
            Ok(_) => Step::Record(new_step(OperationKind::AddMember, &o.names.pod(k), None, o)),
            Err(blocked) => blocked_step(blocked, None),
        });
    }
    if count > o.desired_replicas {
        let (k, id) = ours.iter().max_by_key(|(o, _)| *o).copied()?;
        return Some(match gate(o, Some(id)) {
            Ok(_) => Step::Record(new_step(
                OperationKind::RemoveMember,
                &o.names.pod(k),
                Some(id),
                o,
            )),
            Err(blocked) => blocked_step(blocked, None),
        });
    }
    None
}

/// Members whose pod runs an outdated revision: restart one, followers first (highest ordinal
/// first), the leader last.
fn rolling_update(o: &Observed, leader: &LeaderView) -> Option<Step> {
    let target = o.statefulset.as_ref()?.update_revision.as_deref()?;
    let outdated = |p: &&PodView| p.revision.as_deref().is_some_and(|r| r != target);
    let mut candidates: Vec<&PodView> = o
        .pods
        .values()
        .filter(outdated)
        .filter(|p| leader.member_by_name(&p.name).is_some())
        .collect();
    if candidates.is_empty() {
        return None;
    }
    candidates.sort_by_key(|p| {
        let is_leader = p.name == leader.pod;
        let ordinal = o.names.ordinal_of(&p.name).unwrap_or(0);
        (is_leader, std::cmp::Reverse(ordinal))
    });
    let pod = candidates[0];
    if let Err(blocked) = gate(o, None) {
        return Some(blocked_step(blocked, None));
    }
    if let Some(p) = o.pods.values().find(|p| !p.ready || p.terminating) {
        return Some(blocked_step(
            wait(
                WaitReason::WaitingForPods,
                format!("pod {} is not Ready; restarts wait for it", p.name),
            ),
            None,
        ));
    }
    let node_id = leader
        .member_by_name(&pod.name)
        .and_then(|m| m.node_id.parse().ok());
    Some(Step::Record(new_step(
        OperationKind::RestartMember,
        &pod.name,
        node_id,
        o,
    )))
}

// ---------------------------------------------------------------------------------------------
// Carrying out a recorded step

fn continue_step(o: &Observed, step: &OperationStatus) -> Plan {
    let size = hold_size(o);
    let (replicas, next) = match step.kind {
        OperationKind::Initialize => (size, continue_initialize(o, step)),
        OperationKind::AddMember => continue_add(o, step, size),
        OperationKind::RemoveMember => continue_remove(o, step, size),
        // The replaced pod keeps its ordinal while its old identity leaves the membership.
        OperationKind::ReplaceMember => {
            let keep = target_ordinal(o, step).map_or(size, |k| size.max(k + 1));
            (keep, continue_replace(o, step))
        }
        OperationKind::RestartMember => (size, continue_restart(o, step)),
    };
    Plan {
        statefulset_replicas: replicas,
        step: next,
    }
}

fn target_ordinal(o: &Observed, step: &OperationStatus) -> Option<u32> {
    o.names.ordinal_of(&step.name)
}

fn recorded_id(step: &OperationStatus) -> Option<u64> {
    step.node_id.as_deref().and_then(|id| id.parse().ok())
}

/// Add ordinal k: StatefulSet k+1 → pod Ready → learner → caught up → promote → voter.
fn continue_add(o: &Observed, step: &OperationStatus, size: u32) -> (u32, Step) {
    let Some(k) = target_ordinal(o, step) else {
        return (size, Step::Finish(added(step)));
    };
    let size = size.max(k + 1);
    let pod = match o.pods.get(&k) {
        Some(p) if p.ready && !p.terminating && p.status().is_some() => p,
        _ => {
            return (
                size,
                blocked_step(
                    wait(
                        WaitReason::AwaitingPod,
                        format!("waiting for pod {} to be Ready and answer", step.name),
                    ),
                    Some(with_phase(step, OperationPhase::AwaitingPod)),
                ),
            );
        }
    };
    let Some(leader) = &o.leader else {
        return (size, awaiting_leader(step));
    };
    let Some(new_id) = pod.node_id() else {
        return (
            size,
            blocked_step(
                wait(WaitReason::AwaitingPod, "pod reports no node id"),
                Some(step.clone()),
            ),
        );
    };
    // A pod whose data dir belongs to a removed member can never rejoin: give it a new volume.
    if pod.status().is_some_and(|s| s.role == NodeRole::Removed) {
        return (
            size,
            Step::Act {
                action: Action::DiscardVolume {
                    pod: pod.name.clone(),
                    uid: pod.uid.clone(),
                    pvc: o.names.pvc(k),
                },
                next: with_phase(step, OperationPhase::AwaitingPod),
            },
        );
    }
    // The pod was replaced while being added: drop the learner of its previous identity first.
    if let Some(old) = recorded_id(step).filter(|old| *old != new_id)
        && leader.member_by_id(old).is_some()
    {
        return (
            size,
            Step::Act {
                action: Action::Remove(old),
                next: step.clone(),
            },
        );
    }
    let step = &OperationStatus {
        node_id: Some(new_id.to_string()),
        ..step.clone()
    };
    if leader.cluster.joint {
        return (
            size,
            blocked_step(
                wait(WaitReason::AwaitingCommit, "membership change still joint"),
                Some(with_phase(step, OperationPhase::AwaitingCommit)),
            ),
        );
    }
    let next = match leader.member_by_id(new_id) {
        Some(m) if m.role == MemberRole::Voter => Step::Finish(added(step)),
        Some(m) if is_caught_up(m) => match gate(o, None) {
            Ok(_) => Step::Act {
                action: Action::Promote(new_id),
                next: with_phase(step, OperationPhase::AwaitingCommit),
            },
            Err(blocked) => blocked_step(blocked, Some(step.clone())),
        },
        Some(m) => blocked_step(
            wait(
                WaitReason::AwaitingCatchUp,
                format!(
                    "learner {} is {} entries behind",
                    m.name,
                    m.lag
                        .map_or_else(|| "an unknown number of".into(), |l| l.to_string())
                ),
            ),
            Some(with_phase(step, OperationPhase::AwaitingCatchUp)),
        ),
        None => match gate(o, None) {
            Ok(_) => match member_spec(pod) {
                Some(spec) => Step::Act {
                    action: Action::AddLearner(spec),
                    next: with_phase(step, OperationPhase::AwaitingCatchUp),
                },
                None => blocked_step(
                    wait(WaitReason::AwaitingPod, "pod reports no node id"),
                    Some(step.clone()),
                ),
            },
            Err(blocked) => blocked_step(blocked, Some(step.clone())),
        },
    };
    (size, next)
}

fn added(step: &OperationStatus) -> Outcome {
    Outcome::MemberAdded {
        name: step.name.clone(),
        node_id: step.node_id.clone().unwrap_or_default(),
    }
}

/// Remove ordinal k (scale down): leader removes the member → committed, not joint →
/// StatefulSet shrinks → pod gone → claim gone.
fn continue_remove(o: &Observed, step: &OperationStatus, size: u32) -> (u32, Step) {
    let Some(id) = recorded_id(step) else {
        return (size, Step::Finish(removed(step)));
    };
    let k = target_ordinal(o, step);
    let Some(leader) = &o.leader else {
        // Keep the size (never shrink without a confirmed removal).
        let current = o.statefulset.as_ref().map_or(size, |s| s.replicas);
        return (current, awaiting_leader(step));
    };
    if leader.member_by_id(id).is_some() {
        let keep = o
            .statefulset
            .as_ref()
            .map_or(size, |s| s.replicas)
            .max(size);
        return (
            keep,
            match gate(o, Some(id)) {
                Ok(_) => Step::Act {
                    action: Action::Remove(id),
                    next: with_phase(step, OperationPhase::AwaitingCommit),
                },
                Err(blocked) => blocked_step(blocked, Some(step.clone())),
            },
        );
    }
    if leader.cluster.joint {
        let current = o.statefulset.as_ref().map_or(size, |s| s.replicas);
        return (
            current,
            blocked_step(
                wait(
                    WaitReason::AwaitingCommit,
                    "removal not yet out of joint configuration",
                ),
                Some(with_phase(step, OperationPhase::AwaitingCommit)),
            ),
        );
    }
    // Confirmed absent and not joint: the StatefulSet follows the membership.
    let Some(k) = k else {
        return (size, Step::Finish(removed(step)));
    };
    if o.pods.contains_key(&k) {
        return (
            size,
            blocked_step(
                wait(
                    WaitReason::AwaitingPodDeletion,
                    format!("waiting for the StatefulSet to delete pod {}", step.name),
                ),
                Some(with_phase(step, OperationPhase::ResizingStatefulSet)),
            ),
        );
    }
    if o.pvcs.contains(&k) {
        return (
            size,
            Step::Act {
                action: Action::DeletePvc {
                    name: o.names.pvc(k),
                },
                next: with_phase(step, OperationPhase::DeletingVolume),
            },
        );
    }
    (size, Step::Finish(removed(step)))
}

fn removed(step: &OperationStatus) -> Outcome {
    Outcome::MemberRemoved {
        name: step.name.clone(),
        node_id: step.node_id.clone().unwrap_or_default(),
    }
}

/// Replace: remove the old node id of a pod that lost its volume, at the same size.
fn continue_replace(o: &Observed, step: &OperationStatus) -> Step {
    let Some(id) = recorded_id(step) else {
        return Step::Finish(replaced(step));
    };
    let Some(leader) = &o.leader else {
        return awaiting_leader(step);
    };
    if leader.member_by_id(id).is_some() {
        return match gate(o, Some(id)) {
            Ok(_) => Step::Act {
                action: Action::Remove(id),
                next: with_phase(step, OperationPhase::AwaitingCommit),
            },
            Err(blocked) => blocked_step(blocked, Some(step.clone())),
        };
    }
    if leader.cluster.joint {
        return blocked_step(
            wait(
                WaitReason::AwaitingCommit,
                "removal not yet out of joint configuration",
            ),
            Some(with_phase(step, OperationPhase::AwaitingCommit)),
        );
    }
    Step::Finish(replaced(step))
}

fn replaced(step: &OperationStatus) -> Outcome {
    Outcome::MemberReplaced {
        name: step.name.clone(),
        node_id: step.node_id.clone().unwrap_or_default(),
    }
}

/// Rolling restart of one member: delete its pod (gated), wait until the new pod runs the
/// update revision, answers with the same node id and is healthy and caught up.
fn continue_restart(o: &Observed, step: &OperationStatus) -> Step {
    let finished = Step::Finish(Outcome::MemberRestarted {
        name: step.name.clone(),
    });
    let target = o
        .statefulset
        .as_ref()
        .and_then(|s| s.update_revision.clone());
    let Some(k) = target_ordinal(o, step) else {
        return finished;
    };
    let awaiting = |msg: String| {
        blocked_step(
            wait(WaitReason::AwaitingRejoin, msg),
            Some(with_phase(step, OperationPhase::AwaitingRejoin)),
        )
    };
    let Some(pod) = o.pods.get(&k) else {
        return awaiting(format!("waiting for pod {} to be recreated", step.name));
    };
    if pod.terminating {
        return awaiting(format!("waiting for pod {} to terminate", step.name));
    }
    let current = match (&pod.revision, &target) {
        (Some(r), Some(t)) => r == t,
        _ => true,
    };
    if !current {
        return match gate(o, None) {
            Ok(_) => Step::Act {
                action: Action::DeletePod {
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                },
                next: with_phase(step, OperationPhase::AwaitingRejoin),
            },
            Err(blocked) => {
                blocked_step(blocked, Some(with_phase(step, OperationPhase::DeletingPod)))
            }
        };
    }
    if !pod.ready {
        return awaiting(format!("waiting for pod {} to be Ready", step.name));
    }
    // Came back under another identity (volume lost): the replacement logic takes over.
    if pod.node_id().is_some() && pod.node_id() != recorded_id(step) {
        return finished;
    }
    let rejoined = o
        .leader
        .as_ref()
        .and_then(|l| recorded_id(step).and_then(|id| l.member_by_id(id)))
        .is_some_and(is_caught_up);
    if rejoined {
        finished
    } else {
        awaiting(format!("waiting for {} to rejoin and catch up", step.name))
    }
}

#[cfg(test)]
mod tests;
