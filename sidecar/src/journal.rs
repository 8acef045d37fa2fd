//! The operation journal: the replicated state machine's pure core.
//!
//! Every committed Raft entry carrying a [`Proposal`] is applied here, one operation at a time,
//! by [`apply_operation`]: a function of (journal state, what is known about the id, operation)
//! → (new journal state, outcome). It performs no I/O; the RocksDB adapter in
//! `store::state_machine` looks the id up, calls it, and writes the outcome's effects in the same
//! write batch as the applied log id, which is what makes deduplication exactly-once.
//!
//! Journal indices are dense (1, 2, 3, …) and assigned here, so they are identical on every
//! node and strictly increasing even though many operations share one Raft entry.

use serde::{Deserialize, Serialize};

/// An operation as it travels in Raft entries and sits in the journal. The payload is kept as
/// canonical JSON text (keys sorted, no whitespace) so the binary codecs need no self-describing
/// format and "same content" is a byte comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOperation {
    pub id: String,
    pub op_type: String,
    pub payload: Option<String>,
    pub daemon_id: Option<String>,
    pub timestamp: Option<u64>,
}

impl StoredOperation {
    /// A SHA-256 digest of what makes two submissions "the same operation": its type and
    /// payload (each length-prefixed, so no two different pairs share an encoding). Stable
    /// across builds and versions, and collision-resistant: a different operation under a
    /// remembered id is always a conflict, never taken for a duplicate.
    pub fn content_digest(&self) -> Digest {
        use sha2::Digest as _;
        let payload = self.payload.as_deref().unwrap_or("");
        let mut hash = sha2::Sha256::new();
        for part in [self.op_type.as_bytes(), payload.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.update([u8::from(self.payload.is_some())]);
        hash.finalize().into()
    }

    /// Bytes this operation takes in a Raft entry (used to size batches).
    pub fn approx_size(&self) -> usize {
        self.id.len()
            + self.op_type.len()
            + self.payload.as_ref().map_or(0, String::len)
            + self.daemon_id.as_ref().map_or(0, String::len)
            + 24
    }
}

/// The application data of one Raft entry: a batch of operations proposed together by a leader.
///
/// Nothing in it depends on a wall clock: `clock_ms` is the leader's reading of the replicated
/// dedupe clock (see [`advance_clock`]), and the dedupe window is the cluster's, held in the
/// replicated [`JournalState`]; a proposal only names the window a cluster without one adopts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub operations: Vec<StoredOperation>,
    /// The proposing leader's reading of the replicated clock, in milliseconds.
    pub clock_ms: u64,
    /// The dedupe window the cluster adopts if it has none yet (the first leader's
    /// `--dedupe-window`); ignored once the cluster has one.
    pub initial_window_ms: u64,
    /// A change of the cluster's dedupe window (`PUT /admin/v1/settings`), carried by an
    /// entry without operations.
    pub set_window_ms: Option<u64>,
}

/// What applying one operation did. One per operation of a [`Proposal`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpOutcome {
    /// Appended to the journal at `index`.
    Appended { index: u64, term: u64 },
    /// Already committed at `index`: not appended again.
    Duplicate { index: u64, term: u64 },
    /// The id is committed at `index` with different content: refused (`ID_CONFLICT`).
    Conflict { index: u64 },
}

/// A [`StoredOperation::content_digest`].
pub type Digest = [u8; 32];

/// What the state machine remembers about a committed operation id, for the dedupe window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeRecord {
    pub index: u64,
    pub term: u64,
    pub digest: Digest,
    /// The replicated clock when it was committed (not a wall-clock time).
    pub committed_at_ms: u64,
}

/// One journal slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub term: u64,
    pub operation: StoredOperation,
}

/// A [`JournalRecord`] to write, borrowing its operation from the applied entry; encodes to
/// the same bytes.
#[derive(Debug, Serialize)]
pub struct JournalRecordRef<'a> {
    pub term: u64,
    pub operation: &'a StoredOperation,
}

