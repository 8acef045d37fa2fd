//! Snapshots as files in `<data dir>/snapshots/`, streamed in both directions so memory stays
//! flat however large the journal window and the dedupe records grow.
//!
//! - `current.snap`: the newest snapshot, whole and checked (its meta is kept in memory).
//! - `building-<seq>.snap`: a build in progress, streamed from a RocksDB point-in-time view;
//!   renamed over `current.snap` only if it is newer.
//! - `receiving-<seq>.snap`: chunks from the leader, written by openraft.
//! - `installing.snap`: a copy, synced, of the snapshot being installed. The install is one
//!   synced RocksDB batch that also sets a marker (the snapshot's id under
//!   [`MetaKey::Snapshot`]), cleared once the file is renamed to `current.snap`; at open, a
//!   marked install is finished (renamed) and an unmarked `installing.snap` is discarded, so a
//!   `kill -9` at any point leaves state and file consistent.
//!
//! Every rename is followed by a directory fsync. Whoever replaces `current.snap` records its
//! last log id in the store's purge guard: the log is never purged past the snapshot a restart
//! would load.

use parking_lot::Mutex;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, WriteBatch};

use crate::store::applied::AppliedState;
use crate::store::snapshot::{Head, ImageReader, ImageWriter, Row, RowKind};
use crate::store::{Cf, Db, MetaKey, StoreError, index_key};
use crate::store::{KEY_END, expiry_key};
use crate::types::{LogId, SnapshotMeta};

const CURRENT: &str = "current.snap";
const INSTALLING: &str = "installing.snap";

/// The snapshot directory and the meta of its current snapshot.
pub struct SnapshotFiles {
    dir: PathBuf,
    /// Held while `current.snap` is replaced (builds and installs may race).
    current: Mutex<Option<SnapshotMeta>>,
}

impl SnapshotFiles {
    /// Open `dir`: finish or discard an interrupted install, drop unfinished builds and
    /// receipts, and check `current.snap` whole. A damaged current snapshot is an error naming
    /// the file.
    pub fn open(db: &Db) -> Result<SnapshotFiles, StoreError> {
        let dir = db.snapshot_dir();
        fs::create_dir_all(&dir).map_err(|e| file_error(&dir, "create", &e))?;
        // The marker is set by an install's state batch and cleared once its file is renamed:
        // present at open, the batch is on disk and `installing.snap` (synced before the batch)
        // is that snapshot, to be renamed; absent, any `installing.snap` is an unfinished copy.
        let installed: Option<String> = db.get(Cf::Meta, MetaKey::Snapshot.key())?;
        let installing = dir.join(INSTALLING);
        match (installed, installing.exists()) {
            (Some(id), true) => {
                let head = verify(&installing)?;
                if head.snapshot_id != id {
                    return Err(StoreError::Snapshot {
                        path: installing,
                        reason: format!(
                            "holds snapshot {} but the store installed {id}",
                            head.snapshot_id
                        ),
                    });
                }
                rename(&installing, &dir.join(CURRENT))?;
                clear_marker(db)?;
            }
            (Some(_), false) => clear_marker(db)?,
            (None, true) => remove(&installing)?,
            (None, false) => {}
        }
        let entries = fs::read_dir(&dir).map_err(|e| file_error(&dir, "list", &e))?;
        for entry in entries {
            let path = entry.map_err(|e| file_error(&dir, "list", &e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("building-") || name.starts_with("receiving-") {
                remove(&path)?;
            }
        }
        let current_path = dir.join(CURRENT);
        let current = if current_path.exists() {
            Some(verify(&current_path)?.meta())
        } else {
            None
        };
        *db.purge_guard() = current.as_ref().and_then(|m| m.last_log_id);
        Ok(SnapshotFiles {
            dir,
            current: Mutex::new(current),
        })
    }

    /// The current snapshot's meta and its file, opened under the lock so the two always
    /// belong together (a build may replace `current.snap` right after).
    pub fn open_current(&self) -> Result<Option<(SnapshotMeta, File)>, StoreError> {
        let current = self.lock();
        let Some(meta) = current.clone() else {
            return Ok(None);
        };
        let path = self.dir.join(CURRENT);
        let file = File::open(&path).map_err(|e| file_error(&path, "open", &e))?;
        Ok(Some((meta, file)))
    }

    /// Where openraft writes the chunks of a snapshot being received.
    pub fn receiving_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("receiving-{seq}.snap"))
    }

