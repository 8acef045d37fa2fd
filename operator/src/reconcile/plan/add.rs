//! Adding a member (scale up, or the add half of a replacement): the StatefulSet grows to the
//! new ordinal, its pod comes up Ready with a fresh identity, the leader adds it as a learner,
//! and once it has caught up (and the health gate allows) promotes it to voter.
//!
//! Called by `plan/mod.rs`: [`unfinished_learner`] when choosing the next change, and
//! [`continue_add`] for a recorded `AddMember`. Uses the shared types of `step` and the health
//! gate of `gate`.

use raft_api::admin::NodeRole;
use raft_api::daemon::MemberRole;
use raft_crds::{OperationKind, OperationPhase, OperationStatus};

use super::gate::gate;
use super::step::{
    Action, Blocked, Outcome, Step, WaitReason, awaiting_leader, member_spec, new_step, our_voters,
    recorded_id, target_ordinal, wait_step, with_phase,
};
use crate::reconcile::model::{LeaderView, Observed, PodView, is_caught_up};

/// A learner of ours with no step in flight (e.g. added by hand): finish adding it.
pub(super) fn unfinished_learner(o: &Observed, leader: &LeaderView) -> Option<Step> {
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

/// A recorded add the spec no longer wants (spec.replicas lowered below its ordinal before the
/// new member became a voter, e.g. 3 → 5 → 3 in quick succession): drop its learner, if it has
/// one, then give the step up, rather than promote a voter only to remove it again. Once the
/// member is a voter the add is done and a removal follows as usual.
pub(super) fn abandon_add(o: &Observed, step: &OperationStatus, size: u32) -> Option<(u32, Step)> {
    if target_ordinal(o, step)? < o.desired_replicas {
        return None;
    }
    let leader = o.leader.as_ref().filter(|l| !l.cluster.joint)?;
    let learner = recorded_id(step).filter(|id| leader.member_by_id(*id).is_some());
    if learner.is_some_and(|id| {
        leader
            .member_by_id(id)
            .is_some_and(|m| m.role == MemberRole::Voter)
    }) {
        return None;
    }
    let voters = our_voters(o, leader);
    Some(match learner {
        Some(id) => (
            target_ordinal(o, step).map_or(size, |k| size.max(k + 1)),
            Step::Act {
                action: Action::Remove(id),
                next: with_phase(step, OperationPhase::AwaitingCommit),
            },
        ),
        None => (
            size,
            Step::Finish(Outcome::Abandoned {
                kind: OperationKind::AddMember,
                name: step.name.clone(),
                why: format!(
                    "spec.replicas is {} and the cluster has {voters} voters",
                    o.desired_replicas
                ),
            }),
        ),
    })
}

/// Add ordinal k: StatefulSet k+1 → pod Ready → learner → caught up → promote → voter.
pub(super) fn continue_add(o: &Observed, step: &OperationStatus, size: u32) -> (u32, Step) {
    let Some(k) = target_ordinal(o, step) else {
        return (size, Step::Finish(added(step)));
    };
    // The StatefulSet holds ordinal k for as long as the step lasts.
    (size.max(k + 1), add_ordinal(o, step, k))
}

/// The pod at ordinal `k` Ready, answering, and with an identity the leader can take as a
/// learner; then on to [`advance_learner`].
fn add_ordinal(o: &Observed, step: &OperationStatus, k: u32) -> Step {
    let pod = match o.pods.get(&k) {
        Some(p) if p.ready && !p.terminating && p.status().is_some() => p,
        // Made from a template the spec has since replaced (an impossible affinity, an image
        // that does not start): the StatefulSet updates on delete, so only a new pod gets the
        // fixed template. It never joined, so nothing is lost.
        Some(p) if !p.ready && !p.terminating && outdated(o, p) => {
            return Step::Act {
                action: Action::EvictPod {
                    name: p.name.clone(),
                    uid: p.uid.clone(),
                },
                next: with_phase(step, OperationPhase::AwaitingPod),
            };
        }
        _ => {
            return wait_step(
                Blocked::new(
                    WaitReason::AwaitingPod,
                    format!("waiting for pod {} to be Ready and answer", step.name),
                ),
                Some(with_phase(step, OperationPhase::AwaitingPod)),
            );
        }
    };
    let Some(leader) = &o.leader else {
        return awaiting_leader(step);
    };
    let Some(new_id) = pod.node_id() else {
        return wait_step(
            Blocked::new(WaitReason::AwaitingPod, "pod reports no node id"),
            Some(step.clone()),
        );
    };
    // A pod whose data dir belongs to a removed member can never rejoin, nor can one that is a
    // member of another membership (the one before a recovery): give it a new volume.
    if pod.status().is_some_and(|s| {
        s.role == NodeRole::Removed || (s.initialized && leader.member_by_id(new_id).is_none())
    }) {
        return Step::Act {
            action: Action::DiscardVolume {
                pod: pod.name.clone(),
                uid: pod.uid.clone(),
                pvc: o.names.pvc(k),
            },
            next: with_phase(step, OperationPhase::AwaitingPod),
        };
    }
    // The pod was replaced while being added: drop the learner of its previous identity first.
    if let Some(old) = recorded_id(step).filter(|old| *old != new_id)
        && leader.member_by_id(old).is_some()
    {
        return Step::Act {
            action: Action::Remove(old),
            next: step.clone(),
        };
    }
    let step = &OperationStatus {
        node_id: Some(new_id.to_string()),
        ..step.clone()
    };
    advance_learner(o, leader, pod, step, new_id)
}

/// Node `new_id` (the pod's identity, already in `step`): learner → caught up → promote →
/// voter, each change behind the health gate.
fn advance_learner(
    o: &Observed,
    leader: &LeaderView,
    pod: &PodView,
    step: &OperationStatus,
    new_id: u64,
) -> Step {
    if leader.cluster.joint {
        return wait_step(
            Blocked::new(WaitReason::AwaitingCommit, "membership change still joint"),
            Some(with_phase(step, OperationPhase::AwaitingCommit)),
        );
    }
    match leader.member_by_id(new_id) {
        Some(m) if m.role == MemberRole::Voter => Step::Finish(added(step)),
        Some(m) if is_caught_up(m) => match gate(o, None) {
            Ok(_) => Step::Act {
                action: Action::Promote(new_id),
                next: with_phase(step, OperationPhase::AwaitingCommit),
            },
            Err(blocked) => wait_step(blocked, Some(step.clone())),
        },
        Some(m) => wait_step(
            Blocked::new(
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
                None => wait_step(
                    Blocked::new(WaitReason::AwaitingPod, "pod reports no node id"),
                    Some(step.clone()),
                ),
            },
            Err(blocked) => wait_step(blocked, Some(step.clone())),
        },
    }
}

/// The pod runs another revision than the StatefulSet's update revision.
fn outdated(o: &Observed, pod: &PodView) -> bool {
    let target = o
        .statefulset
        .as_ref()
        .and_then(|s| s.update_revision.as_deref());
    matches!((pod.revision.as_deref(), target), (Some(r), Some(t)) if r != t)
}

fn added(step: &OperationStatus) -> Outcome {
    Outcome::MemberAdded {
        name: step.name.clone(),
        node_id: step.node_id.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    //! Scale up: recorded before anything grows, one member at a time through learner, catch-up
    //! and promotion, resumed without repeating anything after a crash.

    use raft_api::admin::NodeRole;
    use raft_api::daemon::MemberRole;

    use crate::reconcile::plan::fixtures::*;

    #[test]
    fn scaling_up_records_the_next_ordinal_before_touching_anything() {
        let mut o = healthy(3);
        o.desired_replicas = 5;
        let p = plan(&o);
        assert_eq!(
            p.statefulset_replicas, 3,
            "nothing grows before the step is recorded"
        );
        let op = recorded(&p);
        assert_eq!((op.kind, op.name.as_str()), (K::AddMember, "rc-3"));
    }

    #[test]
    fn scale_up_walks_learner_catch_up_promote_and_finishes_before_the_next_member() {
        let mut o = healthy(3);
        o.desired_replicas = 5;
        o.operation = Some(op(K::AddMember, 3, P::Recorded));
        o.operation.as_mut().unwrap().node_id = None;

        // StatefulSet grows by one; wait for the pod.
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 4);
        assert_eq!(waiting(&p), WaitReason::AwaitingPod);

        // Pod Ready and fresh: add it as a learner through the leader.
        o.add_fresh_pod(3);
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 4);
        let (a, next) = action(&p);
        let Action::AddLearner(spec) = a else {
            panic!("{a:?}")
        };
        assert_eq!((spec.node_id, spec.name.as_str()), (node_id(3), "rc-3"));
        assert_eq!(
            next.node_id.as_deref(),
            Some(node_id(3).to_string().as_str())
        );

        // Lagging learner: wait.
        o.operation = Some(next.clone());
        o.add_member(3, MemberRole::Learner);
        o.member_mut(3).lag = Some(5000);
        assert_eq!(waiting(&plan(&o)), WaitReason::AwaitingCatchUp);

        // Caught up: promote.
        o.member_mut(3).lag = Some(3);
        let p = plan(&o);
        assert_eq!(action(&p).0, &Action::Promote(node_id(3)));

        // Voter, not joint: done.
        o.member_mut(3).role = MemberRole::Voter;
        let p = plan(&o);
        assert!(
            matches!(p.step, Step::Finish(Outcome::MemberAdded { .. })),
            "{p:?}"
        );

        // Only then the next member is recorded.
        o.operation = None;
        let p = plan(&o);
        assert_eq!(recorded(&p).name, "rc-4");
        assert_eq!(p.statefulset_replicas, 4);
    }

    #[test]
    fn a_crash_after_adding_the_learner_resumes_without_adding_it_twice() {
        let mut o = healthy(3);
        o.desired_replicas = 5;
        o.operation = Some(op(K::AddMember, 3, P::AwaitingPod));
        o.add_fresh_pod(3);
        o.add_member(3, MemberRole::Learner);
        let p = plan(&o);
        assert_eq!(action(&p).0, &Action::Promote(node_id(3)));
    }

    #[test]
    fn promotion_waits_for_health_too() {
        let mut o = healthy(3);
        o.desired_replicas = 5;
        o.operation = Some(op(K::AddMember, 3, P::AwaitingCatchUp));
        o.add_fresh_pod(3);
        o.add_member(3, MemberRole::Learner);
        o.member_mut(1).healthy = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    }

    #[test]
    fn an_add_the_spec_no_longer_wants_drops_its_learner_and_is_abandoned() {
        // 3 → 5 → 3: rc-3 was recorded and is a learner when the spec goes back to 3.
        let mut o = healthy(3);
        o.desired_replicas = 3;
        o.operation = Some(op(K::AddMember, 3, P::AwaitingCatchUp));
        o.add_fresh_pod(3);
        o.add_member(3, MemberRole::Learner);
        let p = plan(&o);
        assert_eq!(action(&p).0, &Action::Remove(node_id(3)));
        assert_eq!(
            p.statefulset_replicas, 4,
            "the pod stays until its learner is gone"
        );
        // The learner gone: the step is given up and the StatefulSet shrinks back.
        o.leader_mut().cluster.members.retain(|m| m.name != "rc-3");
        let p = plan(&o);
        assert!(
            matches!(&p.step, Step::Finish(Outcome::Abandoned { kind: K::AddMember, name, .. }) if name == "rc-3"),
            "{p:?}"
        );
        assert_eq!(p.statefulset_replicas, 3);
    }

    #[test]
    fn an_add_whose_pod_never_came_up_is_abandoned_when_the_spec_shrinks_back() {
        let mut o = healthy(3);
        o.desired_replicas = 3;
        o.operation = Some(op(K::AddMember, 3, P::AwaitingPod));
        o.operation.as_mut().unwrap().node_id = None;
        assert!(matches!(
            plan(&o).step,
            Step::Finish(Outcome::Abandoned { .. })
        ));
    }

    #[test]
    fn an_add_that_made_a_voter_is_finished_not_abandoned() {
        let mut o = healthy(3);
        o.desired_replicas = 3;
        o.operation = Some(op(K::AddMember, 3, P::AwaitingCommit));
        o.add_fresh_pod(3);
        o.add_member(3, MemberRole::Voter);
        assert!(matches!(
            plan(&o).step,
            Step::Finish(Outcome::MemberAdded { .. })
        ));
    }

    #[test]
    fn a_pending_pod_made_from_a_replaced_template_is_evicted_so_it_gets_the_fixed_one() {
        let mut o = healthy(3);
        o.desired_replicas = 5;
        o.operation = Some(op(K::AddMember, 3, P::AwaitingPod));
        o.add_fresh_pod(3);
        let stuck = o.pods.get_mut(&3).unwrap();
        stuck.ready = false;
        stuck.node = Err("no answer".into());
        assert_eq!(waiting(&plan(&o)), WaitReason::AwaitingPod);
        o.statefulset.as_mut().unwrap().update_revision = Some("rev-2".into());
        assert_eq!(
            action(&plan(&o)).0,
            &Action::EvictPod {
                name: "rc-3".into(),
                uid: "uid-3".into()
            }
        );
    }

    #[test]
    fn a_pod_holding_a_removed_or_an_older_memberships_data_gets_a_fresh_volume() {
        // Removed, or still a member of the membership before a recovery (a follower of it).
        for role in [NodeRole::Removed, NodeRole::Follower] {
            let mut o = healthy(3);
            o.desired_replicas = 5;
            o.operation = Some(op(K::AddMember, 3, P::AwaitingPod));
            o.add_fresh_pod(3);
            o.pods.get_mut(&3).unwrap().node = Ok(node_status(3, role, true));
            let p = plan(&o);
            assert_eq!(
                action(&p).0,
                &Action::DiscardVolume {
                    pod: "rc-3".into(),
                    uid: "uid-3".into(),
                    pvc: "data-rc-3".into()
                },
                "{role:?}"
            );
        }
    }
}
