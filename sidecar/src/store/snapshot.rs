//! The snapshot image format: the whole state machine at one applied log id, written and read
//! as a stream of rows so neither side ever holds the image (or its decoded records) in memory.
//!
//! Layout (format version 2):
//! - header: magic `RSNP`, version (u32 LE), CRC-32 of everything after the header (u32 LE);
//! - one head row, then journal and dedupe rows in key order, then the end row.
//!
//! A row is a tag byte, then for every tag but the end a length-prefixed key and a
//! length-prefixed value (u32 LE lengths). Values are the postcard encodings the store keeps.
//! The writer streams rows to a file and puts the checksum in the header last; the reader
//! checks every row as it goes and the checksum at the end row, so a damaged image is an error,
//! never "no snapshot" and never a partial one.

use std::io::{self, Read, Seek, SeekFrom, Write};

use serde::{Deserialize, Serialize};

use crate::journal::{DedupeRecord, JournalRecord, JournalState};
use crate::types::{LogId, SnapshotMeta, StoredMembership};

const MAGIC: &[u8; 4] = b"RSNP";
/// 3: dedupe records carry a SHA-256 digest and the journal state the replicated dedupe clock
/// and window; images of version 2 are refused (the two formats' dedupe expiry cannot mix).
pub const IMAGE_VERSION: u32 = 3;
const HEADER: usize = 12;
/// Longest key a row may carry (operation ids are at most 256 bytes, index keys 8).
const MAX_KEY: u32 = 4 << 10;
/// Largest value a row may carry: bounds what a damaged length can make the reader allocate.
const MAX_VALUE: u32 = 64 << 20;

/// Row tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RowKind {
    End = 0,
    Head = 1,
    Journal = 2,
    Dedupe = 3,
}

impl RowKind {
    fn from_tag(tag: u8) -> Option<RowKind> {
        match tag {
            0 => Some(RowKind::End),
            1 => Some(RowKind::Head),
            2 => Some(RowKind::Journal),
            3 => Some(RowKind::Dedupe),
            _ => None,
        }
    }
}

/// The first row: what openraft's `SnapshotMeta` says, plus the journal's bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub snapshot_id: String,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub journal: JournalState,
}

impl Head {
    pub fn meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}

/// One decoded row after the head.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Journal(u64, JournalRecord),
    Dedupe(String, DedupeRecord),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotDecodeError {
    #[error("snapshot ends after {0} bytes, inside its 12-byte header")]
    Truncated(usize),
    #[error("snapshot does not start with the RSNP magic")]
    BadMagic,
    #[error(
        "snapshot format version {0} is not supported (this build reads version {IMAGE_VERSION})"
    )]
    UnsupportedVersion(u32),
    #[error("snapshot checksum mismatch: header says {expected:08x}, body has {actual:08x}")]
    Checksum { expected: u32, actual: u32 },
    #[error("snapshot body is damaged at byte {offset}: {reason}")]
    Body { offset: u64, reason: String },
    #[error("reading the snapshot failed: {0}")]
    Io(String),
}

/// Streams an image into `out`; [`ImageWriter::finish`] seals it with the checksum.
pub struct ImageWriter<W: Write + Seek> {
    out: W,
    crc: crc32fast::Hasher,
}

impl<W: Write + Seek> ImageWriter<W> {
    pub fn start(mut out: W, head: &Head) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        out.write_all(&IMAGE_VERSION.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        let mut writer = ImageWriter {
            out,
            crc: crc32fast::Hasher::new(),
        };
        let head = postcard::to_stdvec(head).map_err(io::Error::other)?;
        writer.row(RowKind::Head, &[], &head)?;
        Ok(writer)
    }

    /// One journal (key: 8-byte big-endian index) or dedupe (key: the id) row, value as stored.
    pub fn row(&mut self, kind: RowKind, key: &[u8], value: &[u8]) -> io::Result<()> {
        let too_long = |what: &str, len: usize| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("snapshot row {what} of {len} bytes is too long"),
            )
        };
        let key_len = u32::try_from(key.len())
            .ok()
            .filter(|l| *l <= MAX_KEY)
            .ok_or_else(|| too_long("key", key.len()))?;
        let value_len = u32::try_from(value.len())
            .ok()
            .filter(|l| *l <= MAX_VALUE)
            .ok_or_else(|| too_long("value", value.len()))?;
        self.put(&[kind as u8])?;
        self.put(&key_len.to_le_bytes())?;
        self.put(key)?;
        self.put(&value_len.to_le_bytes())?;
        self.put(value)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    /// Write the end row and the checksum; returns the output, flushed, positioned at its end.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[RowKind::End as u8])?;
        let crc = self.crc.finalize();
        self.out.seek(SeekFrom::Start(8))?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A row as read, before its key and value are decoded.
struct RawRow {
    kind: RowKind,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Reads an image row by row, checking each; the checksum is checked at the end row.
pub struct ImageReader<R: Read> {
    input: R,
    crc: crc32fast::Hasher,
    expected: u32,
    offset: u64,
    ended: bool,
}

impl<R: Read> ImageReader<R> {
    /// Read the header and the head row.
    pub fn open(mut input: R) -> Result<(Self, Head), SnapshotDecodeError> {
        let mut header = [0u8; HEADER];
        let got = read_full(&mut input, &mut header)?;
        if got < HEADER {
            return Err(SnapshotDecodeError::Truncated(got));
        }
        if &header[0..4] != MAGIC {
            return Err(SnapshotDecodeError::BadMagic);
        }
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        if word(4) != IMAGE_VERSION {
            return Err(SnapshotDecodeError::UnsupportedVersion(word(4)));
        }
        let mut reader = ImageReader {
            input,
            crc: crc32fast::Hasher::new(),
            expected: word(8),
            offset: HEADER as u64,
            ended: false,
        };
        let head = match reader.raw_row()? {
            Some(RawRow {
                kind: RowKind::Head,
                key,
                value,
            }) if key.is_empty() => reader.decode(&value)?,
            _ => return Err(reader.damaged("the first row is not the head")),
        };
        Ok((reader, head))
    }

