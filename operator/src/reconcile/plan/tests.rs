//! The safety rules of docs/operator.md ("How a reconcile works"), one behaviour per test, plus
//! a simulation that crashes the operator at every point between an action and the write of its
//! new phase.

use raft_api::admin::NodeRole;
use raft_api::daemon::{MemberRole, PartitionState};
use raft_crds::{OperationKind as K, OperationPhase as P, OperationStatus};

use super::*;
use crate::reconcile::model::fixtures::*;
use crate::reconcile::model::{Observed, StatefulSetView};

fn recorded(plan: &Plan) -> &OperationStatus {
    match &plan.step {
        Step::Record(op) => op,
        other => panic!("expected a recorded step, got {other:?}"),
    }
}

fn action(plan: &Plan) -> (&Action, &OperationStatus) {
    match &plan.step {
        Step::Act { action, next } => (action, next),
        other => panic!("expected an action, got {other:?}"),
    }
}

fn waiting(plan: &Plan) -> WaitReason {
    match &plan.step {
        Step::Wait { blocked, .. } => blocked.reason,
        other => panic!("expected a wait, got {other:?}"),
    }
}

// --- bootstrap -------------------------------------------------------------------------------

#[test]
fn a_new_cluster_records_initialize_once_every_initial_pod_answers_uninitialized() {
    let o = fresh(3);
    let p = plan(&o);
    assert_eq!(p.statefulset_replicas, 3);
    let op = recorded(&p);
    assert_eq!((op.kind, op.name.as_str()), (K::Initialize, "rc-0"));
}

#[test]
fn bootstrap_waits_for_every_initial_pod() {
    let mut o = fresh(3);
    o.pods.get_mut(&2).unwrap().ready = false;
    let p = plan(&o);
    assert_eq!(waiting(&p), WaitReason::WaitingForPods);
    o.pods.remove(&1);
    assert_eq!(waiting(&plan(&o)), WaitReason::WaitingForPods);
}

#[test]
fn before_bootstrap_the_statefulset_is_created_at_the_spec_size() {
    let mut o = fresh(3);
    o.statefulset = None;
    o.pods.clear();
    o.pvcs.clear();
    assert_eq!(plan(&o).statefulset_replicas, 3);
}

#[test]
fn initialize_goes_to_the_lowest_ordinal_with_every_member_in_order() {
    let mut o = fresh(3);
    o.operation = Some(op(K::Initialize, 0, P::Recorded));
    let p = plan(&o);
    let (a, next) = action(&p);
    let Action::Initialize { pod, members } = a else {
        panic!("{a:?}")
    };
    assert_eq!(pod, "rc-0");
    let ids: Vec<u64> = members.iter().map(|m| m.node_id).collect();
    assert_eq!(ids, vec![node_id(0), node_id(1), node_id(2)]);
    assert_eq!(members[1].address, "rc-1.rc.ns.svc.cluster.local:7070");
    assert_eq!(next.phase, P::AwaitingCommit);
}

#[test]
fn a_crash_after_initialize_waits_for_the_leader_instead_of_initializing_again() {
    let mut o = fresh(3);
    o.operation = Some(op(K::Initialize, 0, P::Recorded));
    o.pods
        .insert(0, pod(0, node_status(0, NodeRole::Follower, true)));
    assert_eq!(waiting(&plan(&o)), WaitReason::WaitingForLeader);
}

#[test]
fn initialize_finishes_with_the_cluster_id_once_a_leader_reports_the_membership() {
    let mut o = healthy(3);
    o.cluster_id = None;
    o.operation = Some(op(K::Initialize, 0, P::AwaitingCommit));
    assert_eq!(
        plan(&o).step,
        Step::Finish(Outcome::Initialized {
            cluster_id: "rc-cafe".into()
        })
    );
}

#[test]
fn a_cluster_with_a_recorded_id_is_never_initialized_again_even_if_every_volume_is_empty() {
    let mut o = fresh(3);
    o.cluster_id = Some("rc-cafe".into());
    let p = plan(&o);
    assert!(
        !matches!(&p.step, Step::Record(op) if op.kind == K::Initialize),
        "{p:?}"
    );
    assert_eq!(waiting(&p), WaitReason::WaitingForLeader);
}

#[test]
fn sidecars_already_initialized_are_adopted_not_initialized() {
    let mut o = healthy(3);
    o.cluster_id = None;
    assert_eq!(
        plan(&o).step,
        Step::Adopt {
            cluster_id: "rc-cafe".into()
        }
    );
}

