//! Removing a member (scale down): the leader removes it gracefully, the change commits out of
//! joint configuration, only then the StatefulSet shrinks, the pod goes, and its claim is deleted
//! (a removed member's data must never come back). Without a leader confirming the removal the
//! StatefulSet keeps its size (rule 2 of docs/operator.md).
//!
//! Called by `plan/mod.rs` for a recorded `RemoveMember` ([`continue_remove`]); uses the shared
//! types of `step` and the health gate of `gate`.

use raft_api::daemon::MemberRole;
use raft_crds::{OperationKind, OperationPhase, OperationStatus};

use super::gate::gate;
use super::step::{
    Action, Blocked, Outcome, Step, WaitReason, awaiting_leader, our_voters, recorded_id,
    target_ordinal, wait_step, with_phase,
};
use crate::reconcile::model::{Observed, is_caught_up};

/// A recorded removal the spec no longer wants (spec.replicas raised above its ordinal again
/// before the removal was sent, and the member healthy: a voter that is down is removed
/// whatever its ordinal): give it up. Only while the step is still `Recorded`: once the leader
/// was asked, the removal runs to its end and an add follows.
pub(super) fn abandon_remove(
    o: &Observed,
    step: &OperationStatus,
    size: u32,
) -> Option<(u32, Step)> {
    if step.phase != OperationPhase::Recorded || target_ordinal(o, step)? >= o.desired_replicas {
        return None;
    }
    let leader = o.leader.as_ref().filter(|l| !l.cluster.joint)?;
    let id = recorded_id(step)?;
    leader
        .member_by_id(id)
        .filter(|m| m.role == MemberRole::Voter && is_caught_up(m))?;
    let voters = our_voters(o, leader);
    Some({
        (
            size,
            Step::Finish(Outcome::Abandoned {
                kind: OperationKind::RemoveMember,
                name: step.name.clone(),
                why: format!(
                    "spec.replicas is {} and the cluster has {voters} voters",
                    o.desired_replicas
                ),
            }),
        )
    })
}

