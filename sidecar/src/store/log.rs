//! openraft's log storage (`RaftLogStorage`) on [`Db`]: entries, vote, committed id, purge.
//!
//! Contract (notes/openraft.md): `save_vote` and the append callback only after a synced write;
//! `truncate` synced; `purge` records `last_purged` in the same batch as the deletion.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{Cf, Db, MetaKey, StoreError, index_key, parse_index_key};
use crate::raft::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

/// The Raft log of one node. Cheap to clone: it is a handle on the shared [`Db`].
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Db,
}

impl LogStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    fn read_range(db: &Db, start: u64, end: Bound<u64>) -> Result<Vec<Entry>, StoreError> {
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
        self.db
            .blocking(move |db| Self::read_range(db, start, end))
            .await
            .map_err(|e| StorageIOError::<NodeId>::read_logs(&e).into())
    }
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

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.db
            .blocking(|db| {
                Ok(db
                    .get::<Option<LogId>>(Cf::Meta, MetaKey::Committed.key())?
                    .flatten())
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
                db.write(batch, true)
            })
            .await;
        match result {
            Ok(()) => {
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
        self.db
            .blocking(move |db| {
                let mut batch = WriteBatch::default();
                db.put(&mut batch, Cf::Meta, MetaKey::LastPurged.key(), &log_id)?;
                batch.delete_range_cf(db.cf(Cf::Log)?, index_key(0), index_key(log_id.index + 1));
                db.write(batch, false)
            })
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_logs(&e).into())
    }
}