// --- steady state and transient loss -----------------------------------------------------------

#[test]
fn a_healthy_cluster_at_its_size_is_left_alone() {
    let p = plan(&healthy(3));
    assert_eq!(
        p,
        Plan {
            statefulset_replicas: 3,
            step: Step::Idle
        }
    );
}

#[test]
fn a_missing_pod_never_shrinks_the_statefulset() {
    let mut o = healthy(3);
    o.pods.remove(&2);
    o.member_mut(2).healthy = false;
    let p = plan(&o);
    assert_eq!(p.statefulset_replicas, 3);
    assert_eq!(p.step, Step::Idle);
    // Nor does losing the leader's answer.
    o.leader = None;
    assert_eq!(plan(&o).statefulset_replicas, 3);
}

#[test]
fn a_statefulset_scaled_down_by_hand_is_restored_to_the_membership() {
    let mut o = healthy(3);
    o.statefulset.as_mut().unwrap().replicas = 1;
    assert_eq!(plan(&o).statefulset_replicas, 3);
}

#[test]
fn a_joint_configuration_with_no_step_of_ours_blocks_every_change() {
    let mut o = healthy(3);
    o.desired_replicas = 5;
    o.leader_mut().cluster.joint = true;
    assert_eq!(waiting(&plan(&o)), WaitReason::JointConfiguration);
}

#[test]
fn paused_stops_a_step_in_flight_and_keeps_it_recorded() {
    let mut o = healthy(3);
    o.paused = true;
    o.desired_replicas = 5;
    o.operation = Some(op(K::AddMember, 3, P::AwaitingPod));
    let p = plan(&o);
    assert_eq!(waiting(&p), WaitReason::Paused);
    let Step::Wait { operation, .. } = p.step else {
        unreachable!()
    };
    assert_eq!(operation, o.operation);
    assert_eq!(p.statefulset_replicas, 3);
}

// --- scale up --------------------------------------------------------------------------------

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
fn scale_up_waits_while_a_voter_is_unhealthy_or_lagging() {
    let mut o = healthy(3);
    o.desired_replicas = 5;
    o.member_mut(1).healthy = false;
    assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    o.member_mut(1).healthy = true;
    o.member_mut(2).lag = Some(1000);
    assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
}