/// The journal's bookkeeping; the records themselves live in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalState {
    /// Index the next appended operation gets.
    pub next_index: u64,
    /// Oldest index still retained (== `next_index` when empty).
    pub first_index: u64,
    /// The replicated dedupe clock, in milliseconds: the largest `clock_ms` of any applied
    /// proposal. Leaders advance it by the time their monotonic clocks measure, so it never
    /// runs ahead of real time and no node's wall clock moves it.
    pub clock_ms: u64,
    /// The cluster's dedupe window; `None` until the first proposal is applied.
    pub dedupe_window_ms: Option<u64>,
    /// Dedupe records committed before this clock reading are forgotten. Only ever moves
    /// forward (also when the window is lengthened), so whether a record is live depends on
    /// the entries applied, never on how they were grouped or when its garbage was collected.
    pub dedupe_horizon_ms: u64,
}

impl Default for JournalState {
    fn default() -> Self {
        Self {
            next_index: 1,
            first_index: 1,
            clock_ms: 0,
            dedupe_window_ms: None,
            dedupe_horizon_ms: 0,
        }
    }
}

impl JournalState {
    /// Whether `record` is still within the dedupe window: committed at or after the horizon.
    /// Applies and lookups both decide by this, whatever garbage collection has deleted yet.
    pub fn remembers(&self, record: &DedupeRecord) -> bool {
        record.committed_at_ms >= self.dedupe_horizon_ms
    }

    /// Newest appended index (0 when nothing was ever appended).
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    /// The oldest index to keep so at most `retention` records remain.
    pub fn retained_from(&self, retention: u64) -> u64 {
        self.first_index
            .max(self.next_index.saturating_sub(retention.max(1)))
    }
}

/// Apply one operation committed in a Raft entry of `term`, after [`advance_clock`] for that
/// entry.
///
/// `known` is the stored dedupe record of `op.id`, if any; one committed before the state's
/// dedupe horizon counts as forgotten. Returns the outcome and, for `Appended`, the record to
/// store under the id, stamped with the replicated clock.
pub fn apply_operation(
    state: &mut JournalState,
    known: Option<&DedupeRecord>,
    op: &StoredOperation,
    term: u64,
) -> (OpOutcome, Option<DedupeRecord>) {
    let committed_at_ms = state.clock_ms;
    let digest = op.content_digest();
    let live = known.filter(|rec| state.remembers(rec));
    match live {
        Some(rec) if rec.digest == digest => (
            OpOutcome::Duplicate {
                index: rec.index,
                term: rec.term,
            },
            None,
        ),
        Some(rec) => (OpOutcome::Conflict { index: rec.index }, None),
        None => {
            let index = state.next_index;
            state.next_index += 1;
            let record = DedupeRecord {
                index,
                term,
                digest,
                committed_at_ms,
            };
            (OpOutcome::Appended { index, term }, Some(record))
        }
    }
}

