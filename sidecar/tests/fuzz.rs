//! Property-based fuzzing (proptest) of the three decoders that read bytes from outside: the
//! peer frame decoder, the operation JSON parser and the snapshot decoder. Inputs are valid
//! encodings damaged by up to four random edits (bit flips, overwrites, inserts, deletions,
//! truncation, duplicated spans, huge length prefixes) or random bytes; a failure is shrunk to
//! the fewest, smallest edits that still fail. `FUZZ_CASES` cases per target (default 100,000),
//! from a printed seed. The properties: never panic; valid inputs decode to what was encoded; a
//! decoded operation obeys the documented limits; a damaged snapshot is an error, never an
//! image. Replay a failure: `FUZZ_SEED=S cargo test -p raft-sidecar --test fuzz`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::sync::atomic::{AtomicUsize, Ordering};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, Vote};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use raft_sidecar::api::daemon::{canonical_json, parse_operation};
use raft_sidecar::journal::{DedupeRecord, JournalRecord, JournalState, StoredOperation};
use raft_sidecar::store::snapshot::{Head, Row, SnapshotDecodeError, SnapshotImage};
use raft_sidecar::transport::frame::{Envelope, PeerRequest, PeerResponse, decode, encode};
use raft_sidecar::types::StoredMembership;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Run `case` on `cases` inputs drawn from `strategy`; on a failure, panic with the shrunk
/// input and the `FUZZ_SEED` value that replays it. Prints how many cases ran.
fn fuzz<S>(name: &str, strategy: S, case: impl Fn(&[u8]))
where
    S: Strategy<Value = Vec<u8>>,
{
    let seed = env_or("FUZZ_SEED", rand::random::<u64>() % 1_000_000);
    let cases = u32::try_from(env_or("FUZZ_CASES", 100_000)).unwrap_or(u32::MAX);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    let ran = AtomicUsize::new(0);
    let outcome = runner.run(&strategy, |bytes| {
        ran.fetch_add(1, Ordering::Relaxed);
        case(&bytes);
        Ok(())
    });
    match outcome {
        Ok(()) => println!(
            "{name}: {} cases passed, seed {seed}",
            ran.load(Ordering::Relaxed)
        ),
        Err(TestError::Fail(reason, input)) => panic!(
            "{name}: {reason} (FUZZ_SEED={seed}); shrunk input ({} bytes): {:?} / {:02x?}",
            input.len(),
            String::from_utf8_lossy(&input[..input.len().min(200)]),
            &input[..input.len().min(64)]
        ),
        Err(TestError::Abort(reason)) => panic!("{name}: aborted: {reason} (FUZZ_SEED={seed})"),
    }
}

/// One damage to a valid input; positions are taken modulo the input's length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
    /// The classic allocation bomb: a huge varint or length prefix.
    Bomb(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let special = prop::sample::select(vec![0x00u8, 0xff, 0x7f, 0x80, b'"', b'{', b'\\']);
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Edit::Flip(i, bit)),
        (any::<usize>(), special).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, bytes)| Edit::Insert(i, bytes)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..32).prop_map(|(i, n)| Edit::Duplicate(i, n)),
        any::<usize>().prop_map(Edit::Bomb),
    ]
}

