//! Rolling restart onto the StatefulSet's update revision, one member at a time: members that
//! do not take part (crash-looping, Pending, not a healthy voter) first, then followers
//! (highest ordinal first), the leader last. Each restart evicts the pod (behind the health
//! gate, which leaves the target itself out: a broken pod must not block its own repair) and
//! waits until the new pod runs the update revision, answers with the same node id, and is
//! healthy and caught up. That is also how a bad rollout is rolled back: the spec reverted, the
//! broken pod is outdated again and is replaced first.
//!
//! Called by `plan/mod.rs`: [`rolling_update`] when choosing the next change, and
//! [`continue_restart`] for a recorded `RestartMember`. Uses the shared types of `step` and the
//! health gate of `gate`.

use raft_crds::{OperationKind, OperationPhase, OperationStatus};

use super::gate::gate;
use super::step::{
    Action, Blocked, Outcome, Step, WaitReason, new_step, recorded_id, target_ordinal, wait_step,
    with_phase,
};
use crate::reconcile::model::{LeaderView, Observed, PodView, is_caught_up};

/// Members whose pod runs an outdated revision: restart one. Members that do not take part
/// come first (restarting them costs nothing, and after a reverted bad rollout they are the
/// broken ones), then followers (highest ordinal first), the leader last.
pub(super) fn rolling_update(o: &Observed, leader: &LeaderView) -> Option<Step> {
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
        (takes_part(leader, p), is_leader, std::cmp::Reverse(ordinal))
    });
    let pod = candidates[0];
    let node_id: Option<u64> = leader
        .member_by_name(&pod.name)
        .and_then(|m| m.node_id.parse().ok());
    // A member that does not take part is left out of the gate: restarting it takes nothing
    // away from the quorum, which every other voter must still make up.
    let except = (!takes_part(leader, pod)).then_some(node_id).flatten();
    if let Err(blocked) = gate(o, except) {
        return Some(wait_step(blocked, None));
    }
    let other_not_ready = o
        .pods
        .values()
        .filter(|p| except.is_none() || p.name != pod.name)
        .find(|p| !p.ready || p.terminating);
    if let Some(p) = other_not_ready {
        return Some(wait_step(
            Blocked::new(
                WaitReason::WaitingForPods,
                format!("pod {} is not Ready; restarts wait for it", p.name),
            ),
            None,
        ));
    }
    Some(Step::Record(new_step(
        OperationKind::RestartMember,
        &pod.name,
        node_id,
        o,
    )))
}