/// Apply the clock and settings of `proposal` before its operations: the replicated clock
/// becomes `max(clock, proposal.clock_ms)` (a leader whose reading is behind never moves it
/// back), the window is set if the cluster has none or the entry changes it, and the dedupe
/// horizon moves to `clock − window` if that is later. Returns the horizon.
pub fn advance_clock(state: &mut JournalState, proposal: &Proposal) -> u64 {
    state.clock_ms = state.clock_ms.max(proposal.clock_ms);
    let window = match (proposal.set_window_ms, state.dedupe_window_ms) {
        (Some(set), _) => set,
        (None, Some(current)) => current,
        (None, None) => proposal.initial_window_ms,
    };
    state.dedupe_window_ms = Some(window);
    let horizon = state.clock_ms.saturating_sub(window);
    state.dedupe_horizon_ms = state.dedupe_horizon_ms.max(horizon);
    state.dedupe_horizon_ms
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn op(id: &str, payload: &str) -> StoredOperation {
        StoredOperation {
            id: id.into(),
            op_type: "data_import".into(),
            payload: Some(payload.into()),
            daemon_id: None,
            timestamp: None,
        }
    }

    /// Applies operations the way the store does: look up, apply, remember.
    fn apply_all(
        state: &mut JournalState,
        seen: &mut HashMap<String, DedupeRecord>,
        ops: &[StoredOperation],
        term: u64,
    ) -> Vec<OpOutcome> {
        ops.iter()
            .map(|o| {
                let (outcome, rec) = apply_operation(state, seen.get(&o.id), o, term);
                if let Some(rec) = rec {
                    seen.insert(o.id.clone(), rec);
                }
                outcome
            })
            .collect()
    }

    #[test]
    fn operations_get_dense_increasing_indices() {
        let mut state = JournalState::default();
        let mut seen = HashMap::new();
        let out = apply_all(
            &mut state,
            &mut seen,
            &[op("a", "1"), op("b", "2"), op("c", "3")],
            2,
        );
        assert_eq!(
            out,
            vec![
                OpOutcome::Appended { index: 1, term: 2 },
                OpOutcome::Appended { index: 2, term: 2 },
                OpOutcome::Appended { index: 3, term: 2 },
            ]
        );
        assert_eq!(state.last_index(), 3);
    }

    #[test]
    fn a_resubmitted_id_with_the_same_content_is_a_duplicate_of_the_original() {
        let mut state = JournalState::default();
        let mut seen = HashMap::new();
        apply_all(&mut state, &mut seen, &[op("a", "1")], 1);
        // The second copy arrives later, from another leader, in another term.
        let out = apply_all(&mut state, &mut seen, &[op("a", "1")], 5);
        assert_eq!(out, vec![OpOutcome::Duplicate { index: 1, term: 1 }]);
        assert_eq!(state.next_index, 2, "a duplicate is not appended");
    }

    #[test]
    fn two_copies_in_one_batch_are_appended_once() {
        let mut state = JournalState::default();
        let mut seen = HashMap::new();
        let out = apply_all(&mut state, &mut seen, &[op("a", "1"), op("a", "1")], 1);
        assert_eq!(
            out,
            vec![
                OpOutcome::Appended { index: 1, term: 1 },
                OpOutcome::Duplicate { index: 1, term: 1 }
            ]
        );
    }

    #[test]
    fn the_same_id_with_other_content_conflicts() {
        let mut state = JournalState::default();
        let mut seen = HashMap::new();
        apply_all(&mut state, &mut seen, &[op("a", "1")], 1);
        let out = apply_all(&mut state, &mut seen, &[op("a", "2")], 1);
        assert_eq!(out, vec![OpOutcome::Conflict { index: 1 }]);
        let mut other_type = op("a", "1");
        other_type.op_type = "other".into();
        let out = apply_all(&mut state, &mut seen, &[other_type], 1);
        assert_eq!(out, vec![OpOutcome::Conflict { index: 1 }]);
    }

    #[test]
    fn daemon_id_and_timestamp_do_not_change_the_identity_of_content() {
        let mut a = op("a", "1");
        let b = op("a", "1");
        a.daemon_id = Some("d-1".into());
        a.timestamp = Some(9);
        assert_eq!(a.content_digest(), b.content_digest());
        assert_ne!(
            op("a", "1").content_digest(),
            op("a", "12").content_digest()
        );
        // Where the type ends and the payload begins is part of the content.
        let (mut ab, mut a) = (op("a", "b"), op("a", "ab"));
        ab.op_type = "a".into();
        a.op_type = String::new();
        assert_ne!(ab.content_digest(), a.content_digest());
        let mut none = op("a", "");
        none.payload = None;
        assert_ne!(none.content_digest(), op("a", "").content_digest());
    }

    #[test]
    fn digests_are_stable_across_builds() {
        // Pinned value (also computed independently: SHA-256 of be64(11) "data_import" be64(2)
        // "{}" 0x01): a change here would make nodes of different versions disagree.
        let hex: String = op("x", "{}")
            .content_digest()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "4212afce264cf674a9cf11f148309b0fe5183daa257361633b9d48700cabf84c"
        );
    }

    #[test]
    fn retention_keeps_the_newest_records() {
        let state = JournalState {
            next_index: 101,
            first_index: 1,
            ..JournalState::default()
        };
        assert_eq!(state.retained_from(10), 91);
        assert_eq!(state.retained_from(1_000), 1);
        let state = JournalState {
            next_index: 101,
            first_index: 95,
            ..JournalState::default()
        };
        assert_eq!(state.retained_from(10), 95, "never moves backwards");
    }

    #[test]
    fn borrowed_records_and_shared_proposals_encode_as_the_owned_ones() {
        // On-disk and wire compatibility of the zero-copy forms with what older nodes wrote.
        let owned = JournalRecord {
            term: 7,
            operation: op("a", "x"),
        };
        let borrowed = JournalRecordRef {
            term: 7,
            operation: &owned.operation,
        };
        assert_eq!(
            postcard::to_allocvec(&borrowed).unwrap(),
            postcard::to_allocvec(&owned).unwrap()
        );
        let proposal = Proposal {
            operations: vec![op("a", "x"), op("b", "y")],
            clock_ms: 5,
            initial_window_ms: 9,
            set_window_ms: Some(11),
        };
        let shared = postcard::to_allocvec(&std::sync::Arc::new(proposal.clone())).unwrap();
        assert_eq!(shared, postcard::to_allocvec(&proposal).unwrap());
        let back: std::sync::Arc<Proposal> = postcard::from_bytes(&shared).unwrap();
        assert_eq!(*back, proposal);
    }

    fn proposal(clock_ms: u64, initial_window_ms: u64, set_window_ms: Option<u64>) -> Proposal {
        Proposal {
            operations: vec![],
            clock_ms,
            initial_window_ms,
            set_window_ms,
        }
    }

    #[test]
    fn the_replicated_clock_and_the_horizon_never_move_back() {
        let mut state = JournalState::default();
        assert_eq!(
            advance_clock(&mut state, &proposal(10_000, 3_000, None)),
            7_000
        );
        // A later leader whose reading is behind moves neither the clock nor the horizon.
        assert_eq!(
            advance_clock(&mut state, &proposal(9_000, 3_000, None)),
            7_000
        );
        assert_eq!(state.clock_ms, 10_000);
        assert_eq!(
            advance_clock(&mut JournalState::default(), &proposal(10, 3_000, None)),
            0
        );
    }

    #[test]
    fn the_first_proposal_sets_the_window_and_only_a_settings_entry_changes_it() {
        let mut state = JournalState::default();
        advance_clock(&mut state, &proposal(1_000, 500, None));
        assert_eq!(state.dedupe_window_ms, Some(500));
        // A leader started with another window does not change the cluster's.
        assert_eq!(
            advance_clock(&mut state, &proposal(2_000, 100, None)),
            1_500
        );
        assert_eq!(state.dedupe_window_ms, Some(500));
        // An explicit change does; lengthening it does not bring forgotten ids back.
        assert_eq!(
            advance_clock(&mut state, &proposal(2_000, 100, Some(1_800))),
            1_500
        );
        assert_eq!(state.dedupe_window_ms, Some(1_800));
        assert_eq!(
            advance_clock(&mut state, &proposal(4_000, 100, None)),
            2_200
        );
    }

    #[test]
    fn a_stored_record_older_than_the_horizon_counts_as_forgotten() {
        let mut state = JournalState {
            clock_ms: 3_000,
            dedupe_horizon_ms: 2_000,
            ..JournalState::default()
        };
        let a = op("a", "1");
        let stale = DedupeRecord {
            index: 1,
            term: 1,
            digest: a.content_digest(),
            committed_at_ms: 1_000,
        };
        let (out, rec) = apply_operation(&mut state, Some(&stale), &a, 2);
        assert_eq!(out, OpOutcome::Appended { index: 1, term: 2 });
        assert_eq!(
            rec.map(|r| r.committed_at_ms),
            Some(3_000),
            "stamped by the replicated clock"
        );
    }
}
