//! Restore: a new data dir from a backup image (`raft-sidecar restore`).
//!
//! The node starts as the only voter of a new cluster. Its state machine is the image's
//! (journal window, dedupe records, replicated settings) and its Raft log starts right after
//! the image's last entry, so members added later receive that state as a snapshot, never an
//! empty journal. The journal continues at the image's next index, and an operation id the old
//! cluster committed within the dedupe window is still answered as a duplicate.
//!
//! Everything is written under `<data dir>/.restoring/` and moved into place only once the
//! image checked out whole (every row, its CRC, and the manifest's size and SHA-256 when there
//! is one): a restore that fails or is killed leaves no store behind. Run again on a data dir
//! it already restored, it does nothing, whichever backup it is given (an init container runs
//! at every pod start, and "the newest backup" may have changed since).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use raft_api::backup::BackupManifest;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::applied::AppliedState;
use super::snapshot::{Head, IMAGE_VERSION, ImageReader, Row, SnapshotDecodeError};
use super::state_machine::apply_entries;
use super::state_machine::snapshots::SnapshotFiles;
use super::{Cf, Db, MetaKey, StoreError, expiry_key, index_key};
use crate::journal::JournalState;
use crate::types::{Entry, LogId, Member, Membership, NodeId, StoredMembership, Vote};

/// Staging directory inside the data dir.
const STAGING: &str = ".restoring";
/// Rows per write batch while loading (bounds the loader's memory).
const ROWS_PER_BATCH: usize = 4096;

/// What to restore into.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub data_dir: &'a Path,
    pub cluster_id: &'a str,
    /// This node, the only member of the restored cluster.
    pub member: Member,
    /// Keep this node id (a running node's, restoring through its admin API); `None` draws a
    /// new one.
    pub node_id: Option<NodeId>,
    /// The backup's manifest, checked against the image; `None` checks the image alone.
    pub manifest: Option<&'a BackupManifest>,
    /// Recovery only: what to do besides restoring the image.
    pub recovery: Option<Recovery>,
}

/// A recovery's extra work ([`super::recover`]): the survivor's log entries past the image,
/// applied on top of it, and the survivor's store, moved aside instead of refused.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub pending: Vec<Entry>,
    /// `--journal-retention`, which applying those entries honours.
    pub journal_retention: u64,
}

/// How a store came to be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreKind {
    /// `raft-sidecar restore` from a backup.
    Backup,
    /// `raft-sidecar recover` of a survivor after a permanent quorum loss.
    Recovery,
}

/// Where a restored store came from; kept in the store and shown in the node's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredFrom {
    pub kind: RestoreKind,
    /// The cluster the backup was taken from (from its manifest; a recovery's own).
    pub parent_cluster_id: Option<String>,
    pub snapshot_id: String,
    /// The last entry the restored state holds: the image's, or a recovery's last log entry.
    pub last_log_id: LogId,
    /// SHA-256 of the image, lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Restored {
        node_id: NodeId,
        from: RestoredFrom,
        journal_first_index: u64,
        journal_next_index: u64,
        journal_records: u64,
        dedupe_records: u64,
        size_bytes: u64,
        /// Recovery: log entries applied past the image.
        log_entries_applied: u64,
        /// Recovery: where the survivor's own store was moved.
        set_aside: Option<PathBuf>,
    },
    /// The data dir already holds a store restored from a backup (this image when
    /// `same_image`); nothing was changed.
    AlreadyRestored {
        node_id: NodeId,
        from: RestoredFrom,
        same_image: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the backup image is damaged or not a backup: {0}")]
    Image(#[from] SnapshotDecodeError),
    #[error("the backup image does not match its manifest: {0}")]
    Manifest(String),
    #[error("the backup holds no applied entry: there is nothing to restore")]
    Empty,
    #[error(
        "data dir {path} already holds a store{detail}: refusing to overwrite it (restore into \
         an empty data dir)"
    )]
    NotEmpty { path: PathBuf, detail: String },
    #[error("data dir {path} holds no store to recover")]
    NoStore { path: PathBuf },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Restore the image read from `input` into `req.data_dir`.
