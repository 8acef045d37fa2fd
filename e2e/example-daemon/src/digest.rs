//! The daemon's state machine: what executing the journal does. Pure and deterministic, so
//! every daemon that executed the same journal prefix holds the same value, whatever node it
//! read it from and however often it reconnected or restarted.

use raft_api::daemon::JournalEntry;
use serde_json::Value;

use crate::config::OPERATION_TYPE;

/// FNV-1a 64-bit offset basis: the digest of an empty journal.
pub const EMPTY_DIGEST: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Feed one string with its length first, so `("ab","c")` and `("a","bc")` differ.
fn field(hash: u64, text: &str) -> u64 {
    let len = u64::try_from(text.len()).unwrap_or(u64::MAX);
    fnv1a(fnv1a(hash, &len.to_le_bytes()), text.as_bytes())
}

/// The running digest after executing operation `id` of type `op_type` at `log_index`.
///
/// FNV-1a streams, so this is the FNV-1a of the whole sequence of (index, id, type) executed
/// so far: equal digests mean the same operations were executed in the same order. It is a
/// fingerprint for comparing daemons, not a cryptographic hash.
pub fn chain(digest: u64, log_index: u64, id: &str, op_type: &str) -> u64 {
    field(field(fnv1a(digest, &log_index.to_le_bytes()), id), op_type)
}

/// What executing the journal has produced so far, and where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyState {
    /// Journal index of the last executed (or skipped, see [`ApplyState::resync`]) entry;
    /// 0 before the first.
    pub applied_index: u64,
    /// Operations executed (entries skipped by a resync are not counted).
    pub executed: u64,
    /// Running digest (see [`chain`]).
    pub digest: u64,
    /// The effect of `example.increment`: the sum of the payloads' `by` (default 1).
    pub counter: i64,
    /// How often the journal had been compacted past this daemon, forcing a resync.
    pub resyncs: u64,
}

impl Default for ApplyState {
    fn default() -> Self {
        Self {
            applied_index: 0,
            executed: 0,
            digest: EMPTY_DIGEST,
            counter: 0,
            resyncs: 0,
        }
    }
}

/// What [`ApplyState::execute`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The entry was the next one and has been executed.
    Executed,
    /// Already executed (at or below `applied_index`): ignored, never executed twice.
    AlreadyApplied,
    /// The entry is beyond the next index: entries in between are missing, nothing executed.
    Gap { expected: u64, got: u64 },
}

impl ApplyState {
    /// The journal index to read next.
    pub fn next_index(&self) -> u64 {
        self.applied_index.saturating_add(1)
    }

    /// Execute `entry` if, and only if, it is the next one. The journal is dense (every index
    /// holds one operation), so anything else is a replay or a hole, never a new operation.
    pub fn execute(&mut self, entry: &JournalEntry) -> Step {
        let expected = self.next_index();
        if entry.log_index < expected {
            return Step::AlreadyApplied;
        }
        if entry.log_index > expected {
            return Step::Gap {
                expected,
                got: entry.log_index,
            };
        }
        let op = &entry.operation;
        if op.op_type == OPERATION_TYPE {
            let by = op
                .payload
                .as_ref()
                .and_then(|p| p.get("by"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            self.counter = self.counter.wrapping_add(by);
        }
        self.digest = chain(self.digest, entry.log_index, &op.id, &op.op_type);
        self.applied_index = entry.log_index;
        self.executed += 1;
        Step::Executed
    }

    /// Jump to just before `first_index`, the oldest entry the sidecar still retains, after
    /// the entries in between were compacted away unread. The jump is folded into the digest,
    /// so this daemon's digest differs from the others from now on: the divergence is visible,
    /// never silent. Returns false when there is nothing to skip.
    pub fn resync(&mut self, first_index: u64) -> bool {
        if first_index <= self.next_index() {
            return false;
        }
        self.digest = fnv1a(fnv1a(self.digest, b"resync"), &first_index.to_le_bytes());
        self.applied_index = first_index - 1;
        self.resyncs += 1;
        true
    }

    /// The digest as the API and the checkpoint show it: 16 lowercase hex digits.
    pub fn digest_hex(&self) -> String {
        format!("{:016x}", self.digest)
    }
}

/// Parse [`ApplyState::digest_hex`] back.
pub fn parse_digest(hex: &str) -> Option<u64> {
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_api::daemon::Operation;

    fn entry(index: u64, id: &str, by: Option<i64>) -> JournalEntry {
        JournalEntry {
            log_index: index,
            term: 1,
            operation: Operation {
                id: id.into(),
                op_type: OPERATION_TYPE.into(),
                payload: by.map(|b| serde_json::json!({ "by": b })),
                daemon_id: None,
                timestamp: None,
            },
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(EMPTY_DIGEST, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(EMPTY_DIGEST, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(EMPTY_DIGEST, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn executes_each_index_once_and_in_order() {
        let mut s = ApplyState::default();
        assert_eq!(s.execute(&entry(1, "a-1", None)), Step::Executed);
        assert_eq!(s.execute(&entry(2, "a-2", Some(5))), Step::Executed);
        let after_two = s;
        assert_eq!(s.execute(&entry(2, "a-2", Some(5))), Step::AlreadyApplied);
        assert_eq!(s.execute(&entry(1, "a-1", None)), Step::AlreadyApplied);
        assert_eq!(
            s.execute(&entry(4, "a-4", None)),
            Step::Gap {
                expected: 3,
                got: 4
            }
        );
        assert_eq!(s, after_two, "replays and gaps change nothing");
        assert_eq!((s.applied_index, s.executed, s.counter), (2, 2, 6));
    }

    #[test]
    fn digest_depends_on_index_id_type_and_order() {
        let run = |entries: &[JournalEntry]| {
            let mut s = ApplyState::default();
            for e in entries {
                s.execute(e);
            }
            s.digest
        };
        let base = run(&[entry(1, "a", None), entry(2, "b", None)]);
        assert_eq!(base, run(&[entry(1, "a", None), entry(2, "b", None)]));
        assert_ne!(base, run(&[entry(1, "b", None), entry(2, "a", None)]));
        assert_ne!(base, run(&[entry(1, "a", None), entry(2, "c", None)]));
        // The payload is not part of the digest (only the counter).
        assert_eq!(base, run(&[entry(1, "a", Some(9)), entry(2, "b", None)]));
        // Length prefixes keep field boundaries apart.
        assert_ne!(chain(0, 1, "ab", "c"), chain(0, 1, "a", "bc"));
        assert_ne!(base, EMPTY_DIGEST);
    }

    #[test]
    fn resync_skips_forward_and_marks_the_digest() {
        let mut s = ApplyState::default();
        s.execute(&entry(1, "a", None));
        let before = s;
        assert!(!s.resync(2), "nothing to skip when 2 is next");
        assert_eq!(s, before);
        assert!(s.resync(10));
        assert_eq!((s.applied_index, s.executed, s.resyncs), (9, 1, 1));
        assert_ne!(s.digest, before.digest);
        assert_eq!(s.execute(&entry(10, "b", None)), Step::Executed);
    }

    #[test]
    fn digest_hex_round_trips() {
        let s = ApplyState::default();
        assert_eq!(s.digest_hex(), "cbf29ce484222325");
        assert_eq!(parse_digest(&s.digest_hex()), Some(s.digest));
        assert_eq!(parse_digest("xyz"), None);
        assert_eq!(parse_digest("0123456789abcdeg"), None);
    }
}
