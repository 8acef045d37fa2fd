//! Bootstrap: a cluster without a recorded id gets one `Initialize` step (recorded first, rule 1
//! of docs/operator.md), carried out on the lowest ordinal once every initial pod answers as
//! uninitialized; sidecars that already are members are adopted instead, never initialized twice.
//!
//! Called by `plan/mod.rs` (no cluster id yet → [`bootstrap`]; a recorded `Initialize` →
//! [`continue_initialize`]); uses only the shared types and builders of `step`.

use raft_api::admin::MemberSpec;
use raft_crds::{OperationKind, OperationPhase, OperationStatus};

use super::step::{
    Action, Blocked, Outcome, Step, WaitReason, hold_size, member_spec, new_step, wait_step,
    with_phase,
};
use crate::reconcile::model::{Observed, PodView};

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
        Err(Blocked::new(
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

pub(super) fn bootstrap(o: &Observed) -> Step {
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
        Err(blocked) => wait_step(blocked, None),
    }
}

pub(super) fn continue_initialize(o: &Observed, step: &OperationStatus) -> Step {
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
        return wait_step(
            Blocked::new(
                WaitReason::WaitingForLeader,
                "initialized; waiting for the first leader",
            ),
            Some(with_phase(step, OperationPhase::AwaitingCommit)),
        );
    }
    match initial_members(o, hold_size(o)) {
        Ok(members) => Step::Act {
            action: Action::Initialize {
                pod: o.names.pod(0),
                members,
            },
            next: with_phase(step, OperationPhase::AwaitingCommit),
        },
        Err(blocked) => wait_step(blocked, Some(step.clone())),
    }
}

#[cfg(test)]
mod tests {
    //! Bootstrap: initialize once, on the lowest ordinal, with every initial member; adopt
    //! sidecars that already are members; never initialize a cluster with a recorded id.

    use raft_api::admin::NodeRole;

    use crate::reconcile::plan::fixtures::*;

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
}
