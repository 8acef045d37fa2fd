//! Bounded fuzzing of the three decoders that read bytes from outside: the peer frame decoder,
//! the operation JSON parser and the snapshot decoder. Seeded mutation of valid inputs plus
//! random bytes; each target runs for `FUZZ_SECONDS` (default 3) and at least a few thousand
//! cases. The properties: never panic; valid inputs decode to what was encoded; a decoded
//! operation obeys the documented limits; a damaged snapshot is an error, never an image.
//! A failure prints the seed: `FUZZ_SEED=S cargo test -p raft-sidecar --test fuzz`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{CommittedLeaderId, LogId, Vote};
use raft_sidecar::api::daemon::{canonical_json, parse_operation};
use raft_sidecar::journal::{DedupeRecord, JournalRecord, JournalState, StoredOperation};
use raft_sidecar::raft::types::StoredMembership;
use raft_sidecar::store::snapshot::{Head, Row, SnapshotDecodeError, SnapshotImage};
use raft_sidecar::transport::frame::{Envelope, PeerRequest, PeerResponse, decode, encode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn budget() -> Duration {
    let secs: f64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// Run `case` on inputs from `gen` until the time budget is spent (and at least `min` cases),
/// naming the seed and the input when a case panics.
fn fuzz(
    name: &str,
    min: usize,
    mut input: impl FnMut(&mut StdRng) -> Vec<u8>,
    case: impl Fn(&[u8]),
) {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let until = Instant::now() + budget();
    let mut n = 0usize;
    while n < min || Instant::now() < until {
        let bytes = input(&mut rng);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&bytes)));
        if outcome.is_err() {
            let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into();
            panic!(
                "{name}: case {n} panicked (FUZZ_SEED={seed}); input ({} bytes) starts {shown:?} / {:02x?}",
                bytes.len(),
                &bytes[..bytes.len().min(64)]
            );
        }
        n += 1;
    }
    println!("{name}: {n} cases, seed {seed}");
}

/// A random edit of `valid`: flip, overwrite, insert, delete, truncate, duplicate a span, or
/// replace with random bytes.
fn mutate(rng: &mut StdRng, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = *[0x00, 0xff, 0x7f, 0x80, b'"', b'{', b'\\']
                    .get(rng.random_range(0..7))
                    .unwrap();
            }
            2 => {
                let i = rng.random_range(0..=len);
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                b.splice(i..i, extra);
            }
            3 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len.min(i + 16));
                b.drain(i..j);
            }
            4 => b.truncate(rng.random_range(0..=len)),
            5 if len > 0 => {
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..=len);
                let span = b[i..j].to_vec();
                b.splice(j..j, span);
            }
            6 => {
                b = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            }
            _ => {
                // A huge varint / length prefix: the classic allocation bomb.
                let i = rng.random_range(0..=len);
                b.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
            }
        }
    }
    b
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
    fuzz(
        "peer frame",
        20_000,
        |rng| {
            let pick = rng.random_range(0..valid.len());
            mutate(rng, &valid[pick])
        },
        |bytes| {
            let _ = decode::<PeerRequest>(bytes);
            let _ = decode::<PeerResponse>(bytes);
        },
    );
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
fn json_noise(rng: &mut StdRng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"{}[]\":,0123456789.eE+-truefalsnl \\u\n\t idtypeayload";
    (0..rng.random_range(0..200))
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

#[test]
fn the_operation_parser_never_panics_and_what_it_accepts_obeys_the_limits() {
    let valid = valid_operations();
    for v in &valid {
        parse_operation(v, 1 << 20).unwrap();
    }
    let max = 4096;
    fuzz(
        "operation JSON",
        20_000,
        |rng| match rng.random_range(0..3) {
            0 => json_noise(rng),
            _ => {
                let pick = rng.random_range(0..valid.len());
                mutate(rng, &valid[pick])
            }
        },
        |bytes| {
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
        },
    );
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
                dedupe_horizon_ms: 0,
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
                    digest: 7,
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
    fuzz(
        "snapshot",
        20_000,
        |rng| {
            let damaged = mutate(rng, &valid);
            if rng.random_bool(0.5) {
                with_checksum(damaged)
            } else {
                damaged
            }
        },
        |bytes| match SnapshotImage::decode(bytes) {
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
        },
    );
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
