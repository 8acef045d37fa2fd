//! Bootstrap: a cluster without a recorded id gets one `Initialize` step (recorded first, rule 1
//! of docs/operator.md), carried out on the lowest ordinal once every initial pod answers as
//! uninitialized; sidecars that already are members are adopted instead, never initialized twice.
//!
//! With `spec.bootstrap.fromBackup` the step is `RestoreFromBackup` instead: the lowest ordinal
//! restores the backup through its admin API and restarts as the only voter; the other pods
//! then join one at a time like any added member (`add`). The restore goes to a running sidecar
//! that has never been a member, never to an init container: a pod that later loses its volume
//! must rejoin the cluster, not restore the backup again and lead a cluster of its own.
//!
//! Called by `plan/mod.rs` (no cluster id yet → [`bootstrap`]; a recorded `Initialize` →
//! [`continue_initialize`], `RestoreFromBackup` → [`continue_restore`]); uses only the shared
//! types and builders of `step`.

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
    if o.from_backup.is_some() {
        return match first_pod_blank(o) {
            Ok(pod) => Step::Record(new_step(
                OperationKind::RestoreFromBackup,
                &pod.name,
                pod.node_id(),
                o,
            )),
            Err(blocked) => wait_step(blocked, None),
        };
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

/// The lowest ordinal's pod, Ready and answering as uninitialized; or why not.
fn first_pod_blank(o: &Observed) -> Result<&PodView, Blocked> {
    match o.pods.get(&0) {
        Some(p) if p.is_uninitialized() => Ok(p),
        _ => Err(Blocked::new(
            WaitReason::WaitingForPods,
            format!(
                "waiting for pod {} to be Ready and answer as uninitialized",
                o.names.pod(0)
            ),
        )),
    }
}

/// Restore into the lowest ordinal, wait for it to restart onto the backup, finish once it
/// leads. A sidecar that answers as uninitialized again (it restarted before staging the
/// backup) gets the restore again: the call is refused, never repeated, once one is staged.
pub(super) fn continue_restore(o: &Observed, step: &OperationStatus) -> Step {
    if let Some(leader) = &o.leader
        && !leader.cluster.joint
        && !leader.cluster.members.is_empty()
    {
        return Step::Finish(Outcome::Restored {
            cluster_id: leader.status.cluster_id.clone(),
            from: leader.status.restored_from.clone(),
        });
    }
    let first = o.pods.get(&0);
    if first
        .and_then(PodView::status)
        .is_some_and(|s| s.initialized)
    {
        return wait_step(
            Blocked::new(
                WaitReason::WaitingForLeader,
                "restored; waiting for it to lead",
            ),
            Some(with_phase(step, OperationPhase::AwaitingCommit)),
        );
    }
    let Some(from) = &o.from_backup else {
        return Step::Finish(Outcome::Abandoned {
            kind: OperationKind::RestoreFromBackup,
            name: step.name.clone(),
            why: "spec.bootstrap.fromBackup was removed".into(),
        });
    };
    match first_pod_blank(o) {
        // Acted on before: the pod is (or was) restarting onto the staged backup.
        Err(_) if step.phase == OperationPhase::AwaitingCommit => wait_step(
            Blocked::new(
                WaitReason::AwaitingPod,
                format!(
                    "waiting for {} to restart onto the restored backup",
                    step.name
                ),
            ),
            Some(step.clone()),
        ),
        Ok(pod) => Step::Act {
            action: Action::RestoreFromBackup {
                pod: pod.name.clone(),
                from: from.clone(),
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

    use crate::reconcile::model::LeaderView;
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

    fn from_backup(mut o: Observed) -> Observed {
        o.from_backup = Some(raft_crds::FromBackupSpec {
            s3: Some(raft_crds::S3Destination {
                bucket: "backups".into(),
                prefix: Some("prod/rc".into()),
                endpoint: None,
                region: None,
                credentials_secret: "s3".into(),
            }),
            persistent_volume_claim: None,
            backup: raft_crds::LATEST_BACKUP.into(),
        });
        o
    }

    /// Only rc-0 restored and leading alone; the others still blank.
    fn restored_alone(mut o: Observed) -> Observed {
        let mut leader = node_status(0, NodeRole::Leader, true);
        leader.restored_from = Some(raft_api::admin::RestoredFrom {
            kind: raft_api::admin::RestoreKind::Backup,
            parent_cluster_id: Some("old-cluster".into()),
            snapshot_id: "3-250-1".into(),
            last_log_index: 250,
            last_log_term: 3,
            sha256: "ab".into(),
        });
        o.pods.insert(0, pod(0, leader.clone()));
        let reference = healthy(1).leader.unwrap();
        o.leader = Some(LeaderView {
            status: leader,
            ..reference
        });
        o
    }

    #[test]
    fn a_cluster_from_a_backup_records_a_restore_on_the_first_pod_alone() {
        let mut o = from_backup(fresh(3));
        o.pods.remove(&2);
        let op = recorded(&plan(&o)).clone();
        assert_eq!((op.kind, op.name.as_str()), (K::RestoreFromBackup, "rc-0"));
        o.pods.get_mut(&0).unwrap().ready = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::WaitingForPods);
    }

    #[test]
    fn the_restore_goes_to_the_first_pod_then_waits_for_it_to_restart_onto_the_backup() {
        let mut o = from_backup(fresh(3));
        o.operation = Some(op(K::RestoreFromBackup, 0, P::Recorded));
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 3, "the other pods stay, blank");
        let (a, next) = action(&p);
        assert_eq!(
            a,
            &Action::RestoreFromBackup {
                pod: "rc-0".into(),
                from: o.from_backup.clone().unwrap()
            }
        );
        assert_eq!(next.phase, P::AwaitingCommit);
        // Restarting: not Ready, then initialized but not leading yet.
        o.operation = Some(next.clone());
        o.pods.get_mut(&0).unwrap().ready = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::AwaitingPod);
        o.pods
            .insert(0, pod(0, node_status(0, NodeRole::Candidate, true)));
        assert_eq!(waiting(&plan(&o)), WaitReason::WaitingForLeader);
    }

    #[test]
    fn a_blank_first_pod_after_the_restore_was_acted_on_gets_it_again() {
        let mut o = from_backup(fresh(3));
        o.operation = Some(op(K::RestoreFromBackup, 0, P::AwaitingCommit));
        let p = plan(&o);
        let (a, _) = action(&p);
        assert!(matches!(a, Action::RestoreFromBackup { .. }), "{a:?}");
    }

    #[test]
    fn a_restore_finishes_once_the_first_member_leads_and_the_others_are_added_one_at_a_time() {
        let mut o = restored_alone(from_backup(fresh(3)));
        o.operation = Some(op(K::RestoreFromBackup, 0, P::AwaitingCommit));
        let Step::Finish(Outcome::Restored { cluster_id, from }) = plan(&o).step else {
            panic!("{:?}", plan(&o))
        };
        assert_eq!(cluster_id, "rc-cafe");
        assert_eq!(
            from.unwrap().parent_cluster_id.as_deref(),
            Some("old-cluster")
        );
        o.operation = None;
        o.cluster_id = Some(cluster_id);
        let p = plan(&o);
        assert_eq!(p.statefulset_replicas, 3);
        let next = recorded(&p);
        assert_eq!((next.kind, next.name.as_str()), (K::AddMember, "rc-1"));
    }

    #[test]
    fn a_cluster_with_a_backup_to_restore_is_never_initialized_empty() {
        let mut o = from_backup(fresh(3));
        for ready in [true, false] {
            o.pods.get_mut(&0).unwrap().ready = ready;
            let p = plan(&o);
            assert!(
                !matches!(&p.step, Step::Record(op) if op.kind == K::Initialize),
                "{p:?}"
            );
        }
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
