//! openraft's log storage (`RaftLogStorage`) on [`Db`]: entries, vote, committed id, purge.
//!
//! Contract (notes/openraft.md): `save_vote` and the append callback only after a synced write;
//! `truncate` synced; `purge` records `last_purged` in the same batch as the deletion.
//!
//! The newest appended entries are also kept in memory ([`TailCache`], bounded by count and
//! bytes), so replication — which re-reads every entry it sends right after it was appended —
//! is answered without a blocking-thread hop, a RocksDB iterator and a decode per RPC. The
//! cache only ever holds entries that are already durable (inserted after the synced write).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use parking_lot::Mutex;

use openraft::EntryPayload;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{Cf, Db, MetaKey, StoreError, index_key, parse_index_key};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

/// Most entries kept in the tail cache.
const CACHE_MAX_ENTRIES: usize = 1024;
/// Most (approximate) operation bytes kept in the tail cache.
const CACHE_MAX_BYTES: usize = 2 << 20;

/// A contiguous run of the newest log entries (a suffix of the log, or empty).
#[derive(Debug, Default)]
struct TailCache {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

fn entry_bytes(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(p) => {
            p.operations
                .iter()
                .map(|op| op.approx_size())
                .sum::<usize>()
                + 64
        }
        _ => 256,
    }
}

