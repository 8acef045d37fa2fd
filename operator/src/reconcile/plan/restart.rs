//! Rolling restart onto the StatefulSet's update revision, one member at a time: followers
//! first (highest ordinal first), the leader last. Each restart deletes the pod (behind the
//! health gate) and waits until the new pod runs the update revision, answers with the same
//! node id, and is healthy and caught up.
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

/// Members whose pod runs an outdated revision: restart one, followers first (highest ordinal
/// first), the leader last.
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
        (is_leader, std::cmp::Reverse(ordinal))
    });
    let pod = candidates[0];
    if let Err(blocked) = gate(o, None) {
        return Some(wait_step(blocked, None));
    }
    if let Some(p) = o.pods.values().find(|p| !p.ready || p.terminating) {
        return Some(wait_step(
            Blocked::new(
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
        return match gate(o, None) {
            Ok(_) => Step::Act {
                action: Action::DeletePod {
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
            &Action::DeletePod {
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
    fn no_pod_is_restarted_while_another_member_is_unhealthy() {
        let mut o = outdated(3);
        o.member_mut(1).healthy = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
        o.member_mut(1).healthy = true;
        o.operation = Some(op(K::RestartMember, 2, P::Recorded));
        o.member_mut(1).lag = Some(10_000);
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    }
}