pub fn restore(input: impl Read, req: &Request<'_>) -> Result<Outcome, RestoreError> {
    if let Some(m) = req.manifest
        && m.image_format != IMAGE_VERSION
    {
        return Err(RestoreError::Manifest(format!(
            "it names image format {}, this raft-sidecar reads format {IMAGE_VERSION}",
            m.image_format
        )));
    }
    let mut hashed = Hashing::new(input);
    let (reader, head) = ImageReader::open(&mut hashed)?;
    let last = head.last_applied.ok_or(RestoreError::Empty)?;
    if let Some(m) = req.manifest {
        check_head(m, &head, last)?;
    }
    if req.recovery.is_none() && req.data_dir.join("rocksdb").exists() {
        return already_restored(req, &head);
    }
    let staging = req.data_dir.join(STAGING);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_error("clear", &staging))?;
    }
    let staged = open_staging(&staging, req.cluster_id, req.node_id).and_then(|(db, node_id)| {
        let counts = load_rows(&db, reader)?;
        Ok((db, node_id, counts))
    });
    let restored = staged.and_then(|(db, node_id, (journal_records, dedupe_records))| {
        let (size_bytes, sha256) = hashed.finish();
        if let Some(m) = req.manifest
            && (m.size_bytes != size_bytes || m.sha256 != sha256)
        {
            return Err(RestoreError::Manifest(format!(
                "it says {} bytes with SHA-256 {}, the image has {size_bytes} bytes with SHA-256 \
                 {sha256}",
                m.size_bytes, m.sha256
            )));
        }
        let mut state = AppliedState {
            last_applied: Some(last),
            membership: head.membership.clone(),
            journal: head.journal,
        };
        let mut log_entries_applied = 0;
        if let Some(recovery) = &req.recovery
            && !recovery.pending.is_empty()
        {
            log_entries_applied = recovery.pending.len() as u64;
            state = apply_entries(
                &db,
                state,
                recovery.pending.clone(),
                recovery.journal_retention,
            )?
            .0;
        }
        let from = RestoredFrom {
            kind: if req.recovery.is_some() {
                RestoreKind::Recovery
            } else {
                RestoreKind::Backup
            },
            parent_cluster_id: match req.recovery {
                Some(_) => Some(req.cluster_id.to_owned()),
                None => req.manifest.map(|m| m.cluster_id.clone()),
            },
            snapshot_id: head.snapshot_id.clone(),
            last_log_id: state.last_applied.unwrap_or(last),
            sha256,
        };
        let journal = state.journal;
        seal(&db, node_id, req.member.clone(), journal, &from)?;
        Ok(Outcome::Restored {
            node_id,
            journal_first_index: journal.first_index,
            journal_next_index: journal.next_index,
            from,
            journal_records,
            dedupe_records,
            size_bytes,
            log_entries_applied,
            set_aside: None,
        })
    });
    match restored {
        Ok(mut outcome) => {
            let aside = move_into_place(&staging, req.data_dir, req.recovery.is_some())?;
            if let Outcome::Restored { set_aside, .. } = &mut outcome {
                *set_aside = aside;
            }
            Ok(outcome)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The manifest's facts that the head row can confirm before anything is written.
fn check_head(m: &BackupManifest, head: &Head, last: LogId) -> Result<(), RestoreError> {
    let journal_last = head.journal.next_index.saturating_sub(1);
    let pairs = [
        ("last log index", m.last_log_index, last.index),
        ("last log term", m.last_log_term, last.leader_id.term),
        (
            "journal first index",
            m.journal_first_index,
            head.journal.first_index,
        ),
        ("journal last index", m.journal_last_index, journal_last),
    ];
    for (what, said, found) in pairs {
        if said != found {
            return Err(RestoreError::Manifest(format!(
                "its {what} is {said}, the image's is {found}"
            )));
        }
    }
    if m.snapshot_id != head.snapshot_id {
        return Err(RestoreError::Manifest(format!(
            "it names snapshot {}, the image holds {}",
            m.snapshot_id, head.snapshot_id
        )));
    }
    Ok(())
}

/// A data dir holding a store: left as it is when that store was restored from a backup (a
/// restore happens once, whichever backup is the newest by the time it runs again), refused
/// otherwise.
fn already_restored(req: &Request<'_>, head: &Head) -> Result<Outcome, RestoreError> {
    let (db, identity) = Db::open(req.data_dir, req.cluster_id)?;
    let from: Option<RestoredFrom> = db.get(Cf::Meta, MetaKey::RestoredFrom.key())?;
    match from {
        Some(from) if from.kind == RestoreKind::Backup => {
            let same_image = from.snapshot_id == head.snapshot_id;
            Ok(Outcome::AlreadyRestored {
                node_id: identity.node_id,
                from,
                same_image,
            })
        }
        _ => Err(RestoreError::NotEmpty {
            path: req.data_dir.to_path_buf(),
            detail: String::new(),
        }),
    }
}

fn open_staging(
    staging: &Path,
    cluster_id: &str,
    keep: Option<NodeId>,
) -> Result<(Db, NodeId), RestoreError> {
    fs::create_dir_all(staging).map_err(io_error("create", staging))?;
    let (db, identity) = Db::open(staging, cluster_id)?;
    let Some(node_id) = keep else {
        return Ok((db, identity.node_id));
    };
    let mut batch = WriteBatch::default();
    db.put(&mut batch, Cf::Meta, MetaKey::NodeId.key(), &node_id)?;
    db.write(batch, true)?;
    Ok((db, node_id))
}

/// Write every row of the image; the reader checks the CRC at the end row, so an image that
/// fails anywhere fails the restore.
fn load_rows<R: Read>(db: &Db, mut reader: ImageReader<R>) -> Result<(u64, u64), RestoreError> {
    let (mut journal, mut dedupe) = (0u64, 0u64);
    let mut batch = WriteBatch::default();
    while let Some(row) = reader.next_row()? {
        match row {
            Row::Journal(index, record) => {
                db.put(&mut batch, Cf::Journal, &index_key(index), &record)?;
                journal += 1;
            }
            Row::Dedupe(id, record) => {
                db.put(&mut batch, Cf::Dedupe, id.as_bytes(), &record)?;
                batch.put_cf(
                    db.cf(Cf::DedupeExpiry)?,
                    expiry_key(record.committed_at_ms, &id),
                    [],
                );
                dedupe += 1;
            }
        }
        if batch.len() >= ROWS_PER_BATCH {
            db.write(std::mem::take(&mut batch), false)?;
        }
    }
    db.write(batch, false)?;
    Ok((journal, dedupe))
}

/// Make the loaded state a one-member cluster at its last log id: the applied state with
/// the new membership, the log purged up to that id, a vote in its term (so the first election
/// moves past it), then the snapshot file a joining member will receive.
fn seal(
    db: &Db,
    node_id: NodeId,
    member: Member,
    journal: JournalState,
    from: &RestoredFrom,
) -> Result<(), RestoreError> {
    let last = from.last_log_id;
    let membership = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, member)]),
    );
    let state = AppliedState {
        last_applied: Some(last),
        membership: StoredMembership::new(Some(last), membership),
        journal,
    };
    let mut batch = WriteBatch::default();
    db.put(&mut batch, Cf::Meta, MetaKey::Applied.key(), &state)?;
    db.put(&mut batch, Cf::Meta, MetaKey::LastPurged.key(), &last)?;
    db.put(&mut batch, Cf::Meta, MetaKey::Committed.key(), &Some(last))?;
    db.put(
        &mut batch,
        Cf::Meta,
        MetaKey::Vote.key(),
        &Vote::new(last.leader_id.term, node_id),
    )?;
    db.put(&mut batch, Cf::Meta, MetaKey::RestoredFrom.key(), from)?;
    batch.delete_range_cf(db.cf(Cf::Log)?, index_key(0), index_key(last.index + 1));
    db.write(batch, true)?;
    let files = SnapshotFiles::open(db)?;
    drop(files.build(db, 0)?);
    db.flush()?;
    Ok(())
}