impl TailCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries just made durable, in order, following the cached ones.
    fn push(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            let index = entry.log_id.index;
            match self.last_index() {
                Some(last) if index == last + 1 => {}
                None => {}
                // Not contiguous (cannot happen after a proper truncate): start over.
                Some(_) => self.clear(),
            }
            let size = entry_bytes(&entry);
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > CACHE_MAX_ENTRIES
            || (self.bytes > CACHE_MAX_BYTES && self.entries.len() > 1)
        {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Drop entries at `index` and after.
    fn truncate(&mut self, index: u64) {
        while self.last_index().is_some_and(|last| last >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Drop entries up to and including `index`.
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// The entries `start..end` when the cache holds all of them (an unbounded end means up
    /// to the last entry of the log, which the cache holds whenever it is not empty).
    fn get(&self, start: u64, end: Bound<u64>) -> Option<Vec<Entry>> {
        let (first, last) = (self.first_index()?, self.last_index()?);
        let end_incl = match end {
            Bound::Included(e) => e,
            Bound::Excluded(0) => return Some(Vec::new()),
            Bound::Excluded(e) => e - 1,
            Bound::Unbounded => last,
        };
        if start > end_incl {
            return Some(Vec::new());
        }
        if start < first || end_incl > last {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = usize::try_from(end_incl - first).ok()?;
        Some(
            self.entries
                .range(from..=to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

/// The Raft log of one node. Cheap to clone: a handle on the shared [`Db`] and tail cache.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Db,
    cache: Arc<Mutex<TailCache>>,
}

impl LogStore {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Arc::default(),
        }
    }

    fn cache(&self) -> parking_lot::MutexGuard<'_, TailCache> {
        self.cache.lock()
    }

    pub(super) fn read_range(
        db: &Db,
        start: u64,
        end: Bound<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let cf = db.cf(Cf::Log)?;
        let from = index_key(start);
        let mut out = Vec::new();
        for item in db
            .raw()
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(db.rocks_err("read log"))?;
            let index = parse_index_key(db, Cf::Log, &key)?;
            let past_end = match end {
                Bound::Included(e) => index > e,
                Bound::Excluded(e) => index >= e,
                Bound::Unbounded => false,
            };
            if past_end {
                break;
            }
            let entry: Entry = db.decode(Cf::Log, &key, &value)?;
            out.push(entry);
        }
        Ok(out)
    }

    fn last_entry_id(db: &Db) -> Result<Option<LogId>, StoreError> {
        let cf = db.cf(Cf::Log)?;
        match db.raw().iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (key, value) = item.map_err(db.rocks_err("read log"))?;
                let entry: Entry = db.decode(Cf::Log, &key, &value)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

fn start_of(range: &impl RangeBounds<u64>) -> u64 {
    match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    }
}

fn end_of(range: &impl RangeBounds<u64>) -> Bound<u64> {
    match range.end_bound() {
        Bound::Included(e) => Bound::Included(*e),
        Bound::Excluded(e) => Bound::Excluded(*e),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = (start_of(&range), end_of(&range));
        if let Some(entries) = self.cache().get(start, end) {
            return Ok(entries);
        }
        self.db
            .blocking(move |db| Self::read_range(db, start, end))
            .await
            .map_err(|e| StorageIOError::<NodeId>::read_logs(&e).into())
    }
}

/// The id of the last entry of the log, or of the last purged one when none is left: what
/// Raft compares to tell which log is the most up to date (its term first, then its index).
///
/// Read for every `GET /admin/v1/status`: only the entry's leading log id is decoded (an
/// entry's payload may be a whole batch of operations).
pub fn last_log_id(db: &Db) -> Result<Option<LogId>, StoreError> {
    let cf = db.cf(Cf::Log)?;
    let last = match db.raw().iterator_cf(cf, IteratorMode::End).next() {
        None => None,
        Some(item) => {
            let (key, value) = item.map_err(db.rocks_err("read log"))?;
            let (id, _) = postcard::take_from_bytes::<LogId>(&value)
                .map_err(|e| db.corrupt(Cf::Log, super::show_key(&key), e.to_string()))?;
            Some(id)
        }
    };
    let purged: Option<LogId> = db.get(Cf::Meta, MetaKey::LastPurged.key())?;
    Ok(last.or(purged))
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let (last_purged, last) = self
            .db
            .blocking(|db| {
                let purged: Option<LogId> = db.get(Cf::Meta, MetaKey::LastPurged.key())?;
                Ok((purged, Self::last_entry_id(db)?))
            })
            .await
            .map_err(|e| StorageIOError::<NodeId>::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.db
            .blocking(move |db| {
                let mut batch = WriteBatch::default();
                db.put(&mut batch, Cf::Meta, MetaKey::Vote.key(), &vote)?;
                db.write(batch, true)
            })
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.db
            .blocking(|db| db.get(Cf::Meta, MetaKey::Vote.key()))
            .await
            .map_err(|e| StorageIOError::<NodeId>::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: a committed id that goes backwards after a crash only means re-applying
        // entries that are durable in the log anyway. It rides on the next synced write.
        self.db
            .blocking(move |db| {
                let mut batch = WriteBatch::default();
                db.put(&mut batch, Cf::Meta, MetaKey::Committed.key(), &committed)?;
                db.write(batch, false)
            })
            .await
            .map_err(|e| StorageIOError::<NodeId>::write(&e).into())
    }

    /// The saved committed id, if the log can back it: it is purged (so applied), or the log
    /// holds that very entry (and so, by log matching, the leader's entries before it).
    /// Otherwise the last purged id. openraft 0.9 saves a snapshot's id as committed before its
    /// state machine has installed it; killed in between, the saved id may name an entry this
    /// log never held, or one of a divergent, uncommitted suffix, and openraft would re-apply
    /// up to it at restart. Lower is always safe: the leader sends its commit index again.
    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.db
            .blocking(|db| {
                let saved: Option<LogId> = db
                    .get::<Option<LogId>>(Cf::Meta, MetaKey::Committed.key())?
                    .flatten();
                let purged: Option<LogId> = db.get(Cf::Meta, MetaKey::LastPurged.key())?;
                let Some(id) = saved else {
                    return Ok(None);
                };
                if purged.is_some_and(|p| id.index <= p.index) {
                    return Ok(saved);
                }
                let held: Option<Entry> = db.get(Cf::Log, &index_key(id.index))?;
                Ok(if held.is_some_and(|e| e.log_id == id) {
                    saved
                } else {
                    purged
                })
            })
            .await
            .map_err(|e| StorageIOError::<NodeId>::read(&e).into())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let result = self
            .db
            .blocking(move |db| {
                let mut batch = WriteBatch::default();
                for entry in &entries {
                    db.put(&mut batch, Cf::Log, &index_key(entry.log_id.index), entry)?;
                }
                db.write(batch, true)?;
                Ok(entries)
            })
            .await;
        match result {
            Ok(entries) => {
                // Durable now: readable from memory by replication.
                self.cache().push(entries);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::<NodeId>::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache().truncate(log_id.index);
        self.db
            .blocking(move |db| {
                let mut batch = WriteBatch::default();
                batch.delete_range_cf(
                    db.cf(Cf::Log)?,
                    index_key(log_id.index),
                    index_key(u64::MAX),
                );
                batch.delete_cf(db.cf(Cf::Log)?, index_key(u64::MAX));
                db.write(batch, true)
            })
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.cache().purge(log_id.index);
        self.db
            .blocking(move |db| {
                // openraft 0.9 issues this purge right after handing a received snapshot to the
                // state machine worker, without waiting for it: never purge past what the state
                // machine has durably applied, nor past the snapshot file a restart would load
                // (`current.snap`, the older one until the install renames the new one), or a
                // kill -9 in between leaves a log purged beyond the restarted node's snapshot:
                // openraft's `purge_upto <= snapshot` check fails at start, and as a leader the
                // node could send no one the entries between the two. A later purge catches up.
                // A snapshot install may have purged further meanwhile (openraft decided this
                // purge earlier): the bound never moves back, or the log would claim entries
                // the install deleted. The guard keeps the install from writing between our
                // read and our write.
                let snapshot = db.purge_guard();
                let applied: Option<super::applied::AppliedState> =
                    db.get(Cf::Meta, MetaKey::Applied.key())?;
                let purged: Option<LogId> = db.get(Cf::Meta, MetaKey::LastPurged.key())?;
                let bounds = [applied.and_then(|a| a.last_applied), *snapshot];
                let log_id = bounds.into_iter().flatten().fold(log_id, LogId::min);
                if purged >= Some(log_id) {
                    return Ok(());
                }
                let mut batch = WriteBatch::default();
                db.put(&mut batch, Cf::Meta, MetaKey::LastPurged.key(), &log_id)?;
                batch.delete_range_cf(db.cf(Cf::Log)?, index_key(0), index_key(log_id.index + 1));
                db.write(batch, false)
            })
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId};

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn the_tail_cache_answers_only_ranges_it_holds_whole() {
        let mut c = TailCache::default();
        assert_eq!(indexes(c.get(1, Bound::Unbounded)), None);
        c.push((5..=9).map(entry).collect());
        assert_eq!(indexes(c.get(5, Bound::Excluded(8))), Some(vec![5, 6, 7]));
        assert_eq!(indexes(c.get(7, Bound::Unbounded)), Some(vec![7, 8, 9]));
        assert_eq!(indexes(c.get(9, Bound::Included(9))), Some(vec![9]));
        assert_eq!(
            indexes(c.get(4, Bound::Included(6))),
            None,
            "4 is not cached"
        );
        assert_eq!(
            indexes(c.get(8, Bound::Included(10))),
            None,
            "10 is not cached"
        );
        assert_eq!(indexes(c.get(8, Bound::Excluded(8))), Some(vec![]));
        c.truncate(8);
        assert_eq!(indexes(c.get(5, Bound::Unbounded)), Some(vec![5, 6, 7]));
        c.push(vec![entry(8)]);
        c.purge(6);
        assert_eq!(indexes(c.get(7, Bound::Unbounded)), Some(vec![7, 8]));
        assert_eq!(indexes(c.get(6, Bound::Unbounded)), None);
        // A gap starts the cache over: it must stay a suffix of the log.
        c.push(vec![entry(20)]);
        assert_eq!(indexes(c.get(20, Bound::Unbounded)), Some(vec![20]));
        assert_eq!(indexes(c.get(8, Bound::Unbounded)), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_committed_id_the_log_cannot_back_is_read_back_as_the_last_purged_one() {
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), "c").unwrap();
        let mut log = LogStore::new(db.clone());
        let at = |index| Some(LogId::new(CommittedLeaderId::new(1, 1), index));
        // A snapshot's id saved as committed, nothing in the log (killed before the install).
        log.save_committed(at(1500)).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);
        // An id of another term at an index the log holds: not backed either.
        log.save_committed(Some(LogId::new(CommittedLeaderId::new(2, 1), 3)))
            .await
            .unwrap();
        // Entries written as `append` writes them (its flush callback cannot be built here).
        let mut batch = WriteBatch::default();
        for e in (1..=3).map(entry) {
            db.put(&mut batch, Cf::Log, &index_key(e.log_id.index), &e)
                .unwrap();
        }
        db.write(batch, true).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);
        log.save_committed(at(3)).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), at(3));
        log.purge(at(3).unwrap()).await.unwrap();
        assert_eq!(
            log.read_committed().await.unwrap(),
            at(3),
            "purged entries count"
        );
        log.save_committed(at(2)).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), at(2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_late_purge_never_lowers_what_a_snapshot_install_purged() {
        use openraft::storage::RaftLogStorage;
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), "c").unwrap();
        let mut log = LogStore::new(db.clone());
        let at = |index| Some(LogId::new(CommittedLeaderId::new(1, 1), index));
        // The store as a snapshot install at 10 leaves it: applied and purged up to 10.
        let state = super::super::applied::AppliedState {
            last_applied: at(10),
            ..Default::default()
        };
        let mut batch = WriteBatch::default();
        db.put(&mut batch, Cf::Meta, MetaKey::Applied.key(), &state)
            .unwrap();
        db.put(
            &mut batch,
            Cf::Meta,
            MetaKey::LastPurged.key(),
            &at(10).unwrap(),
        )
        .unwrap();
        db.write(batch, true).unwrap();
        // A purge openraft decided before the install (up to 8) runs after it.
        log.purge(at(8).unwrap()).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(
            state.last_purged_log_id,
            at(10),
            "the purged bound moved back"
        );
    }

    #[test]
    fn the_tail_cache_is_bounded() {
        let mut c = TailCache::default();
        let n = u64::try_from(CACHE_MAX_ENTRIES).unwrap() + 10;
        c.push((1..=n).map(entry).collect());
        assert_eq!(c.entries.len(), CACHE_MAX_ENTRIES);
        assert_eq!(c.last_index(), Some(n));
        assert_eq!(c.first_index(), Some(11));
    }

    #[test]
    fn the_last_log_id_is_read_from_the_entry_prefix_or_the_purged_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), "c").unwrap();
        assert_eq!(last_log_id(&db).unwrap(), None);
        let purged = LogId::new(CommittedLeaderId::new(2, 1), 9);
        let mut batch = rocksdb::WriteBatch::default();
        db.put(&mut batch, Cf::Meta, MetaKey::LastPurged.key(), &purged)
            .unwrap();
        db.write(batch, true).unwrap();
        assert_eq!(last_log_id(&db).unwrap(), Some(purged));
        let mut batch = rocksdb::WriteBatch::default();
        for e in [entry(10), entry(11)] {
            db.put(&mut batch, Cf::Log, &index_key(e.log_id.index), &e)
                .unwrap();
        }
        db.write(batch, true).unwrap();
        assert_eq!(last_log_id(&db).unwrap(), Some(entry(11).log_id));
    }
}
