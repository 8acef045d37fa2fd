//! The safety rules of docs/operator.md ("How a reconcile works") that `plan()` applies across
//! every kind of step, one behaviour per test (a steady cluster is left alone, a transient loss
//! shrinks nothing, a foreign joint configuration and `paused` stop every change), plus a
//! simulation that crashes the operator at every point between an action and the write of its
//! new phase. The tests of each kind of step sit beside it (`bootstrap.rs`, `add.rs`, ...).

use raft_api::admin::NodeRole;
use raft_api::daemon::MemberRole;

use super::fixtures::*;

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
            Action::EvictPod { .. }
            | Action::DiscardVolume { .. }
            | Action::RestoreFromBackup { .. }
            | Action::Recover { .. } => unreachable!(),
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
            update_revision: Some("rev-1".into()),
            applied: Default::default(),
        })
    );
}