/// Move the staged `snapshots/` and then `rocksdb/` into the data dir (the store's presence
/// is what makes it restored). Snapshots left there by an earlier store are set aside; with
/// `replace` (a recovery) the earlier store itself is moved to `pre-recovery-<unix secs>/`,
/// which is returned.
fn move_into_place(
    staging: &Path,
    data_dir: &Path,
    replace: bool,
) -> Result<Option<PathBuf>, RestoreError> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let snapshots = data_dir.join("snapshots");
    let mut aside = None;
    if replace {
        let dir = data_dir.join(format!("pre-recovery-{secs}"));
        fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        for name in ["rocksdb", "snapshots"] {
            let from = data_dir.join(name);
            if from.exists() {
                fs::rename(&from, dir.join(name)).map_err(io_error("move aside", &from))?;
            }
        }
        aside = Some(dir);
    } else if snapshots.exists() {
        let to = data_dir.join(format!("snapshots.orphaned-{secs}"));
        fs::rename(&snapshots, &to).map_err(io_error("move aside", &snapshots))?;
    }
    for name in ["snapshots", "rocksdb"] {
        let from = staging.join(name);
        fs::rename(&from, data_dir.join(name)).map_err(io_error("move into place", &from))?;
    }
    fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", data_dir))?;
    fs::remove_dir_all(staging).map_err(io_error("remove", staging))?;
    Ok(aside)
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Counts and hashes every byte read through it.
struct Hashing<R> {
    inner: R,
    hash: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hash: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    /// Bytes read and their SHA-256 in lowercase hex.
    fn finish(&mut self) -> (u64, String) {
        let digest = std::mem::take(&mut self.hash).finalize();
        (self.bytes, raft_api::admin::hex(&digest))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
