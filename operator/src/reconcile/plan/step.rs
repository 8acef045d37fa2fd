//! The plan's vocabulary, shared by every kind of step: the answer ([`Plan`], [`Step`],
//! [`Action`], [`Outcome`]), why it waits ([`Blocked`], [`WaitReason`]), and the small builders
//! the step files use (a new recorded step, a phase change, a waiting step).
//!
//! Sits at the bottom of the plan module: `plan/mod.rs` and the step files (`bootstrap`, `add`,
//! `remove`, `replace`, `restart`) and `gate` use it; it uses none of them. The rest of the
//! reconcile pipeline (apply, status, events) sees these types through `plan`'s re-exports.

use raft_api::admin::MemberSpec;
use raft_api::admin::RestoredFrom;
use raft_crds::{FromBackupSpec, OperationKind, OperationPhase, OperationStatus};

use crate::reconcile::model::{LeaderView, Observed, PodView};

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
    /// Stream the backup `from` names out of its bucket into `POST /admin/v1/restore` of
    /// `pod`, which then restarts as the only voter of the cluster.
    RestoreFromBackup { pod: String, from: FromBackupSpec },
    /// `POST /admin/v1/recover` on the survivor `pod`, which restarts as the only voter.
    Recover { pod: String },
    /// `POST /admin/v1/members` on the leader.
    AddLearner(MemberSpec),
    /// `POST /admin/v1/members/{id}/promote` on the leader.
    Promote(u64),
    /// `DELETE /admin/v1/members/{id}` on the leader (graceful removal).
    Remove(u64),
    /// Evict a pod (rolling restart onto the new revision) through the eviction API, so the
    /// PodDisruptionBudget arbitrates with concurrent node drains; a refused eviction is
    /// tried again at the next reconcile.
    EvictPod { name: String, uid: String },
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

impl Blocked {
    pub(super) fn new(reason: WaitReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
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
    Initialized {
        cluster_id: String,
    },
    /// The first member runs the restored backup and leads; `from` is what it reports.
    Restored {
        cluster_id: String,
        from: Option<RestoredFrom>,
    },
    /// The survivor of a lost majority leads alone, under its new node id.
    Recovered {
        name: String,
        node_id: String,
    },
    MemberAdded {
        name: String,
        node_id: String,
    },
    MemberRemoved {
        name: String,
        node_id: String,
    },
    MemberReplaced {
        name: String,
        node_id: String,
    },
    MemberRestarted {
        name: String,
    },
    /// A recorded step the spec no longer wants, given up before it did anything that cannot
    /// be undone (`why` says what the spec asks for now).
    Abandoned {
        kind: OperationKind,
        name: String,
        why: String,
    },
}

/// The one way to build a [`Step::Wait`]: nothing moves until `blocked` clears, and `keep` is
/// what stays in `status.operation` meanwhile — `None` when no step is recorded, the recorded
/// step as it is, or the recorded step moved on to a new phase (`with_phase`).
pub(super) fn wait_step(blocked: Blocked, keep: Option<OperationStatus>) -> Step {
    Step::Wait {
        blocked,
        operation: keep,
    }
}

/// A recorded step that cannot go on until a leader answers; the step stays recorded.
pub(super) fn awaiting_leader(step: &OperationStatus) -> Step {
    wait_step(
        Blocked::new(WaitReason::WaitingForLeader, "no leader answers"),
        Some(step.clone()),
    )
}

/// The StatefulSet size when no recorded step changes it: what the committed membership calls
/// for, but never below both the current size and the spec (a member just replaced is out of
/// the membership until it is added back, and its fresh pod must stay meanwhile; a scale-down
/// still shrinks onto the membership); without a leader to ask, the current size (never
/// smaller: a transient loss shrinks nothing); before bootstrap, the spec.
pub(super) fn hold_size(o: &Observed) -> u32 {
    let current = o.statefulset.as_ref().map(|s| s.replicas);
    match (o.cluster_id.is_some(), o.membership_extent(), current) {
        (false, _, Some(current)) => current,
        (false, _, None) => o.desired_replicas,
        (true, Some(extent), current) if extent > 0 => {
            extent.max(current.unwrap_or(0).min(o.desired_replicas))
        }
        (true, _, Some(current)) => current,
        (true, _, None) => o.recorded_members.max(1),
    }
}

pub(super) fn new_step(
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

/// Our voters in the leader's committed membership (members whose name is one of our pods).
pub(super) fn our_voters(o: &Observed, leader: &LeaderView) -> u32 {
    let n = leader.voters().filter(|m| o.ordinal(m).is_some()).count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn with_phase(op: &OperationStatus, phase: OperationPhase) -> OperationStatus {
    OperationStatus {
        phase,
        ..op.clone()
    }
}

pub(super) fn member_spec(pod: &PodView) -> Option<MemberSpec> {
    let status = pod.status()?;
    Some(MemberSpec {
        node_id: pod.node_id()?,
        name: pod.name.clone(),
        address: status.peer_address.clone(),
        admin_address: Some(status.admin_address.clone()),
    })
}

/// The ordinal of the pod a recorded step is about.
pub(super) fn target_ordinal(o: &Observed, step: &OperationStatus) -> Option<u32> {
    o.names.ordinal_of(&step.name)
}

/// The node id a recorded step is about, if it recorded one.
pub(super) fn recorded_id(step: &OperationStatus) -> Option<u64> {
    step.node_id.as_deref().and_then(|id| id.parse().ok())
}
