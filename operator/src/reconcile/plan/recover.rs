//! Recovery from a permanent quorum loss, on a person's request: the annotation
//! `consensus.unrdf.io/recover-from: POD` (any `@suffix` makes a new request with the same
//! pod). The named survivor becomes the only voter of the cluster, keeping everything its
//! store holds (the sidecar's `POST /admin/v1/recover`); the other pods are then added one at a
//! time like any new member (`add`).
//!
//! [`decide`] accepts a request only when every member that answers reports partition state
//! `minority`, fewer than a majority of the last recorded members answer, and the named pod is
//! a member holding the longest log (last term, then index) of those that answer; otherwise it
//! is refused with the reason, once (a new annotation value asks again). A request made while a
//! recovery runs waits for it to end. An accepted request replaces any other step in flight: a
//! step waiting on a quorum that is gone for good can never finish.
//!
//! Called by `plan/mod.rs` ([`decide`] before anything else, [`continue_recover`] for a
//! recorded `RecoverFromMember`); uses the shared builders of `step`.

use raft_api::daemon::PartitionState;
use raft_crds::{OperationKind, OperationPhase, OperationStatus};

use super::step::{
    Action, Blocked, Outcome, Step, WaitReason, recorded_id, target_ordinal, wait_step, with_phase,
};
use crate::reconcile::model::Observed;

/// The annotation whose new value asks for a recovery from the pod it names.
pub const RECOVER_FROM_ANNOTATION: &str = "consensus.unrdf.io/recover-from";

/// The survivor an accepted request recovers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    pub pod: String,
    pub node_id: Option<u64>,
    pub last_log_index: u64,
    pub last_log_term: u64,
}

/// The pod a request names (`POD` or `POD@anything`).
pub fn requested_pod(request: &str) -> &str {
    request.split('@').next().unwrap_or_default().trim()
}

/// The answer to an unanswered recovery request, if there is one. A request made while a
/// recovery is in flight waits for it to end (two survivors recovered would be two clusters).
pub fn decide(o: &Observed) -> Option<Result<Survivor, String>> {
    let request = o.recovery_request.as_deref()?;
    if o.operation
        .as_ref()
        .is_some_and(|op| op.kind == OperationKind::RecoverFromMember)
    {
        return None;
    }
    Some(check(o, requested_pod(request)))
}

/// Whether `name` may be recovered now: a member, cut off (only a minority answers), holding
/// the longest log of the members that answer.
fn check(o: &Observed, name: &str) -> Result<Survivor, String> {
    if o.cluster_id.is_none() {
        return Err("the cluster was never bootstrapped: there is nothing to recover".into());
    }
    let pod = o
        .names
        .ordinal_of(name)
        .and_then(|k| o.pods.get(&k))
        .filter(|p| !p.terminating)
        .ok_or_else(|| format!("{name:?} is not a running pod of this cluster"))?;
    let status = match &pod.node {
        Ok(s) => s,
        Err(e) => {
            return Err(format!(
                "{name} does not answer ({e}): it cannot be recovered"
            ));
        }
    };
    if !status.initialized {
        return Err(format!(
            "{name} is not a member (role {:?}): it holds nothing to recover",
            status.role
        ));
    }
    let answering: Vec<_> = o
        .pods
        .values()
        .filter_map(|p| p.status())
        .filter(|s| s.initialized)
        .collect();
    // `leaderless` means a majority answered lately: only `minority` says the quorum is gone.
    if let Some(in_touch) = answering
        .iter()
        .find(|s| s.partition_state != PartitionState::Minority)
    {
        return Err(format!(
            "{} reports partition state {} (only {} everywhere shows the quorum gone; a pod that \
             just started needs one detection window to tell): recovery is refused while a \
             quorum may be reachable",
            in_touch.name,
            in_touch.partition_state.as_str(),
            PartitionState::Minority.as_str()
        ));
    }
    let majority = o.recorded_members / 2 + 1;
    if o.recorded_members > 0 && answering.len() as u32 >= majority {
        return Err(format!(
            "{} members answer, a majority of the {} last recorded: the quorum is not lost",
            answering.len(),
            o.recorded_members
        ));
    }
    let key = |s: &raft_api::admin::NodeStatus| (s.last_log_term, s.last_log_index);
    if let Some(longer) = answering.iter().find(|s| key(s) > key(status)) {
        return Err(format!(
            "{} holds a longer log (term {}, index {}) than {name} (term {}, index {}): recover \
             from it, or lose what only it holds",
            longer.name,
            longer.last_log_term,
            longer.last_log_index,
            status.last_log_term,
            status.last_log_index
        ));
    }
    Ok(Survivor {
        pod: pod.name.clone(),
        node_id: pod.node_id(),
        last_log_index: status.last_log_index,
        last_log_term: status.last_log_term,
    })
}

