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
    /// A stable 64-bit digest (FNV-1a) of what makes two submissions "the same operation":
    /// its type and payload. Stable across builds and versions, unlike `std`'s hashers.
    pub fn content_digest(&self) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0100_0000_01b3;
        let mut hash = OFFSET;
        let payload = self.payload.as_deref().unwrap_or("");
        let parts: [&[u8]; 4] = [
            self.op_type.as_bytes(),
            &[0xff],
            payload.as_bytes(),
            &[0xfe],
        ];
        for byte in parts.into_iter().flatten() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
        hash
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
/// The leader's clock and dedupe window travel with it so every node expires dedupe records
/// identically, whatever its own flags or clock say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub operations: Vec<StoredOperation>,
    pub proposed_at_ms: u64,
    pub dedupe_window_ms: u64,
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

/// What the state machine remembers about a committed operation id, for the dedupe window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupeRecord {
    pub index: u64,
    pub term: u64,
    pub digest: u64,
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
    /// Dedupe records committed before this instant are forgotten. Only ever moves forward
    /// (leaders' clocks may disagree), so whether a record is live depends on the entries
    /// applied, never on how they were grouped or when its garbage was collected.
    pub dedupe_horizon_ms: u64,
}

impl Default for JournalState {
    fn default() -> Self {
        Self {
            next_index: 1,
            first_index: 1,
            dedupe_horizon_ms: 0,
        }
    }
}

impl JournalState {
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

/// Apply one operation committed in a Raft entry of `term`.
///
/// `known` is the stored dedupe record of `op.id`, if any; one committed before the state's
/// dedupe horizon counts as forgotten. Returns the outcome and, for `Appended`, the record to
/// store under the id.
pub fn apply_operation(
    state: &mut JournalState,
    known: Option<&DedupeRecord>,
    op: &StoredOperation,
    term: u64,
    committed_at_ms: u64,
) -> (OpOutcome, Option<DedupeRecord>) {
    let digest = op.content_digest();
    let live = known.filter(|rec| rec.committed_at_ms >= state.dedupe_horizon_ms);
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

/// Advance the dedupe horizon for an entry proposed at `proposal`; it never moves backwards.
pub fn advance_dedupe_horizon(state: &mut JournalState, proposal: &Proposal) -> u64 {
    let horizon = proposal
        .proposed_at_ms
        .saturating_sub(proposal.dedupe_window_ms);
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
                let (outcome, rec) = apply_operation(state, seen.get(&o.id), o, term, 1_000);
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
    }

    #[test]
    fn digests_are_stable_across_builds() {
        // Pinned value: a change here would make nodes of different versions disagree.
        assert_eq!(op("x", "{}").content_digest(), 0xe06d_7bd3_8beb_221a);
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
            proposed_at_ms: 5,
            dedupe_window_ms: 9,
        };
        let shared = postcard::to_allocvec(&std::sync::Arc::new(proposal.clone())).unwrap();
        assert_eq!(shared, postcard::to_allocvec(&proposal).unwrap());
        let back: std::sync::Arc<Proposal> = postcard::from_bytes(&shared).unwrap();
        assert_eq!(*back, proposal);
    }

    #[test]
    fn the_dedupe_horizon_follows_the_leaders_clock_and_never_moves_back() {
        let proposal = |at, window| Proposal {
            operations: vec![],
            proposed_at_ms: at,
            dedupe_window_ms: window,
        };
        let mut state = JournalState::default();
        assert_eq!(
            advance_dedupe_horizon(&mut state, &proposal(10_000, 3_000)),
            7_000
        );
        // A later leader whose clock is behind does not resurrect forgotten ids.
        assert_eq!(
            advance_dedupe_horizon(&mut state, &proposal(9_000, 3_000)),
            7_000
        );
        assert_eq!(
            advance_dedupe_horizon(&mut JournalState::default(), &proposal(10, 3_000)),
            0
        );
    }

    #[test]
    fn a_stored_record_older_than_the_horizon_counts_as_forgotten() {
        let mut state = JournalState {
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
        let (out, rec) = apply_operation(&mut state, Some(&stale), &a, 2, 3_000);
        assert_eq!(out, OpOutcome::Appended { index: 1, term: 2 });
        assert!(rec.is_some());
    }
}
