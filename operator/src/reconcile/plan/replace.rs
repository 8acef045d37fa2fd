//! Replacing a member whose pod lost its volume: the pod answers under a new node id while the
//! membership still lists the old one under its name. The old id is removed (at the same
//! StatefulSet size: the pod keeps its ordinal), then the pod is added back under its new id as
//! an ordinary `AddMember` (see `add`).
//!
//! Called by `plan/mod.rs`: [`replacement`] when choosing the next change, and
//! [`continue_replace`] for a recorded `ReplaceMember`. Uses the shared types of `step` and the
//! health gate of `gate`.

use raft_crds::{OperationKind, OperationPhase, OperationStatus};

use super::gate::gate;
use super::step::{
    Action, Blocked, Outcome, Step, WaitReason, awaiting_leader, new_step, recorded_id, wait_step,
    with_phase,
};
use crate::reconcile::model::{LeaderView, Observed};

/// A pod answering with a node id other than the member recorded under its name lost its
/// volume: remove the old id (then it is added back under the new one).
pub(super) fn replacement(o: &Observed, leader: &LeaderView) -> Option<Step> {
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
            Err(blocked) => wait_step(blocked, None),
        });
    }
    None
}

/// Replace: remove the old node id of a pod that lost its volume, at the same size.
pub(super) fn continue_replace(o: &Observed, step: &OperationStatus) -> Step {
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
            Err(blocked) => wait_step(blocked, Some(step.clone())),
        };
    }
    if leader.cluster.joint {
        return wait_step(
            Blocked::new(
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

#[cfg(test)]
mod tests {
    //! Replacement: remove the lost identity, then add the new one, never changing the size.

    use raft_api::admin::NodeRole;

    use crate::reconcile::plan::fixtures::*;

    #[test]
    fn a_pod_that_lost_its_volume_is_replaced_as_remove_then_add_at_the_same_size() {
        let mut o = healthy(3);
        let mut lost = node_status(1, NodeRole::Uninitialized, false);
        lost.node_id = "5555".into();
        o.pods.insert(1, pod(1, lost));
        o.member_mut(1).healthy = false;

        let p = plan(&o);
        let rec = recorded(&p).clone();
        assert_eq!((rec.kind, rec.name.as_str()), (K::ReplaceMember, "rc-1"));
        assert_eq!(rec.node_id, Some(node_id(1).to_string()));
        assert_eq!(p.statefulset_replicas, 3);

        o.operation = Some(rec);
        let p = plan(&o);
        assert_eq!(action(&p).0, &Action::Remove(node_id(1)));
        assert_eq!(p.statefulset_replicas, 3);

        o.remove_member(1);
        let p = plan(&o);
        assert!(matches!(
            p.step,
            Step::Finish(Outcome::MemberReplaced { .. })
        ));
        assert_eq!(p.statefulset_replicas, 3);

        o.operation = None;
        let p = plan(&o);
        let add = recorded(&p).clone();
        assert_eq!((add.kind, add.name.as_str()), (K::AddMember, "rc-1"));

        o.operation = Some(add);
        let p = plan(&o);
        let Action::AddLearner(spec) = action(&p).0 else {
            panic!("{p:?}")
        };
        assert_eq!(spec.node_id, 5555);
        assert_eq!(p.statefulset_replicas, 3);
    }

    #[test]
    fn replacing_the_highest_ordinal_never_shrinks_the_statefulset() {
        let mut o = healthy(3);
        let mut lost = node_status(2, NodeRole::Uninitialized, false);
        lost.node_id = "7777".into();
        o.pods.insert(2, pod(2, lost));
        o.operation = Some(op(K::ReplaceMember, 2, P::AwaitingCommit));
        o.remove_member(2);
        assert_eq!(plan(&o).statefulset_replicas, 3);
    }

    #[test]
    fn after_replacing_the_highest_ordinal_its_fresh_pod_is_kept_until_it_is_added_back() {
        // The step has ended: the old id is out, the pod waits under its new id. The next
        // reconcile must not shrink the StatefulSet onto the membership (which would delete
        // the fresh pod and, with whenScaled: Delete, its claim) before adding it back.
        let mut o = healthy(3);
        let mut lost = node_status(2, NodeRole::Uninitialized, false);
        lost.node_id = "7777".into();
        o.pods.insert(2, pod(2, lost));
        o.remove_member(2);
        o.operation = None;
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 3);
        let Step::Record(rec) = &p.step else {
            panic!("expected the pod to be added back, got {:?}", p.step)
        };
        assert_eq!((rec.kind, rec.name.as_str()), (K::AddMember, "rc-2"));
    }
}