fn apply(valid: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for e in edits {
        let len = b.len();
        let at = |i: usize| if len == 0 { 0 } else { i % len };
        match e {
            Edit::Flip(i, bit) if len > 0 => b[at(*i)] ^= 1 << bit,
            Edit::Set(i, byte) if len > 0 => b[at(*i)] = *byte,
            Edit::Insert(i, bytes) => {
                let i = i % (len + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(i, n) if len > 0 => {
                let i = at(*i);
                b.drain(i..(i + n).min(len));
            }
            Edit::Truncate(i) => b.truncate(i % (len + 1)),
            Edit::Duplicate(i, n) if len > 0 => {
                let i = at(*i);
                let span = b[i..(i + n).min(len)].to_vec();
                b.splice(i..i, span);
            }
            Edit::Bomb(i) => {
                let i = i % (len + 1);
                b.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
            }
            _ => {}
        }
    }
    b
}

/// One of `valid`, damaged by one to four edits, or (one time in eight) random bytes.
fn damaged(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len();
    prop_oneof![
        7 => (0..n, prop::collection::vec(edit(), 1..=4))
            .prop_map(move |(k, edits)| apply(&valid[k], &edits)),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn stored_op(id: &str) -> StoredOperation {
    StoredOperation {
        id: id.into(),
        op_type: "t".into(),
        payload: Some("{\"k\":[1,2,{\"x\":null}]}".into()),
        daemon_id: Some("d".into()),
        timestamp: Some(7),
    }
}

fn valid_frames() -> Vec<Vec<u8>> {
    let log_id = Some(LogId::new(CommittedLeaderId::new(2, 7), 41));
    let requests = vec![
        PeerRequest::Vote(VoteRequest {
            vote: Vote::new(3, 7),
            last_log_id: log_id,
        }),
        PeerRequest::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(3, 7),
            prev_log_id: log_id,
            entries: Vec::new(),
            leader_commit: log_id,
        }),
        PeerRequest::Forward(stored_op("op-1")),
        PeerRequest::Membership,
        PeerRequest::Identify,
        PeerRequest::Removed { term: 4, target: 9 },
    ];
    let mut out: Vec<Vec<u8>> = requests
        .into_iter()
        .enumerate()
        .map(|(i, body)| encode(&Envelope { id: i as u64, body }).unwrap())
        .collect();
    for body in [PeerResponse::Ack, PeerResponse::Refused("no".into())] {
        out.push(encode(&Envelope { id: 99, body }).unwrap());
    }
    out
}

#[test]
fn the_peer_frame_decoder_never_panics_on_damaged_or_random_frames() {
    let valid = valid_frames();
    for v in &valid {
        // Valid frames decode (as the type they were encoded as) with nothing left over.
        let as_req = decode::<PeerRequest>(v);
        let as_resp = decode::<PeerResponse>(v);
        assert!(
            as_req.is_ok() || as_resp.is_ok(),
            "a valid frame does not decode"
        );
    }
    fuzz("peer frame", damaged(valid), |bytes| {
        let _ = decode::<PeerRequest>(bytes);
        let _ = decode::<PeerResponse>(bytes);
    });
}

fn valid_operations() -> Vec<Vec<u8>> {
    [
        r#"{"id":"task-1","type":"data_import","payload":{"b":[1,2.5,"x"],"a":{"z":null,"y":true}},"daemonId":"d-1","timestamp":1700000000000}"#,
        r#"{"id":"x","type":"t"}"#,
        r#"{"id":"é✓","type":"t","payload":"just a string"}"#,
        r#"{"id":"n","type":"t","payload":[[[[{"deep":[1,{"a":-0.0}]}]]]],"timestamp":0}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// JSON-ish noise built from the characters JSON is made of.
fn json_noise() -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] = b"{}[]\":,0123456789.eE+-truefalsnl \\u\n\t idtypeayload";
    prop::collection::vec(prop::sample::select(ALPHABET), 0..200)
}

#[test]
fn the_operation_parser_never_panics_and_what_it_accepts_obeys_the_limits() {
    let valid = valid_operations();
    for v in &valid {
        parse_operation(v, 1 << 20).unwrap();
    }
    let max = 4096;
    let inputs = prop_oneof![1 => json_noise(), 2 => damaged(valid)];
    fuzz("operation JSON", inputs, |bytes| {
        if let Ok(op) = parse_operation(bytes, max) {
            assert!(bytes.len() <= max);
            assert!(!op.id.is_empty() && op.id.len() <= 256, "id {:?}", op.id);
            assert!(!op.op_type.is_empty());
            // The canonical payload is a fixed point: re-canonicalizing changes nothing.
            if let Some(p) = &op.payload {
                let again: serde_json::Value = serde_json::from_str(p).unwrap();
                assert_eq!(&canonical_json(&again), p);
            }
        }
    });
}

#[test]
fn hostile_operations_are_refused_with_a_reason_not_a_crash() {
    let deep = format!(
        r#"{{"id":"a","type":"t","payload":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let long_id = format!(r#"{{"id":"{}","type":"t"}}"#, "i".repeat(257));
    let big_number = format!(
        r#"{{"id":"a","type":"t","payload":{}}}"#,
        "9".repeat(10_000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("100000-deep payload", deep.into_bytes()),
        ("257-byte id", long_id.into_bytes()),
        (
            "invalid UTF-8",
            b"{\"id\":\"\xff\xfe\",\"type\":\"t\"}".to_vec(),
        ),
        ("lone surrogate", br#"{"id":"\ud800","type":"t"}"#.to_vec()),
        (
            "duplicate keys",
            br#"{"id":"a","id":"b","type":"t"}"#.to_vec(),
        ),
        ("id of wrong type", br#"{"id":5,"type":"t"}"#.to_vec()),
        (
            "negative timestamp",
            br#"{"id":"a","type":"t","timestamp":-1}"#.to_vec(),
        ),
        ("trailing garbage", br#"{"id":"a","type":"t"} x"#.to_vec()),
        ("empty body", Vec::new()),
    ];
    for (what, body) in cases {
        assert!(
            parse_operation(&body, 1 << 20).is_err(),
            "{what} was accepted"
        );
    }
    // A 10 000-digit number is valid JSON; accepted or refused, it must not crash.
    let _ = parse_operation(big_number.as_bytes(), 1 << 20);
    assert!(
        parse_operation(&vec![b' '; 2 << 20], 1 << 20).is_err(),
        "oversized body accepted"
    );
}

fn valid_snapshot() -> Vec<u8> {
    SnapshotImage {
        head: Head {
            snapshot_id: "1-2-0".into(),
            last_applied: Some(LogId::new(CommittedLeaderId::new(1, 3), 2)),
            membership: StoredMembership::default(),
            journal: JournalState {
                next_index: 3,
                first_index: 1,
                ..JournalState::default()
            },
        },
        rows: vec![
            Row::Journal(
                1,
                JournalRecord {
                    term: 1,
                    operation: stored_op("a"),
                },
            ),
            Row::Journal(
                2,
                JournalRecord {
                    term: 1,
                    operation: stored_op("b"),
                },
            ),
            Row::Dedupe(
                "a".into(),
                DedupeRecord {
                    index: 1,
                    term: 1,
                    digest: [7; 32],
                    committed_at_ms: 9,
                },
            ),
        ],
    }
    .encode()
    .unwrap()
}

/// Put a correct checksum on a (damaged) body, so the fuzzer reaches the body decoder.
fn with_checksum(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= 12 {
        let crc = crc32fast::hash(&bytes[12..]);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    }
    bytes
}

#[test]
fn the_snapshot_decoder_turns_every_damage_into_an_error_never_a_panic_or_an_empty_image() {
    let valid = valid_snapshot();
    let image = SnapshotImage::decode(&valid).unwrap();
    let inputs = (damaged(vec![valid.clone()]), any::<bool>())
        .prop_map(|(bytes, fix)| if fix { with_checksum(bytes) } else { bytes });
    fuzz("snapshot", inputs, |bytes| {
        match SnapshotImage::decode(bytes) {
            // Only an image that still checks out may decode, and then never as "empty".
            Ok(decoded) => {
                assert!(bytes.len() >= 12 && &bytes[..4] == b"RSNP");
                if bytes == valid.as_slice() {
                    assert_eq!(decoded, image);
                }
            }
            Err(
                SnapshotDecodeError::Truncated(_)
                | SnapshotDecodeError::BadMagic
                | SnapshotDecodeError::UnsupportedVersion(_)
                | SnapshotDecodeError::Checksum { .. }
                | SnapshotDecodeError::Body { .. }
                | SnapshotDecodeError::Io(_),
            ) => {}
        }
    });
    // Without a fixed-up checksum, any single bit flip is caught.
    for i in 0..valid.len() {
        let mut flipped = valid.clone();
        flipped[i] ^= 0x10;
        assert!(
            SnapshotImage::decode(&flipped).is_err(),
            "flip at byte {i} went unnoticed"
        );
    }
}