    /// Stream the state machine, as of now, into a new snapshot file and make it current unless
    /// a newer one already is. Returns the built snapshot's meta and the file, opened.
    pub fn build(&self, db: &Db, seq: u64) -> Result<(SnapshotMeta, File), StoreError> {
        let view = db.raw().snapshot();
        let state = AppliedState::read_in(db, &view)?;
        let snapshot_id = match state.last_applied {
            Some(id) => format!("{}-{}-{seq}", id.leader_id.term, id.index),
            None => format!("0-0-{seq}"),
        };
        let head = Head {
            snapshot_id,
            last_applied: state.last_applied,
            membership: state.membership,
            journal: state.journal,
        };
        let path = self.dir.join(format!("building-{seq}.snap"));
        let written = (|| {
            let file = File::create(&path).map_err(|e| file_error(&path, "create", &e))?;
            let io = |e: std::io::Error| file_error(&path, "write", &e);
            let mut out = ImageWriter::start(BufWriter::new(file), &head).map_err(io)?;
            for (cf, kind) in [
                (Cf::Journal, RowKind::Journal),
                (Cf::Dedupe, RowKind::Dedupe),
            ] {
                for item in view.iterator_cf(db.cf(cf)?, IteratorMode::Start) {
                    let (key, value) = item.map_err(db.rocks_err("read snapshot rows"))?;
                    out.row(kind, &key, &value).map_err(io)?;
                }
            }
            let file = out
                .finish()
                .map_err(io)?
                .into_inner()
                .map_err(|e| io(e.into_error()))?;
            file.sync_all().map_err(io)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let meta = head.meta();
        let file = File::open(&path).map_err(|e| file_error(&path, "open", &e));
        let mut current = self.lock();
        let newer_exists = current
            .as_ref()
            .is_some_and(|c| c.last_log_id >= meta.last_log_id);
        if newer_exists || file.is_err() {
            // Superseded while it was built: the open handle keeps the data for the caller.
            let _ = fs::remove_file(&path);
            return Ok((meta, file?));
        }
        // `apply` writes unsynced (the log replays it). A current snapshot ahead of the applied
        // state on disk would not open after a power cut (openraft checks that the snapshot is
        // not past what is committed), so what it was built from is made durable first.
        db.sync_wal()?;
        rename(&path, &self.dir.join(CURRENT))?;
        *db.purge_guard() = meta.last_log_id;
        *current = Some(meta.clone());
        Ok((meta, file?))
    }

    /// Install what openraft handed over (normally the received file): copy it to
    /// `installing.snap` and sync it, check it whole, replace the state machine with it in one
    /// synced batch, make it current.
    pub fn install(
        &self,
        db: &Db,
        mut data: File,
        meta: &SnapshotMeta,
    ) -> Result<AppliedState, StoreError> {
        let installing = self.dir.join(INSTALLING);
        let copied = (|| {
            data.seek(SeekFrom::Start(0))?;
            let mut out = File::create(&installing)?;
            std::io::copy(&mut data, &mut out)?;
            out.sync_all()
        })();
        drop(data);
        if let Err(e) = copied {
            let _ = fs::remove_file(&installing);
            return Err(file_error(&installing, "copy", &e));
        }
        let mut current = self.lock();
        sync_dir(&installing)?;
        // The batch moves the log's purged bound: no log purge may read or write it meanwhile.
        let purge_guard = db.purge_guard();
        let state = match batch_from_image(db, &installing, meta) {
            Ok((mut batch, state)) => {
                db.put(
                    &mut batch,
                    Cf::Meta,
                    MetaKey::Snapshot.key(),
                    &meta.snapshot_id,
                )?;
                db.write(batch, true).map(|()| state)
            }
            Err(e) => Err(e),
        };
        drop(purge_guard);
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                let _ = fs::remove_file(&installing);
                return Err(e);
            }
        };
        rename(&installing, &self.dir.join(CURRENT))?;
        *db.purge_guard() = meta.last_log_id;
        clear_marker(db)?;
        *current = Some(meta.clone());
        Ok(state)
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Option<SnapshotMeta>> {
        self.current.lock()
    }
}

/// One batch that replaces the journal, dedupe records and applied state with the image's.
/// Nothing is written unless the whole image checks out (rows, then checksum at the end).
fn batch_from_image(
    db: &Db,
    path: &Path,
    meta: &SnapshotMeta,
) -> Result<(WriteBatch, AppliedState), StoreError> {
    let damaged = |e: crate::store::snapshot::SnapshotDecodeError| StoreError::Snapshot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(path).map_err(|e| file_error(path, "open", &e))?;
    let (mut reader, head) = ImageReader::open(BufReader::new(file)).map_err(damaged)?;
    if head.snapshot_id != meta.snapshot_id || head.last_applied != meta.last_log_id {
        return Err(StoreError::Snapshot {
            path: path.to_path_buf(),
            reason: format!(
                "image {} at {:?} is not the announced snapshot {} at {:?}",
                head.snapshot_id, head.last_applied, meta.snapshot_id, meta.last_log_id
            ),
        });
    }
    let mut batch = WriteBatch::default();
    for cf in [Cf::Journal, Cf::Dedupe, Cf::DedupeExpiry] {
        batch.delete_range_cf(db.cf(cf)?, &[][..], &KEY_END[..]);
    }
    while let Some(row) = reader.next_row().map_err(damaged)? {
        match row {
            Row::Journal(index, record) => {
                db.put(&mut batch, Cf::Journal, &index_key(index), &record)?;
            }
            Row::Dedupe(id, record) => {
                db.put(&mut batch, Cf::Dedupe, id.as_bytes(), &record)?;
                batch.put_cf(
                    db.cf(Cf::DedupeExpiry)?,
                    expiry_key(record.committed_at_ms, &id),
                    [],
                );
            }
        }
    }
    // openraft 0.9 asks the log to purge what the snapshot covers before the state machine has
    // installed it; `LogStore::purge` never goes past what is applied, so that purge was cut
    // short. Finish it here, in the same batch: after a kill -9 at any point the log either
    // still starts right after the old state or right after the snapshot, never with a hole
    // ("try to get log at index N but got None" at restart).
    if let Some(last) = head.last_applied {
        let purged: Option<LogId> = db.get(Cf::Meta, MetaKey::LastPurged.key())?;
        if purged < Some(last) {
            db.put(&mut batch, Cf::Meta, MetaKey::LastPurged.key(), &last)?;
            batch.delete_range_cf(db.cf(Cf::Log)?, index_key(0), index_key(last.index + 1));
        }
    }
    let state = AppliedState {
        last_applied: head.last_applied,
        membership: head.membership,
        journal: head.journal,
    };
    db.put(&mut batch, Cf::Meta, MetaKey::Applied.key(), &state)?;
    Ok((batch, state))
}

/// Read a snapshot file whole, checking every row and the checksum; its head.
pub fn verify(path: &Path) -> Result<Head, StoreError> {
    let damaged = |e: crate::store::snapshot::SnapshotDecodeError| StoreError::Snapshot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(path).map_err(|e| file_error(path, "open", &e))?;
    let (mut reader, head) = ImageReader::open(BufReader::new(file)).map_err(damaged)?;
    while reader.next_row().map_err(damaged)?.is_some() {}
    Ok(head)
}

/// The install is complete (its file is `current.snap`): forget the marker.
fn clear_marker(db: &Db) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    batch.delete_cf(db.cf(Cf::Meta)?, MetaKey::Snapshot.key());
    db.write(batch, false)
}

fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    fs::rename(from, to).map_err(|e| file_error(from, "rename", &e))?;
    sync_dir(to)
}

fn remove(path: &Path) -> Result<(), StoreError> {
    fs::remove_file(path).map_err(|e| file_error(path, "remove", &e))?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| file_error(dir, "sync", &e))
}

fn file_error(path: &Path, action: &str, e: &std::io::Error) -> StoreError {
    StoreError::Snapshot {
        path: path.to_path_buf(),
        reason: format!("{action} failed: {e}"),
    }
}