/// Ask the survivor to recover, wait for it to restart under a new node id, finish once it
/// leads. The same request to a survivor that already has it is answered as "restarting".
pub(super) fn continue_recover(o: &Observed, step: &OperationStatus) -> Step {
    let old_id = recorded_id(step);
    if let Some(leader) = &o.leader
        && leader.pod == step.name
        && !leader.cluster.joint
        && leader.status.node_id.parse().ok() != old_id
    {
        return Step::Finish(Outcome::Recovered {
            name: step.name.clone(),
            node_id: leader.status.node_id.clone(),
        });
    }
    let pod = target_ordinal(o, step).and_then(|k| o.pods.get(&k));
    let given_up = |why: String| {
        Step::Finish(Outcome::Abandoned {
            kind: OperationKind::RecoverFromMember,
            name: step.name.clone(),
            why,
        })
    };
    match pod {
        Some(p) if p.ready && !p.terminating && p.status().is_some() => {
            if p.node_id() == old_id {
                let act = Step::Act {
                    action: Action::Recover {
                        pod: step.name.clone(),
                    },
                    next: with_phase(step, OperationPhase::AwaitingCommit),
                };
                match step.phase {
                    // Not asked yet: is it still true? The quorum may be back, or a member
                    // with a longer log. Once asked, the survivor decides (it may have the
                    // request already and be restarting; a refusal ends the step).
                    OperationPhase::Recorded => match check(o, &step.name) {
                        Ok(_) => act,
                        Err(why) => given_up(why),
                    },
                    _ => act,
                }
            } else if p.status().is_some_and(|s| !s.initialized) {
                given_up(format!(
                    "{} came back empty (node {}): it lost its data, there is nothing to \
                     recover from it",
                    step.name,
                    p.node_id()
                        .map_or_else(|| "?".to_owned(), |id| id.to_string())
                ))
            } else {
                wait_step(
                    Blocked::new(
                        WaitReason::WaitingForLeader,
                        format!("{} recovered; waiting for it to lead", step.name),
                    ),
                    Some(step.clone()),
                )
            }
        }
        _ => wait_step(
            Blocked::new(
                WaitReason::AwaitingPod,
                format!("waiting for {} to restart as the only voter", step.name),
            ),
            Some(step.clone()),
        ),
    }
}

#[cfg(test)]
mod tests {
    //! Recovery: accepted only without a quorum and from the longest log; carried out on the
    //! named pod; finished once it leads under its new id; the others then added one at a time.

    use raft_api::admin::NodeRole;
    use raft_api::daemon::PartitionState;

    use super::decide;
    use crate::reconcile::plan::fixtures::*;

    /// [`lost_majority`] at index 80, asked to recover from rc-0.
    fn lost_majority() -> Observed {
        let mut o = super::super::fixtures::lost_majority(80);
        o.recorded_commit_index = Some(80);
        o.recovery_request = Some("rc-0@1".into());
        o
    }

    #[test]
    fn a_recovery_is_recorded_for_the_named_survivor_once_no_quorum_answers() {
        let o = lost_majority();
        let survivor = decide(&o).unwrap().unwrap();
        assert_eq!(
            (survivor.pod.as_str(), survivor.last_log_index),
            ("rc-0", 80)
        );
        let op = recorded(&plan(&o)).clone();
        assert_eq!((op.kind, op.name.as_str()), (K::RecoverFromMember, "rc-0"));
    }

    #[test]
    fn a_recovery_is_refused_while_a_quorum_answers_or_from_a_shorter_log() {
        let o = healthy(3);
        let mut asked = o.clone();
        asked.recovery_request = Some("rc-1".into());
        let why = decide(&asked).unwrap().unwrap_err();
        assert!(why.contains("quorum may be reachable"), "{why}");
        assert!(
            !matches!(plan(&asked).step, Step::Record(ref op) if op.kind == K::RecoverFromMember),
            "refused: the plan goes on as without the request"
        );

        // Two survivors of five members, each cut off: the longer log must be the one kept.
        let mut o = lost_majority();
        o.recorded_members = 5;
        let mut other = node_status(2, NodeRole::Candidate, true);
        other.partition_state = PartitionState::Minority;
        other.last_log_index = 81;
        o.pods.insert(2, pod(2, other));
        let why = decide(&o).unwrap().unwrap_err();
        assert!(why.contains("rc-2 holds a longer log"), "{why}");
        o.recovery_request = Some("rc-2".into());
        assert!(decide(&o).unwrap().is_ok());

        for (request, says) in [("rc-1", "not a member"), ("rc-7", "not a running pod")] {
            let mut o = lost_majority();
            o.recovery_request = Some(request.into());
            let why = decide(&o).unwrap().unwrap_err();
            assert!(why.contains(says), "{request}: {why}");
        }
    }

