//! Test support for the plan's tests (the ones beside each step file and the crash simulation in
//! `plan/tests.rs`): everything they use in one import — the entry point [`plan`], the plan's
//! types, the observed-state builders of `model::fixtures`, and assertions on a plan's step.
//!
//! Test-only (`#[cfg(test)] mod fixtures;` in `plan/mod.rs`). The tests drive every step through
//! `plan()`, as the reconcile does, so this is the one place that imports the entry point back.

pub use raft_crds::{OperationKind as K, OperationPhase as P, OperationStatus};

pub use super::plan;
pub use super::step::{Action, Outcome, Plan, Step, WaitReason};
pub use crate::reconcile::model::fixtures::*;
pub use crate::reconcile::model::{Observed, StatefulSetView};

pub fn recorded(plan: &Plan) -> &OperationStatus {
    match &plan.step {
        Step::Record(op) => op,
        other => panic!("expected a recorded step, got {other:?}"),
    }
}

pub fn action(plan: &Plan) -> (&Action, &OperationStatus) {
    match &plan.step {
        Step::Act { action, next } => (action, next),
        other => panic!("expected an action, got {other:?}"),
    }
}

pub fn waiting(plan: &Plan) -> WaitReason {
    match &plan.step {
        Step::Wait { blocked, .. } => blocked.reason,
        other => panic!("expected a wait, got {other:?}"),
    }
}
