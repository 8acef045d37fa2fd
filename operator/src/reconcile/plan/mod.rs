//! The pure middle of the reconcile pipeline: observed state → at most one next step.
//!
//! Every safety rule of docs/operator.md ("How a reconcile works") lives here, and nothing here
//! does I/O:
//! 1. one membership change at a time, recorded in `status.operation` *before* it is acted on
//!    (`Step::Record`), so a restarted operator resumes it instead of starting another;
//! 2. the leader's committed membership is the truth: the StatefulSet size follows it and
//!    changes only to carry out a recorded step; a missing pod never shrinks anything;
//! 3. no change without health (a leader with a recent quorum, every voter healthy and caught
//!    up, no joint configuration); otherwise `Step::Wait` names the reason;
//! 4. `paused` stops everything.
//!
//! Each recorded step is goal-seeking: the plan looks at what is already true (is the learner
//! there? is the member gone?) rather than trusting the recorded phase, so a crash between an
//! action and the write of its new phase repeats nothing harmful: every action is idempotent
//! (`initialize` with the same members, adding a learner twice, removing a non-member, deleting
//! something already gone).
//!
//! This file holds the entry point [`plan`]: it applies rule 4, continues the recorded step, or
//! chooses the next change. One file per kind of step carries it out: `bootstrap`, `add`,
//! `remove`, `replace`, `restart`, `recover` (a person's request, which comes first). Dependencies point one way: this file → the step files →
//! `gate` (rule 3) → `step` (the shared types, re-exported here for the rest of the pipeline).

mod add;
mod bootstrap;
mod gate;
pub mod recover;
mod remove;
mod replace;
mod restart;
mod step;

use raft_crds::{OperationKind, OperationStatus};

pub use recover::RECOVER_FROM_ANNOTATION;
pub use step::{Action, Blocked, Outcome, Plan, Step, WaitReason};

use crate::reconcile::model::{LeaderView, Observed, is_caught_up};
use add::{abandon_add, continue_add, unfinished_learner};
use bootstrap::{bootstrap, continue_initialize, continue_restore};
use gate::gate;
use remove::{abandon_remove, continue_remove};
use replace::{continue_replace, replacement};
use restart::{continue_restart, rolling_update};
use step::{hold_size, new_step, target_ordinal, wait_step};

/// The next step for one cluster.
pub fn plan(o: &Observed) -> Plan {
    let replicas = hold_size(o);
    let step = if o.paused {
        wait_step(
            Blocked::new(
                WaitReason::Paused,
                "spec.paused is true: membership changes and restarts are stopped",
            ),
            o.operation.clone(),
        )
    } else if let Some(Ok(survivor)) = recover::decide(o) {
        Step::Record(new_step(
            OperationKind::RecoverFromMember,
            &survivor.pod,
            survivor.node_id,
            o,
        ))
    } else if let Some(op) = &o.operation {
        return continue_step(o, op);
    } else if o.cluster_id.is_none() {
        bootstrap(o)
    } else {
        next_change(o)
    };
    Plan {
        statefulset_replicas: replicas,
        step,
    }
}

// ---------------------------------------------------------------------------------------------
// Choosing the next change (no step in flight)

fn next_change(o: &Observed) -> Step {
    let Some(leader) = &o.leader else {
        return wait_step(
            Blocked::new(WaitReason::WaitingForLeader, "no leader answers"),
            None,
        );
    };
    if leader.cluster.joint {
        return wait_step(
            Blocked::new(
                WaitReason::JointConfiguration,
                "the membership is in a joint configuration with no step of ours in flight",
            ),
            None,
        );
    }
    if let Some(step) = replacement(o, leader) {
        return step;
    }
    if let Some(step) = unfinished_learner(o, leader) {
        return step;
    }
    if let Some(step) = resize(o, leader) {
        return step;
    }
    if let Some(step) = rolling_update(o, leader) {
        return step;
    }
    Step::Idle
}

/// Membership versus `spec.replicas`, one member at a time: the voters should be ordinals
/// `0..replicas`. Too few, or as many with a hole below `replicas` (a dead voter was removed
/// first): add the lowest missing ordinal. Too many: remove the highest, or first the one voter
/// that is down (it would block every other removal, and removing it costs no healthy member).
fn resize(o: &Observed, leader: &LeaderView) -> Option<Step> {
    let ours: Vec<(u32, u64)> = leader
        .cluster
        .members
        .iter()
        .filter_map(|m| Some((o.ordinal(m)?, m.node_id.parse().ok()?)))
        .collect();
    let count = ours.len() as u32;
    let hole = (0..o.desired_replicas).find(|i| !ours.iter().any(|(o, _)| o == i));
    if let Some(k) = hole.filter(|_| count <= o.desired_replicas) {
        return Some(match gate(o, None) {
            Ok(_) => Step::Record(new_step(OperationKind::AddMember, &o.names.pod(k), None, o)),
            Err(blocked) => wait_step(blocked, None),
        });
    }
    if count > o.desired_replicas {
        let down: Vec<(u32, u64)> = ours
            .iter()
            .filter(|(_, id)| leader.member_by_id(*id).is_some_and(|m| !is_caught_up(m)))
            .copied()
            .collect();
        let highest = ours.iter().max_by_key(|(o, _)| *o).copied()?;
        let (k, id) = match down.as_slice() {
            [one] => *one,
            _ => highest,
        };
        return Some(match gate(o, Some(id)) {
            Ok(_) => Step::Record(new_step(
                OperationKind::RemoveMember,
                &o.names.pod(k),
                Some(id),
                o,
            )),
            Err(blocked) => wait_step(blocked, None),
        });
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Carrying out a recorded step

fn continue_step(o: &Observed, step: &OperationStatus) -> Plan {
    let size = hold_size(o);
    let abandoned = match step.kind {
        OperationKind::AddMember => abandon_add(o, step, size),
        OperationKind::RemoveMember => abandon_remove(o, step, size),
        _ => None,
    };
    let (replicas, next) = abandoned.unwrap_or_else(|| match step.kind {
        OperationKind::Initialize => (size, continue_initialize(o, step)),
        OperationKind::RestoreFromBackup => (size, continue_restore(o, step)),
        OperationKind::RecoverFromMember => (size, recover::continue_recover(o, step)),
        OperationKind::AddMember => continue_add(o, step, size),
        OperationKind::RemoveMember => continue_remove(o, step, size),
        // The replaced pod keeps its ordinal while its old identity leaves the membership.
        OperationKind::ReplaceMember => {
            let keep = target_ordinal(o, step).map_or(size, |k| size.max(k + 1));
            (keep, continue_replace(o, step))
        }
        OperationKind::RestartMember => (size, continue_restart(o, step)),
    });
    Plan {
        statefulset_replicas: replicas,
        step: next,
    }
}

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