    /// The next row, or `None` after the end row (whose checksum then matched).
    pub fn next_row(&mut self) -> Result<Option<Row>, SnapshotDecodeError> {
        let Some(RawRow { kind, key, value }) = self.raw_row()? else {
            return Ok(None);
        };
        match kind {
            RowKind::Journal => {
                let index: [u8; 8] = key
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.damaged("journal key is not 8 bytes"))?;
                Ok(Some(Row::Journal(
                    u64::from_be_bytes(index),
                    self.decode(&value)?,
                )))
            }
            RowKind::Dedupe => {
                let id =
                    String::from_utf8(key).map_err(|_| self.damaged("dedupe key is not UTF-8"))?;
                Ok(Some(Row::Dedupe(id, self.decode(&value)?)))
            }
            RowKind::Head | RowKind::End => Err(self.damaged("a second head row")),
        }
    }

    fn raw_row(&mut self) -> Result<Option<RawRow>, SnapshotDecodeError> {
        if self.ended {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag)?;
        let kind = RowKind::from_tag(tag[0])
            .ok_or_else(|| self.damaged(&format!("unknown row tag {}", tag[0])))?;
        if kind == RowKind::End {
            self.ended = true;
            let actual = self.crc.clone().finalize();
            if actual != self.expected {
                return Err(SnapshotDecodeError::Checksum {
                    expected: self.expected,
                    actual,
                });
            }
            let mut extra = [0u8; 1];
            if read_full(&mut self.input, &mut extra)? != 0 {
                return Err(self.damaged("bytes after the end row"));
            }
            return Ok(None);
        }
        let key = self.field(MAX_KEY, "key")?;
        let value = self.field(MAX_VALUE, "value")?;
        Ok(Some(RawRow { kind, key, value }))
    }

    fn field(&mut self, max: u32, what: &str) -> Result<Vec<u8>, SnapshotDecodeError> {
        let mut len = [0u8; 4];
        self.take(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > max {
            return Err(self.damaged(&format!("{what} length {len} exceeds {max}")));
        }
        let mut bytes = vec![0u8; len as usize];
        self.take(&mut bytes)?;
        Ok(bytes)
    }

    fn take(&mut self, buf: &mut [u8]) -> Result<(), SnapshotDecodeError> {
        let got = read_full(&mut self.input, buf)?;
        if got < buf.len() {
            return Err(self.damaged("the image ends before its end row"));
        }
        self.crc.update(buf);
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        value: &[u8],
    ) -> Result<T, SnapshotDecodeError> {
        postcard::from_bytes(value).map_err(|e| self.damaged(&e.to_string()))
    }

    fn damaged(&self, reason: &str) -> SnapshotDecodeError {
        SnapshotDecodeError::Body {
            offset: self.offset,
            reason: reason.to_string(),
        }
    }
}

/// Read until `buf` is full or the input ends; how many bytes were read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, SnapshotDecodeError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SnapshotDecodeError::Io(e.to_string())),
        }
    }
    Ok(got)
}

/// A whole image in memory: for tests, fuzzing and tools; the node itself streams.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotImage {
    pub head: Head,
    pub rows: Vec<Row>,
}

impl SnapshotImage {
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let mut writer = ImageWriter::start(io::Cursor::new(Vec::new()), &self.head)?;
        for row in &self.rows {
            match row {
                Row::Journal(index, record) => writer.row(
                    RowKind::Journal,
                    &index.to_be_bytes(),
                    &postcard::to_stdvec(record).map_err(io::Error::other)?,
                )?,
                Row::Dedupe(id, record) => writer.row(
                    RowKind::Dedupe,
                    id.as_bytes(),
                    &postcard::to_stdvec(record).map_err(io::Error::other)?,
                )?,
            }
        }
        Ok(writer.finish()?.into_inner())
    }

    pub fn decode(bytes: &[u8]) -> Result<SnapshotImage, SnapshotDecodeError> {
        let (mut reader, head) = ImageReader::open(bytes)?;
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row()? {
            rows.push(row);
        }
        Ok(SnapshotImage { head, rows })
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
            head: Head {
                snapshot_id: "1-1-0".into(),
                last_applied: None,
                membership: StoredMembership::default(),
                journal: JournalState {
                    next_index: 2,
                    first_index: 1,
                    ..JournalState::default()
                },
            },
            rows: vec![
                Row::Journal(
                    1,
                    JournalRecord {
                        term: 1,
                        operation: op,
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
        let last = flipped.len() - 2;
        flipped[last] ^= 0x01;
        assert!(SnapshotImage::decode(&flipped).is_err());
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(
            SnapshotImage::decode(&magic),
            Err(SnapshotDecodeError::BadMagic)
        );
        for cut in 12..bytes.len() {
            assert!(
                SnapshotImage::decode(&bytes[..cut]).is_err(),
                "cut at {cut} decoded"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SnapshotImage::decode(&longer).is_err());
        assert!(SnapshotImage::decode(&[]).is_err());
    }

    #[test]
    fn a_huge_length_is_refused_before_it_is_allocated() {
        let mut bytes = image().encode().unwrap();
        // The head row's value length sits after the header, the tag and the empty key.
        let at = HEADER + 1 + 4;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            SnapshotImage::decode(&bytes),
            Err(SnapshotDecodeError::Body { .. })
        ));
    }
}
