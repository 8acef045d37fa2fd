//! Removing a member (scale down): the leader removes it gracefully, the change commits out of
//! joint configuration, only then the StatefulSet shrinks, the pod goes, and its claim is deleted
//! (a removed member's data must never come back). Without a leader confirming the removal the
//! StatefulSet keeps its size (rule 2 of docs/operator.md).
//!
//! Called by `plan/mod.rs` for a recorded `RemoveMember` ([`continue_remove`]); uses the shared
//! types of `step` and the health gate of `gate`.

use raft_crds::{OperationPhase, OperationStatus};

use super::gate::gate;
use super::step::{
    Action, Blocked, Outcome, Step, WaitReason, awaiting_leader, recorded_id, target_ordinal,
    wait_step, with_phase,
};
use crate::reconcile::model::Observed;

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
    let Some(k) = k else {
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
    fn scale_down_waits_if_a_remaining_voter_is_unhealthy() {
        let mut o = healthy(5);
        o.desired_replicas = 3;
        o.member_mut(1).healthy = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
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
