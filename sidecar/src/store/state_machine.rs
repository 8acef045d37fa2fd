//! openraft's state machine (`RaftStateMachine`) on [`Db`]: applies committed proposals to the
//! journal through the pure [`crate::journal::apply_operation`], builds and installs snapshots,
//! and tells readers (journal API, SSE watchers, waiting submitters) what has been applied.
//!
//! Each `apply` call is one atomic write batch holding the journal records, dedupe records and
//! the applied log id, so exactly-once holds across crashes: either the operation and its dedupe
//! record are both on disk with the applied id, or neither is and the entry is applied again.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use tokio::sync::watch;

use self::pace::{SnapshotPace, Turn};
use self::snapshots::SnapshotFiles;

pub use super::applied::AppliedState;
use super::{Cf, Db, MetaKey, StoreError, expiry_key, index_key, parse_index_key, show_key};
use crate::journal::{self, DedupeRecord, JournalRecord, JournalRecordRef, JournalState, Proposal};
use crate::types::{
    ApplyResponse, Entry, LogId, NodeId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

pub struct StateMachineStore {
    db: Db,
    state: AppliedState,
    retention: u64,
    progress: watch::Sender<AppliedState>,
    snapshot_seq: Arc<AtomicU64>,
    snapshots: Arc<SnapshotFiles>,
    /// How long builds wait for their turn (closed when the store is dropped).
    pace: Arc<SnapshotPace>,
    /// The file openraft is writing a received snapshot into.
    receiving: Option<PathBuf>,
}

impl StateMachineStore {
    /// Load the applied state from `db`; `retention` is `--journal-retention`. Snapshot builds
    /// are not paced (see [`Self::paced`]).
    pub fn open(db: Db, retention: u64) -> Result<Self, StoreError> {
        let state: AppliedState = db
            .get(Cf::Meta, MetaKey::Applied.key())?
            .unwrap_or_default();
        let (progress, _) = watch::channel(state.clone());
        let snapshots = Arc::new(SnapshotFiles::open(&db)?);
        Ok(Self {
            db,
            state,
            retention,
            progress,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            snapshots,
            pace: Arc::new(SnapshotPace::unpaced()),
            receiving: None,
        })
    }

    /// Let snapshot builds wait for their turn in `pace` (a running node's store).
    pub fn paced(mut self, pace: Arc<SnapshotPace>) -> Self {
        self.pace = pace;
        self
    }

    /// A reader for the daemon API, sharing the store and its progress notifications.
    pub fn reader(&self) -> JournalReader {
        JournalReader {
            db: self.db.clone(),
            progress: self.progress.subscribe(),
        }
    }

    fn publish(&mut self, state: AppliedState) {
        self.state = state;
        self.progress.send_replace(self.state.clone());
    }
}

/// Apply committed entries to `state`; everything goes into one batch written at the end.
pub(super) fn apply_entries(
    db: &Db,
    mut state: AppliedState,
    entries: Vec<Entry>,
    retention: u64,
) -> Result<(AppliedState, Vec<ApplyResponse>), StoreError> {
    let mut batch = WriteBatch::default();
    let mut unwritten = Unwritten::default();
    let mut responses = Vec::with_capacity(entries.len());
    for entry in entries {
        state.last_applied = Some(entry.log_id);
        match entry.payload {
            EntryPayload::Blank => responses.push(ApplyResponse::default()),
            EntryPayload::Membership(m) => {
                state.membership = StoredMembership::new(Some(entry.log_id), m);
                responses.push(ApplyResponse::default());
            }
            EntryPayload::Normal(proposal) => {
                let term = entry.log_id.leader_id.term;
                let outcomes =
                    apply_proposal(db, &mut state, &mut batch, &mut unwritten, &proposal, term)?;
                let keep_from = state.journal.retained_from(retention);
                if keep_from > state.journal.first_index {
                    let cf = db.cf(Cf::Journal)?;
                    batch.delete_range_cf(
                        cf,
                        index_key(state.journal.first_index),
                        index_key(keep_from),
                    );
                    state.journal.first_index = keep_from;
                }
                responses.push(ApplyResponse { outcomes });
            }
        }
    }
    db.put(&mut batch, Cf::Meta, MetaKey::Applied.key(), &state)?;
    db.write(batch, false)?;
    Ok((state, responses))
}

/// Dedupe changes made earlier in the same `apply` call: the DB shows them only once its batch
/// is written.
#[derive(Default)]
struct Unwritten {
    /// Per id, the record written (`Some`) or deleted (`None`).
    records: HashMap<String, Option<DedupeRecord>>,
    /// The records written, oldest commit first (the replicated clock never moves back).
    by_commit: VecDeque<(u64, String)>,
}

impl Unwritten {
    fn known(&self, db: &Db, id: &str) -> Result<Option<DedupeRecord>, StoreError> {
        match self.records.get(id) {
            Some(cached) => Ok(*cached),
            None => db.get::<DedupeRecord>(Cf::Dedupe, id.as_bytes()),
        }
    }
}

fn apply_proposal(
    db: &Db,
    state: &mut AppliedState,
    batch: &mut WriteBatch,
    unwritten: &mut Unwritten,
    proposal: &Proposal,
    term: u64,
) -> Result<Vec<journal::OpOutcome>, StoreError> {
    let expired_below = state.journal.dedupe_horizon_ms;
    let horizon = journal::advance_clock(&mut state.journal, proposal);
    // Garbage collection only: whether a record is live is decided by the horizon in
    // `apply_operation`, so it does not depend on how entries were grouped into calls.
    expire_dedupe(db, batch, unwritten, expired_below..horizon)?;
    let mut outcomes = Vec::with_capacity(proposal.operations.len());
    for op in &proposal.operations {
        let known = unwritten.known(db, &op.id)?;
        let (outcome, record) =
            journal::apply_operation(&mut state.journal, known.as_ref(), op, term);
        if let Some(record) = record {
            db.put(batch, Cf::Dedupe, op.id.as_bytes(), &record)?;
            batch.put_cf(
                db.cf(Cf::DedupeExpiry)?,
                expiry_key(record.committed_at_ms, &op.id),
                [],
            );
            unwritten.records.insert(op.id.clone(), Some(record));
            unwritten
                .by_commit
                .push_back((record.committed_at_ms, op.id.clone()));
            db.put(
                batch,
                Cf::Journal,
                &index_key(record.index),
                &JournalRecordRef {
                    term,
                    operation: op,
                },
            )?;
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Forget dedupe records committed in `expiring` (milliseconds): the ones on disk and the ones
/// written earlier in this `apply` call.
///
/// Its start is the horizon before this proposal: everything committed earlier was expired in
/// the same write that moved the horizon there, and the horizon never moves back, so no record
/// is ever committed below it again. Reading only this range matters: the expiry keys deleted
/// before stay behind as tombstones until RocksDB compacts them away, and an iterator from the
/// start of the column family stepped over all of them on every apply, a whole window of ids.
///
/// The record under an expiring key's id is deleted without reading it first. It is the record
/// that key was written for: an id is written again only once its record is below the horizon,
/// and by then the write that moved the horizon past the record deleted it and its key.
fn expire_dedupe(
    db: &Db,
    batch: &mut WriteBatch,
    unwritten: &mut Unwritten,
    expiring: std::ops::Range<u64>,
) -> Result<(), StoreError> {
    if expiring.is_empty() {
        return Ok(());
    }
    let dedupe = db.cf(Cf::Dedupe)?;
    let cf = db.cf(Cf::DedupeExpiry)?;
    // A batch spanning more than a window (a follower catching up on a quiet cluster) expires
    // records it wrote itself, which the iterator below cannot see.
    let expired = unwritten
        .by_commit
        .partition_point(|(at_ms, _)| *at_ms < expiring.end);
    for (at_ms, id) in unwritten.by_commit.drain(..expired) {
        batch.delete_cf(dedupe, id.as_bytes());
        batch.delete_cf(cf, expiry_key(at_ms, &id));
        unwritten.records.insert(id, None);
    }
    let mut bounds = rocksdb::ReadOptions::default();
    bounds.set_iterate_lower_bound(index_key(expiring.start));
    bounds.set_iterate_upper_bound(index_key(expiring.end));
    for item in db.raw().iterator_cf_opt(cf, bounds, IteratorMode::Start) {
        let (key, _) = item.map_err(db.rocks_err("read dedupe expiry"))?;
        if key.len() < 8 {
            return Err(db.corrupt(
                Cf::DedupeExpiry,
                show_key(&key),
                "key shorter than 8 bytes".into(),
            ));
        }
        let id = String::from_utf8(key[8..].to_vec())
            .map_err(|_| db.corrupt(Cf::DedupeExpiry, show_key(&key), "id is not UTF-8".into()))?;
        batch.delete_cf(dedupe, id.as_bytes());
        batch.delete_cf(cf, &key);
        unwritten.records.insert(id, None);
    }
    Ok(())
}

impl Drop for StateMachineStore {
    fn drop(&mut self) {
        self.pace.close();
    }
}

/// Builds snapshots from a RocksDB point-in-time view while `apply` goes on.
pub struct SnapshotBuilder {
    db: Db,
    seq: Arc<AtomicU64>,
    files: Arc<SnapshotFiles>,
    pace: Arc<SnapshotPace>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // The view is taken after the wait, so the snapshot holds everything applied until then.
        if self.pace.wait_turn().await == Turn::Closed {
            let e = StoreError::Task("the state machine closed before the snapshot's turn".into());
            return Err(StorageIOError::<NodeId>::write_snapshot(None, &e).into());
        }
        let started = tokio::time::Instant::now();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let files = self.files.clone();
        let (meta, file) = self
            .db
            .blocking(move |db| files.build(db, seq))
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_snapshot(None, &e))?;
        self.pace.finished(started);
        let file = tokio::fs::File::from_std(file);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let state = self.state.clone();
        let retention = self.retention;
        let (state, responses) = self
            .db
            .blocking(move |db| apply_entries(db, state, entries, retention))
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_state_machine(&e))?;
        self.publish(state);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            seq: self.snapshot_seq.clone(),
            files: self.snapshots.clone(),
            pace: self.pace.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.snapshots.receiving_path(seq);
        // Read and write: the same handle comes back to `install_snapshot`, which reads it.
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| {
                let e = StoreError::Snapshot {
                    path: path.clone(),
                    reason: format!("create failed: {e}"),
                };
                StorageIOError::<NodeId>::write_snapshot(None, &e)
            })?;
        if let Some(abandoned) = self.receiving.replace(path) {
            let _ = tokio::fs::remove_file(abandoned).await;
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let data = snapshot.into_std().await;
        if let Some(received) = self.receiving.take() {
            // The open handle keeps the data; the name is not needed any more.
            let _ = tokio::fs::remove_file(received).await;
        }
        let meta_owned = meta.clone();
        let files = self.snapshots.clone();
        let state = self
            .db
            .blocking(move |db| files.install(db, data, &meta_owned))
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_snapshot(signature.clone(), &e))?;
        self.publish(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let files = self.snapshots.clone();
        let current = self
            .db
            .blocking(move |_| files.open_current())
            .await
            .map_err(|e| StorageIOError::<NodeId>::read_snapshot(None, &e))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

/// One page of the journal as [`JournalReader::page`] read it.
#[derive(Debug)]
pub enum JournalSlice {
    /// The records from the index asked for on (none when it is past the end), and the
    /// journal's bounds in the same view.
    Records {
        journal: JournalState,
        records: Vec<(u64, JournalRecord)>,
    },
    /// The index asked for is below the oldest retained one.
    Compacted { first_index: u64 },
}

/// Read access to the journal for the daemon API; cheap to clone.
#[derive(Clone)]
pub struct JournalReader {
    db: Db,
    progress: watch::Receiver<AppliedState>,
}

impl JournalReader {
    /// What is applied right now.
    pub fn applied(&self) -> AppliedState {
        self.progress.borrow().clone()
    }

    /// Notified after every apply and snapshot install.
    pub fn subscribe(&self) -> watch::Receiver<AppliedState> {
        self.progress.clone()
    }

    /// Up to `limit` journal records from exactly index `from` on, read from one consistent
    /// view of the store together with the journal's bounds at that moment: a retention trim
    /// or a snapshot install can never make the page start past `from` (a reader would skip
    /// entries without knowing). `from` below the first retained index is
    /// [`JournalSlice::Compacted`]; `None` reads from the first retained index of that view.
    pub async fn page(&self, from: Option<u64>, limit: usize) -> Result<JournalSlice, StoreError> {
        self.db
            .blocking(move |db| {
                let view = db.raw().snapshot();
                let applied = AppliedState::read_in(db, &view)?;
                let journal = applied.journal;
                let from = from.unwrap_or(journal.first_index).max(1);
                if from < journal.first_index {
                    return Ok(JournalSlice::Compacted {
                        first_index: journal.first_index,
                    });
                }
                let start = index_key(from);
                let mut records = Vec::with_capacity(limit.min(1024));
                let rows = view.iterator_cf(
                    db.cf(Cf::Journal)?,
                    IteratorMode::From(&start, Direction::Forward),
                );
                for item in rows.take(limit) {
                    let (key, value) = item.map_err(db.rocks_err("read journal"))?;
                    let index = parse_index_key(db, Cf::Journal, &key)?;
                    let expected = from + records.len() as u64;
                    if index != expected {
                        return Err(db.corrupt(
                            Cf::Journal,
                            index,
                            format!("journal row {index} where {expected} was expected (retained {}..={})", journal.first_index, journal.last_index()),
                        ));
                    }
                    records.push((index, db.decode(Cf::Journal, &key, &value)?));
                }
                let wanted = journal.last_index().saturating_sub(from) + 1;
                if from <= journal.last_index() && (records.len() as u64) < wanted.min(limit as u64) {
                    return Err(db.corrupt(
                        Cf::Journal,
                        from + records.len() as u64,
                        format!("journal row missing (retained {}..={})", journal.first_index, journal.last_index()),
                    ));
                }
                Ok(JournalSlice::Records { journal, records })
            })
            .await
    }

    /// The dedupe record of a committed operation id, if remembered.
    ///
    /// A record below the dedupe horizon is forgotten, as `apply` treats it. Applies delete
    /// such records in the write that moves the horizon past them, but stores written by
    /// earlier versions can still hold a few.
    pub async fn lookup(&self, id: String) -> Result<Option<DedupeRecord>, StoreError> {
        let journal = self.progress.borrow().journal;
        let record = self
            .db
            .blocking(move |db| db.get::<DedupeRecord>(Cf::Dedupe, id.as_bytes()))
            .await?;
        Ok(record.filter(|r| journal.remembers(r)))
    }
}

pub mod pace;
pub(super) mod snapshots;
#[cfg(test)]
mod tests;
