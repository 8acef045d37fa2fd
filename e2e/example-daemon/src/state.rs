//! State shared by the daemon's tasks: the apply state (written only by the journal follower),
//! the submit progress (written only by the submitter), and the views of both that the HTTP
//! server and the checkpoint take.

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, SubmitProgress};
use crate::digest::ApplyState;

/// Body of `GET /digest`. The e2e tests compare `digest` across pods once they all report the
/// same `appliedIndex`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestReport {
    pub daemon_id: String,
    /// Journal index of the last executed entry (0: none yet).
    pub applied_index: u64,
    /// Operations executed (equals `appliedIndex` unless the daemon ever had to resync).
    pub executed: u64,
    /// Running FNV-1a-64 digest of (logIndex, id, type) of everything executed, 16 hex digits.
    pub digest: String,
    /// Operations this daemon has started to submit (settled ones plus one in flight).
    pub submitted: u64,
    /// Submitted operations the sidecar answered as committed (including duplicates).
    pub acknowledged: u64,
    /// Submitted operations given up on (deadline passed or refused for good).
    pub failed: u64,
    /// The effect of the executed `example.increment` operations.
    pub counter: i64,
    /// Times the journal had been compacted past this daemon (see the README).
    pub resyncs: u64,
}

#[derive(Debug)]
struct SubmitState {
    progress: SubmitProgress,
    in_flight: bool,
}

#[derive(Debug)]
pub struct Shared {
    daemon_id: String,
    apply: Mutex<ApplyState>,
    submit: Mutex<SubmitState>,
}

/// A poisoned lock only means another task panicked while holding it; the data are plain
/// counters that are never left half-updated, so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub fn new(daemon_id: String, apply: ApplyState, progress: SubmitProgress) -> Self {
        Self {
            daemon_id,
            apply: Mutex::new(apply),
            submit: Mutex::new(SubmitState {
                progress,
                in_flight: false,
            }),
        }
    }

    pub fn daemon_id(&self) -> &str {
        &self.daemon_id
    }

    /// Change the apply state (journal follower only).
    pub fn with_apply<R>(&self, f: impl FnOnce(&mut ApplyState) -> R) -> R {
        f(&mut lock(&self.apply))
    }

    pub fn apply_state(&self) -> ApplyState {
        *lock(&self.apply)
    }

    pub fn submit_progress(&self) -> SubmitProgress {
        lock(&self.submit).progress
    }

    /// The submitter started on operation `progress.next`.
    pub fn begin_submit(&self) {
        lock(&self.submit).in_flight = true;
    }

    /// The operation in flight is settled: acknowledged, or given up on.
    pub fn settle(&self, acknowledged: bool) {
        let mut s = lock(&self.submit);
        s.in_flight = false;
        s.progress.next += 1;
        if acknowledged {
            s.progress.acknowledged += 1;
        } else {
            s.progress.failed += 1;
        }
    }

    /// The operation in flight was interrupted by shutdown: it stays the next one.
    pub fn abandon(&self) {
        lock(&self.submit).in_flight = false;
    }

    pub fn checkpoint(&self) -> Checkpoint {
        let apply = self.apply_state();
        Checkpoint::new(&self.daemon_id, &apply, self.submit_progress())
    }

    pub fn report(&self) -> DigestReport {
        let apply = self.apply_state();
        let (progress, in_flight) = {
            let s = lock(&self.submit);
            (s.progress, s.in_flight)
        };
        DigestReport {
            daemon_id: self.daemon_id.clone(),
            applied_index: apply.applied_index,
            executed: apply.executed,
            digest: apply.digest_hex(),
            submitted: progress.next.saturating_sub(1) + u64::from(in_flight),
            acknowledged: progress.acknowledged,
            failed: progress.failed,
            counter: apply.counter,
            resyncs: apply.resyncs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_settled_and_in_flight_operations() {
        let s = Shared::new("d".into(), ApplyState::default(), SubmitProgress::start());
        assert_eq!(s.report().submitted, 0);
        s.begin_submit();
        assert_eq!(s.report().submitted, 1);
        s.settle(true);
        s.begin_submit();
        s.settle(false);
        s.begin_submit();
        s.abandon();
        let r = s.report();
        assert_eq!((r.submitted, r.acknowledged, r.failed), (2, 1, 1));
        assert_eq!(s.submit_progress().next, 3);
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "daemonId",
            "appliedIndex",
            "executed",
            "digest",
            "submitted",
            "acknowledged",
            "failed",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }
}