    #[test]
    fn a_recorded_recovery_asks_the_survivor_then_waits_for_it_to_lead_under_a_new_id() {
        let mut o = lost_majority();
        o.recovery_request = None;
        o.operation = Some(op(K::RecoverFromMember, 0, P::Recorded));
        let p = plan(&o);
        let (a, next) = action(&p);
        assert_eq!(a, &Action::Recover { pod: "rc-0".into() });
        assert_eq!(next.phase, P::AwaitingCommit);
        o.operation = Some(next.clone());
        o.pods.get_mut(&0).unwrap().ready = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::AwaitingPod);

        // Back under a new id, leading a membership of itself alone.
        let mut recovered = node_status(0, NodeRole::Leader, true);
        recovered.node_id = "777".into();
        o.pods.insert(0, pod(0, recovered.clone()));
        assert_eq!(waiting(&plan(&o)), WaitReason::WaitingForLeader);
        let mut leader = healthy(1).leader.unwrap();
        leader.status = recovered;
        leader.cluster.members[0].node_id = "777".into();
        o.leader = Some(leader);
        assert_eq!(
            plan(&o).step,
            Step::Finish(Outcome::Recovered {
                name: "rc-0".into(),
                node_id: "777".into()
            })
        );
    }

    #[test]
    fn leaderless_or_a_majority_answering_is_no_lost_quorum() {
        // Leaderless: a majority answered lately, only no leader yet (a long election).
        let mut o = lost_majority();
        let mut s = o.pods[&0].status().unwrap().clone();
        s.partition_state = PartitionState::Leaderless;
        o.pods.insert(0, pod(0, s));
        let why = decide(&o).unwrap().unwrap_err();
        assert!(why.contains("leaderless"), "{why}");
        // Two of the three recorded members answer as members: that is a majority.
        let mut o = lost_majority();
        let mut other = node_status(1, NodeRole::Candidate, true);
        other.partition_state = PartitionState::Minority;
        other.last_log_index = 80;
        o.pods.insert(1, pod(1, other));
        let why = decide(&o).unwrap().unwrap_err();
        assert!(why.contains("a majority of the 3"), "{why}");
    }

    #[test]
    fn a_request_during_a_recovery_waits_for_it_to_end() {
        let mut o = lost_majority();
        o.operation = Some(op(K::RecoverFromMember, 0, P::AwaitingCommit));
        o.recovery_request = Some("rc-2@9".into());
        assert_eq!(decide(&o), None, "neither accepted nor refused yet");
        assert!(matches!(action(&plan(&o)).0, Action::Recover { pod } if pod == "rc-0"));
    }

    #[test]
    fn a_recorded_recovery_is_given_up_when_the_quorum_is_back_or_the_survivor_came_back_empty() {
        let mut o = lost_majority();
        o.recovery_request = None;
        o.operation = Some(op(K::RecoverFromMember, 0, P::Recorded));
        let mut back = o.pods[&0].status().unwrap().clone();
        back.partition_state = PartitionState::Healthy;
        o.pods.insert(0, pod(0, back));
        assert!(
            matches!(
                plan(&o).step,
                Step::Finish(Outcome::Abandoned {
                    kind: K::RecoverFromMember,
                    ..
                })
            ),
            "{:?}",
            plan(&o)
        );

        let mut o = lost_majority();
        o.recovery_request = None;
        o.operation = Some(op(K::RecoverFromMember, 0, P::AwaitingCommit));
        let mut empty = node_status(0, NodeRole::Uninitialized, false);
        empty.node_id = "555".into();
        o.pods.insert(0, pod(0, empty));
        let Step::Finish(Outcome::Abandoned { why, .. }) = plan(&o).step else {
            panic!("{:?}", plan(&o))
        };
        assert!(why.contains("came back empty"), "{why}");
    }

    #[test]
    fn an_accepted_recovery_replaces_a_step_stuck_on_the_lost_quorum() {
        let mut o = lost_majority();
        o.operation = Some(op(K::AddMember, 1, P::AwaitingCatchUp));
        let op = recorded(&plan(&o)).clone();
        assert_eq!(op.kind, K::RecoverFromMember);
    }
}