/// Remove ordinal k (scale down): leader removes the member → committed, not joint →
/// StatefulSet shrinks → pod gone → claim gone.
pub(super) fn continue_remove(o: &Observed, step: &OperationStatus, size: u32) -> (u32, Step) {
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
                Err(blocked) => wait_step(blocked, Some(step.clone())),
            },
        );
    }
    if leader.cluster.joint {
        let current = o.statefulset.as_ref().map_or(size, |s| s.replicas);
        return (
            current,
            wait_step(
                Blocked::new(
                    WaitReason::AwaitingCommit,
                    "removal not yet out of joint configuration",
                ),
                Some(with_phase(step, OperationPhase::AwaitingCommit)),
            ),
        );
    }
    // Confirmed absent and not joint: the StatefulSet follows the membership.
    let Some(k) = k.filter(|k| *k >= size) else {
        // Or keeps the ordinal (a voter that was down, removed below the highest): its pod
        // stays, learns it was removed if it answers again, and gets a fresh volume when the
        // ordinal is added back.
        return (size, Step::Finish(removed(step)));
    };
    if o.pods.contains_key(&k) {
        return (
            size,
            wait_step(
                Blocked::new(
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

#[cfg(test)]
mod tests {
    //! Scale down: highest ordinal first, removed through the leader before anything shrinks,
    //! its claim deleted last; health is required of the members that remain.

    use crate::reconcile::plan::fixtures::*;

    #[test]
    fn a_removal_the_spec_no_longer_wants_is_abandoned_until_the_leader_was_asked() {
        // 5 → 3 → 5: rc-4's removal recorded, the spec back at 5 before it was sent.
        let mut o = healthy(5);
        o.operation = Some(op(K::RemoveMember, 4, P::Recorded));
        let p = plan(&o);
        assert!(
            matches!(&p.step, Step::Finish(Outcome::Abandoned { kind: K::RemoveMember, name, .. }) if name == "rc-4"),
            "{p:?}"
        );
        assert_eq!(p.statefulset_replicas, 5);
        // Once sent, the removal runs to its end.
        o.operation = Some(op(K::RemoveMember, 4, P::AwaitingCommit));
        assert_eq!(action(&plan(&o)).0, &Action::Remove(node_id(4)));
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_then_shrinks_then_drops_its_volume() {
        let mut o = healthy(5);
        o.desired_replicas = 3;
        let p = plan(&o);
        let op4 = recorded(&p).clone();
        assert_eq!((op4.kind, op4.name.as_str()), (K::RemoveMember, "rc-4"));
        assert_eq!(op4.node_id, Some(node_id(4).to_string()));
        assert_eq!(p.statefulset_replicas, 5);

        // Graceful removal through the leader; the StatefulSet keeps its size meanwhile.
        o.operation = Some(op4);
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 5);
        assert_eq!(action(&p).0, &Action::Remove(node_id(4)));

        // Removed but still joint: nothing shrinks.
        o.remove_member(4);
        o.leader_mut().cluster.joint = true;
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 5);
        assert_eq!(waiting(&p), WaitReason::AwaitingCommit);

        // Committed and not joint: shrink, wait for the pod to go.
        o.leader_mut().cluster.joint = false;
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 4);
        assert_eq!(waiting(&p), WaitReason::AwaitingPodDeletion);

        // Pod gone, claim left: delete it.
        o.pods.remove(&4);
        o.statefulset.as_mut().unwrap().replicas = 4;
        let p = plan(&o);
        assert_eq!(
            action(&p).0,
            &Action::DeletePvc {
                name: "data-rc-4".into()
            }
        );
        o.pvcs.remove(&4);
        assert!(matches!(
            plan(&o).step,
            Step::Finish(Outcome::MemberRemoved { .. })
        ));

        o.operation = None;
        assert_eq!(recorded(&plan(&o)).name, "rc-3");
    }

    #[test]
    fn removal_never_shrinks_without_a_leader_confirming_it() {
        let mut o = healthy(5);
        o.desired_replicas = 3;
        o.operation = Some(op(K::RemoveMember, 4, P::AwaitingCommit));
        o.leader = None;
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 5);
        assert_eq!(waiting(&p), WaitReason::WaitingForLeader);
    }

    #[test]
    fn a_dead_member_can_be_removed_while_the_rest_are_healthy() {
        let mut o = healthy(5);
        o.desired_replicas = 3;
        o.member_mut(4).healthy = false;
        o.pods.remove(&4);
        assert_eq!(recorded(&plan(&o)).name, "rc-4");
    }

    #[test]
    fn scale_down_waits_if_two_voters_are_unhealthy() {
        let mut o = healthy(5);
        o.desired_replicas = 3;
        o.member_mut(1).healthy = false;
        o.member_mut(2).healthy = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    }

    #[test]
    fn a_voter_that_is_down_below_the_highest_is_removed_first_and_its_ordinal_refilled() {
        // 5 → 3 with rc-1 down: removing rc-4 first would wait on rc-1 for ever.
        let mut o = healthy(5);
        o.desired_replicas = 3;
        o.member_mut(1).healthy = false;
        let step = recorded(&plan(&o)).clone();
        assert_eq!((step.kind, step.name.as_str()), (K::RemoveMember, "rc-1"));
        o.operation = Some(step);
        assert_eq!(action(&plan(&o)).0, &Action::Remove(node_id(1)));
        // Gone from the membership: the ordinal stays in the StatefulSet, so the step ends
        // without waiting for a pod deletion that will not come.
        o.remove_member(1);
        let p = plan(&o);
        assert!(
            matches!(p.step, Step::Finish(Outcome::MemberRemoved { .. })),
            "{p:?}"
        );
        assert_eq!(p.statefulset_replicas, 5);
        // Then the highest, as usual.
        o.operation = None;
        assert_eq!(recorded(&plan(&o)).name, "rc-4");
        o.remove_member(4);
        o.pods.remove(&4);
        o.pvcs.remove(&4);
        o.statefulset.as_mut().unwrap().replicas = 4;
        // Three voters {0, 2, 3}: the hole at 1 is filled (a fresh member), then 3 goes.
        let p = plan(&o);
        let add = recorded(&p);
        assert_eq!((add.kind, add.name.as_str()), (K::AddMember, "rc-1"));
        o.add_member(1, raft_api::daemon::MemberRole::Voter);
        assert_eq!(recorded(&plan(&o)).name, "rc-3");
    }

    #[test]
    fn the_removal_of_a_voter_that_is_down_is_not_abandoned_below_spec_replicas() {
        let mut o = healthy(5);
        o.desired_replicas = 3;
        o.member_mut(1).healthy = false;
        o.operation = Some(op(K::RemoveMember, 1, P::Recorded));
        assert_eq!(action(&plan(&o)).0, &Action::Remove(node_id(1)));
    }

    #[test]
    fn the_leader_itself_is_removed_through_the_graceful_endpoint_when_it_is_the_highest() {
        let mut o = healthy(3);
        o.desired_replicas = 1;
        o.leader_mut().pod = "rc-2".into();
        o.operation = Some(op(K::RemoveMember, 2, P::Recorded));
        assert_eq!(action(&plan(&o)).0, &Action::Remove(node_id(2)));
    }
}
