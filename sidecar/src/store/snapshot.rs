//! The snapshot image: the whole state machine at one applied log id, as bytes.
//!
//! Layout: magic `RSNP`, format version (u32 LE), CRC-32 of the body (u32 LE), body (postcard).
//! Decoding checks all three; a snapshot that fails is an error, never "no snapshot".

use serde::{Deserialize, Serialize};

use crate::journal::{DedupeRecord, JournalRecord, JournalState};
use crate::raft::types::{LogId, StoredMembership};

const MAGIC: &[u8; 4] = b"RSNP";
const VERSION: u32 = 1;
const HEADER: usize = 12;

/// Everything a node needs to continue from `last_applied` without the log before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotImage {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub journal: JournalState,
    pub records: Vec<(u64, JournalRecord)>,
    pub dedupe: Vec<(String, DedupeRecord)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotDecodeError {
    #[error("snapshot is {0} bytes, shorter than its 12-byte header")]
    Truncated(usize),
    #[error("snapshot does not start with the RSNP magic")]
    BadMagic,
    #[error("snapshot format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u32),
    #[error("snapshot checksum mismatch: header says {expected:08x}, body has {actual:08x}")]
    Checksum { expected: u32, actual: u32 },
    #[error("snapshot body does not decode: {0}")]
    Body(String),
}

impl SnapshotImage {
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let body = postcard::to_stdvec(self)?;
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<SnapshotImage, SnapshotDecodeError> {
        if bytes.len() < HEADER {
            return Err(SnapshotDecodeError::Truncated(bytes.len()));
        }
        let (header, body) = bytes.split_at(HEADER);
        if &header[0..4] != MAGIC {
            return Err(SnapshotDecodeError::BadMagic);
        }
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let version = word(4);
        if version != VERSION {
            return Err(SnapshotDecodeError::UnsupportedVersion(version));
        }
        let expected = word(8);
        let actual = crc32fast::hash(body);
        if expected != actual {
            return Err(SnapshotDecodeError::Checksum { expected, actual });
        }
        postcard::from_bytes(body).map_err(|e| SnapshotDecodeError::Body(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::StoredOperation;

    fn image() -> SnapshotImage {
        let op = StoredOperation {
            id: "a".into(),
            op_type: "t".into(),
            payload: Some("{\"k\":1}".into()),
            daemon_id: None,
            timestamp: Some(5),
        };
        SnapshotImage {
            last_applied: None,
            membership: StoredMembership::default(),
            journal: JournalState {
                next_index: 2,
                first_index: 1,
                dedupe_horizon_ms: 0,
            },
            records: vec![(
                1,
                JournalRecord {
                    term: 1,
                    operation: op,
                },
            )],
            dedupe: vec![(
                "a".into(),
                DedupeRecord {
                    index: 1,
                    term: 1,
                    digest: 7,
                    committed_at_ms: 9,
                },
            )],
        }
    }

    #[test]
    fn an_image_round_trips() {
        let bytes = image().encode().unwrap();
        assert_eq!(SnapshotImage::decode(&bytes).unwrap(), image());
    }

    #[test]
    fn damaged_images_are_errors_not_empty_snapshots() {
        let bytes = image().encode().unwrap();
        assert_eq!(
            SnapshotImage::decode(&bytes[..5]),
            Err(SnapshotDecodeError::Truncated(5))
        );
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        assert!(matches!(
            SnapshotImage::decode(&flipped),
            Err(SnapshotDecodeError::Checksum { .. })
        ));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(
            SnapshotImage::decode(&magic),
            Err(SnapshotDecodeError::BadMagic)
        );
        let cut = &bytes[..bytes.len() - 3];
        assert!(SnapshotImage::decode(cut).is_err());
        assert!(SnapshotImage::decode(&[]).is_err());
    }
}