#[test]
fn scale_up_waits_while_the_leader_has_no_quorum() {
    let mut o = healthy(3);
    o.desired_replicas = 5;
    o.leader_mut().status.partition_state = PartitionState::Minority;
    assert_eq!(waiting(&plan(&o)), WaitReason::WaitingForQuorum);
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
fn a_step_in_flight_is_finished_even_if_the_spec_changes_meanwhile() {
    let mut o = healthy(3);
    o.desired_replicas = 3; // was 5 when rc-3 was recorded
    o.operation = Some(op(K::AddMember, 3, P::AwaitingPod));
    o.add_fresh_pod(3);
    let p = plan(&o);
    assert!(matches!(action(&p).0, Action::AddLearner(_)));
}

#[test]
fn a_pod_holding_a_removed_members_data_gets_a_fresh_volume() {
    let mut o = healthy(3);
    o.desired_replicas = 5;
    o.operation = Some(op(K::AddMember, 3, P::AwaitingPod));
    o.add_fresh_pod(3);
    o.pods.get_mut(&3).unwrap().node = Ok(node_status(3, NodeRole::Removed, true));
    let p = plan(&o);
    assert_eq!(
        action(&p).0,
        &Action::DiscardVolume {
            pod: "rc-3".into(),
            uid: "uid-3".into(),
            pvc: "data-rc-3".into()
        }
    );
}

// --- scale down ------------------------------------------------------------------------------

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

// --- replace ---------------------------------------------------------------------------------

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

// --- rolling update ---------------------------------------------------------------------------

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

// --- crash simulation --------------------------------------------------------------------------

/// A tiny model of the world the plan acts on: the membership (as the leader reports it), the
/// StatefulSet, pods and claims. Actions change it the way the API server and the sidecars
/// would; the StatefulSet controller is simulated by `settle`.
struct World {
    o: Observed,
}

impl World {
    fn settle(&mut self) {
        let size = self.o.statefulset.as_ref().unwrap().replicas;
        let existing: Vec<u32> = self.o.pods.keys().copied().collect();
        for k in existing {
            if k >= size {
                self.o.pods.remove(&k);
                self.o.pvcs.remove(&k); // whenScaled: Delete
            }
        }
        for k in 0..size {
            if !self.o.pods.contains_key(&k) {
                let member = self
                    .o
                    .leader
                    .as_ref()
                    .and_then(|l| l.member_by_id(node_id(k)).cloned());
                let status = if member.is_some() {
                    node_status(k, NodeRole::Follower, true)
                } else {
                    node_status(k, NodeRole::Uninitialized, false)
                };
                self.o.pods.insert(k, pod(k, status));
                self.o.pvcs.insert(k);
            }
        }
    }

    fn apply(&mut self, action: &Action) {
        let leader = self.o.leader.as_mut().unwrap();
        match action {
            Action::None | Action::Initialize { .. } => {}
            Action::AddLearner(spec) => {
                if leader.member_by_id(spec.node_id).is_none() {
                    let k = (spec.node_id - 1000) as u32;
                    leader.cluster.members.push(member(k, MemberRole::Learner));
                }
            }
            Action::Promote(id) => {
                for m in &mut leader.cluster.members {
                    if m.node_id == id.to_string() {
                        m.role = MemberRole::Voter;
                    }
                }
            }
            Action::Remove(id) => leader
                .cluster
                .members
                .retain(|m| m.node_id != id.to_string()),
            Action::DeletePvc { name } => {
                let k: u32 = name.rsplit('-').next().unwrap().parse().unwrap();
                self.o.pvcs.remove(&k);
            }
            Action::DeletePod { .. } | Action::DiscardVolume { .. } => unreachable!(),
        }
    }

    fn invariants(&self, before_members: usize) {
        let members = self.o.leader.as_ref().unwrap().cluster.members.len();
        assert!(
            members.abs_diff(before_members) <= 1,
            "membership changed by more than one member in one reconcile"
        );
        let extent = self.o.membership_extent().unwrap();
        assert!(
            self.o.statefulset.as_ref().unwrap().replicas >= extent,
            "StatefulSet smaller than the membership"
        );
    }

    /// Run reconciles until idle; `crash_at` drops the status write of that action (the
    /// operator died between the action and recording its outcome).
    fn converge(&mut self, crash_at: Option<usize>) -> usize {
        let mut actions = 0;
        for _ in 0..200 {
            let before = self.o.leader.as_ref().unwrap().cluster.members.len();
            let p = plan(&self.o);
            self.o.statefulset.as_mut().unwrap().replicas = p.statefulset_replicas;
            match p.step {
                Step::Idle => return actions,
                Step::Record(op) => self.o.operation = Some(op),
                Step::Act { action, next } => {
                    self.apply(&action);
                    if crash_at != Some(actions) {
                        self.o.operation = Some(next);
                    }
                    actions += 1;
                }
                Step::Finish(_) => self.o.operation = None,
                Step::Wait { operation, .. } => {
                    if operation.is_some() {
                        self.o.operation = operation;
                    }
                }
                Step::Adopt { .. } => unreachable!(),
            }
            self.settle();
            self.invariants(before);
        }
        panic!("did not converge: {:?}", self.o.operation);
    }
}

#[test]
fn scaling_3_to_5_to_3_converges_whatever_action_the_operator_crashes_after() {
    let baseline = {
        let mut w = World { o: healthy(3) };
        w.o.desired_replicas = 5;
        let up = w.converge(None);
        w.o.desired_replicas = 3;
        up + w.converge(None)
    };
    assert_eq!(
        baseline, 6,
        "learner + promote per add, one removal per member"
    );
    for crash_at in 0..baseline {
        let mut w = World { o: healthy(3) };
        w.o.desired_replicas = 5;
        let up = w.converge(Some(crash_at));
        assert_eq!(w.o.leader.as_ref().unwrap().voters().count(), 5);
        assert_eq!(w.o.statefulset.as_ref().unwrap().replicas, 5);
        w.o.desired_replicas = 3;
        w.converge(crash_at.checked_sub(up));
        assert_eq!(
            w.o.leader.as_ref().unwrap().voters().count(),
            3,
            "crash at {crash_at}"
        );
        assert_eq!(w.o.statefulset.as_ref().unwrap().replicas, 3);
        assert_eq!(w.o.pvcs.len(), 3, "removed ordinals' claims are gone");
        assert!(w.o.operation.is_none());
    }
}

#[test]
fn statefulset_view_is_only_changed_through_the_plan() {
    // Guard for the simulation above: the fixture StatefulSet starts at the membership size.
    assert_eq!(
        healthy(3).statefulset,
        Some(StatefulSetView {
            replicas: 3,
            update_revision: Some("rev-1".into())
        })
    );
}