/// Rolling restart of one member: delete its pod (gated), wait until the new pod runs the
/// update revision, answers with the same node id and is healthy and caught up.
pub(super) fn continue_restart(o: &Observed, step: &OperationStatus) -> Step {
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
        wait_step(
            Blocked::new(WaitReason::AwaitingRejoin, msg),
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
        // The target is left out of the gate: a pod that crash-loops or stays Pending on a bad
        // revision must be replaced for the rollback to heal.
        return match gate(o, recorded_id(step)) {
            Ok(_) => Step::Act {
                action: Action::EvictPod {
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                },
                next: with_phase(step, OperationPhase::AwaitingRejoin),
            },
            Err(blocked) => wait_step(blocked, Some(with_phase(step, OperationPhase::DeletingPod))),
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

/// The leader counts the member healthy and caught up: Raft's view, not the pod's Ready
/// condition (a member whose readiness probe has not passed yet, the leader included, may well
/// be carrying the quorum; restarting it out of turn would take a second member down).
fn takes_part(leader: &LeaderView, pod: &PodView) -> bool {
    leader.member_by_name(&pod.name).is_some_and(is_caught_up)
}

#[cfg(test)]
mod tests {
    //! Rolling update: followers first and the leader last, each pod deleted behind the health
    //! gate and awaited until it rejoins and catches up.

    use raft_api::admin::NodeRole;

    use crate::reconcile::plan::fixtures::*;

    /// A healthy cluster whose StatefulSet has a new update revision no pod runs yet.
    fn outdated(n: u32) -> Observed {
        let mut o = healthy(n);
        o.statefulset.as_mut().unwrap().update_revision = Some("rev-2".into());
        o
    }

    #[test]
    fn a_rolling_update_restarts_followers_first_and_the_leader_last() {
        let mut o = outdated(3);
        assert_eq!(recorded(&plan(&o)).name, "rc-2");
        o.pods.get_mut(&2).unwrap().revision = Some("rev-2".into());
        assert_eq!(recorded(&plan(&o)).name, "rc-1");
        o.pods.get_mut(&1).unwrap().revision = Some("rev-2".into());
        let last = recorded(&plan(&o)).clone();
        assert_eq!((last.kind, last.name.as_str()), (K::RestartMember, "rc-0"));
    }

    #[test]
    fn a_restart_deletes_the_pod_then_waits_for_it_to_rejoin_and_catch_up() {
        let mut o = outdated(3);
        o.operation = Some(op(K::RestartMember, 2, P::Recorded));
        let p = plan(&o);
        assert_eq!(
            action(&p).0,
            &Action::EvictPod {
                name: "rc-2".into(),
                uid: "uid-2".into()
            }
        );
        o.pods.get_mut(&2).unwrap().terminating = true;
        assert_eq!(waiting(&plan(&o)), WaitReason::AwaitingRejoin);
        let mut back = pod(2, node_status(2, NodeRole::Follower, true));
        back.revision = Some("rev-2".into());
        o.pods.insert(2, back);
        o.member_mut(2).lag = Some(4000);
        assert_eq!(waiting(&plan(&o)), WaitReason::AwaitingRejoin);
        o.member_mut(2).lag = Some(0);
        assert!(matches!(
            plan(&o).step,
            Step::Finish(Outcome::MemberRestarted { .. })
        ));
    }

    #[test]
    fn a_reverted_bad_rollout_replaces_the_broken_pod_although_it_is_unhealthy() {
        // rc-2 was restarted onto rev-2, which crash-loops: the step waits for it.
        let mut o = outdated(3);
        o.operation = Some(op(K::RestartMember, 2, P::AwaitingRejoin));
        let broken = o.pods.get_mut(&2).unwrap();
        broken.revision = Some("rev-2".into());
        broken.ready = false;
        o.member_mut(2).healthy = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::AwaitingRejoin);
        // The spec reverted: rev-1 again, and the broken pod is replaced at once.
        o.statefulset.as_mut().unwrap().update_revision = Some("rev-1".into());
        assert_eq!(
            action(&plan(&o)).0,
            &Action::EvictPod {
                name: "rc-2".into(),
                uid: "uid-2".into()
            }
        );
        // Not when another voter is unhealthy too: that would leave no quorum to spare.
        o.member_mut(1).healthy = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    }

    #[test]
    fn a_member_that_does_not_take_part_is_restarted_first_and_gates_nothing() {
        // A pod not Ready whose member is healthy (the leader here) takes part: it is not
        // restarted out of turn, and restarts wait for it to be Ready.
        let mut o = outdated(3);
        o.pods.get_mut(&0).unwrap().ready = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::WaitingForPods);
        o.pods.get_mut(&0).unwrap().ready = true;
        // A member the leader does not hear from does not take part: it goes first.
        let pending = o.pods.get_mut(&1).unwrap();
        pending.ready = false;
        o.member_mut(1).healthy = false;
        let step = recorded(&plan(&o)).clone();
        assert_eq!((step.kind, step.name.as_str()), (K::RestartMember, "rc-1"));
        // A healthy member is not restarted while another is down.
        o.pods.get_mut(&1).unwrap().revision = Some("rev-2".into());
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    }

    #[test]
    fn no_pod_is_restarted_while_another_member_is_unhealthy() {
        let mut o = outdated(3);
        o.operation = Some(op(K::RestartMember, 2, P::Recorded));
        o.member_mut(1).lag = Some(10_000);
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    }
}
