//! Durable storage: one RocksDB instance per node holding the Raft log, the vote, the committed
//! id and the state machine (journal + dedupe records); snapshots are files beside it.
//!
//! Data flow: openraft calls [`log::LogStore`] (append, vote, truncate, purge) and
//! [`state_machine::StateMachineStore`] (apply, snapshots); both are thin adapters over [`Db`].
//! Vote and log share this instance's write-ahead log, so their order on disk is the order of
//! the writes. Synced writes run on blocking threads, never on tokio workers. A value that does
//! not decode is a hard error naming the path, column family and key — never "empty".

mod applied;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod log;
pub mod recover;
pub mod restore;
pub mod snapshot;
pub mod staged;
pub mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB,
    Options, WriteBatch, WriteOptions,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{LogId, NodeId};

/// The column families; one enum so no string literal names a family anywhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// Small singletons, keyed by [`MetaKey`].
    Meta,
    /// Raft log entries by index (u64 big-endian).
    Log,
    /// Journal records by journal index (u64 big-endian).
    Journal,
    /// Dedupe records by operation id.
    Dedupe,
    /// Expiry index of dedupe records: committed-at ms (u64 BE) ++ operation id.
    DedupeExpiry,
}

impl Cf {
    pub const ALL: [Cf; 5] = [Cf::Meta, Cf::Log, Cf::Journal, Cf::Dedupe, Cf::DedupeExpiry];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Log => "log",
            Cf::Journal => "journal",
            Cf::Dedupe => "dedupe",
            Cf::DedupeExpiry => "dedupe_expiry",
        }
    }
}

/// Keys of [`Cf::Meta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    ClusterId,
    NodeId,
    Vote,
    Committed,
    LastPurged,
    /// The state machine's applied state ([`state_machine::AppliedState`]).
    Applied,
    /// Set (to the snapshot's id) by a snapshot install's state batch, cleared once its file is
    /// `snapshots/current.snap`; see `state_machine::snapshots`.
    Snapshot,
    /// Set once this node learned a committed configuration removed it.
    Removed,
    /// The store format ([`STORE_FORMAT`]), written with the node's identity.
    Format,
    /// Where a restored store came from ([`restore::RestoredFrom`]); absent otherwise.
    RestoredFrom,
}

impl MetaKey {
    pub fn key(self) -> &'static [u8] {
        match self {
            MetaKey::ClusterId => b"cluster_id",
            MetaKey::NodeId => b"node_id",
            MetaKey::Vote => b"vote",
            MetaKey::Committed => b"committed",
            MetaKey::LastPurged => b"last_purged",
            MetaKey::Applied => b"applied",
            MetaKey::Snapshot => b"installed_snapshot",
            MetaKey::Removed => b"removed",
            MetaKey::Format => b"format",
            MetaKey::RestoredFrom => b"restored_from",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to open RocksDB at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("RocksDB at {path}: {action} failed: {source}")]
    Rocks {
        path: PathBuf,
        action: &'static str,
        source: rocksdb::Error,
    },
    #[error("corrupt value in RocksDB at {path} (column family {cf}, key {key}): {reason}")]
    Corrupt {
        path: PathBuf,
        cf: &'static str,
        key: String,
        reason: String,
    },
    #[error(
        "data dir {path} belongs to cluster {stored:?}, not {wanted:?}: refusing to start \
         (point --data-dir at an empty directory or use --cluster-id {stored:?})"
    )]
    ClusterMismatch {
        path: PathBuf,
        stored: String,
        wanted: String,
    },
    #[error(
        "data dir {path} holds store format {found} and this raft-sidecar reads only format \
         {wanted}: refusing to start (replace this member with one on an empty data dir, which \
         catches up from the leader, or restore the cluster from a backup made by this version)"
    )]
    Format {
        path: PathBuf,
        found: u32,
        wanted: u32,
    },
    #[error("snapshot file {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },
    #[error("column family {0} missing from RocksDB")]
    MissingCf(&'static str),
    #[error("storage task failed: {0}")]
    Task(String),
}

/// What this build writes and reads. 1: stores without a format marker (dedupe records with
/// a 64-bit digest, expired against leaders' wall clocks). 2: SHA-256 digests and the
/// replicated dedupe clock and window.
pub const STORE_FORMAT: u32 = 2;

/// Cap of all column families' memtables together.
const MEMTABLES_TOTAL_BYTES: usize = 24 << 20;
/// Memtable size of one column family before it is flushed.
const MEMTABLE_BYTES: usize = 8 << 20;
/// The one block cache shared by all column families (data, index and filter blocks).
const BLOCK_CACHE_BYTES: usize = 8 << 20;

/// Bits per key of the dedupe column family's Bloom filters in its SST files (~1 % false
/// positives).
const DEDUPE_BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Share of the dedupe memtable given to its Bloom filter.
const DEDUPE_MEMTABLE_BLOOM_RATIO: f64 = 0.05;

/// Size of one partition of an SST file's index or filter.
const METADATA_BLOCK_BYTES: usize = 4 << 10;

/// Block-based table options over the one shared cache.
///
/// Index and filter blocks live in the cache, partitioned: a file's index and filter are cut
/// into 4 KiB partitions under a small top level that stays pinned. Whole, the filter of a file
/// holding a million dedupe records is about 1.2 MiB, and the index as large; in an 8 MiB cache
/// shared with data blocks they were evicted and read back (checksummed, copied) on nearly every
/// look-up once the store held ~400,000 records. The sustained rate then fell from ~20,000 to
/// ~4,500 ops/s per 100,000 operations with 256 clients (release build, `raft-bench rss`);
/// 27 % of the leader's CPU went to checksumming those blocks and 20 % to copying them.
fn table_options(cache: &Cache) -> BlockBasedOptions {
    let mut tables = BlockBasedOptions::default();
    tables.set_block_cache(cache);
    tables.set_cache_index_and_filter_blocks(true);
    tables.set_cache_index_and_filter_blocks_with_high_priority(true);
    tables.set_pin_l0_filter_and_index_blocks_in_cache(true);
    tables.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    tables.set_partition_filters(true);
    tables.set_metadata_block_size(METADATA_BLOCK_BYTES);
    tables.set_pin_top_level_index_and_filter(true);
    tables
}

/// Who this data dir belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub node_id: NodeId,
    /// The data dir was initialized by this start.
    pub fresh: bool,
}

/// A shared handle on the node's RocksDB instance.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DB>,
    path: Arc<PathBuf>,
    /// Serialises changes of the log's purged bound (`MetaKey::LastPurged`): openraft 0.9 runs
    /// a log purge and a snapshot install on different tasks, and each reads the bound, then
    /// writes it. Holds the last log id of the snapshot a restart would load
    /// (`snapshots/current.snap`), which no purge may pass.
    purged: Arc<parking_lot::Mutex<Option<LogId>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

impl Db {
    /// Open (creating when missing) the store under `dir` and check or record the cluster id.
    /// A fresh dir gets a new random node id.
    pub fn open(dir: &Path, cluster_id: &str) -> Result<(Db, Identity), StoreError> {
        let path = dir.join("rocksdb");
        // RocksDB opens a store whose MANIFEST lost its tail as an older (even empty) version:
        // a store that existed before this start must still hold our identity (see below).
        let existed = std::fs::read_to_string(path.join("CURRENT")).ok();
        std::fs::create_dir_all(&path).map_err(|source| StoreError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_paranoid_checks(true);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(3);
        opts.set_max_total_wal_size(64 << 20);
        // Memory: RocksDB's default memtable is 64 MiB per column family (five here), flushed
        // only when full, so a node's RSS grew by ~600 bytes per operation until then (86–106
        // MiB after 100,000 operations). One cap for all memtables keeps it bounded; flushes
        // go to SST files in the background (the WAL is still synced on every log write).
        opts.set_db_write_buffer_size(MEMTABLES_TOTAL_BYTES);
        // Without a cache of its own, each column family's table factory creates a private
        // 32 MiB block cache, and index and filter blocks live outside any cache: one shared,
        // bounded cache holds all of them instead.
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let tables = table_options(&cache);
        // Every operation applied looks its id up in `Cf::Dedupe`, and almost every look-up is a
        // miss (a new id). Without filters a miss walks the memtable skip list and then every
        // SST file's index: the single hottest spot in a profile of 64 clients. Bloom filters,
        // in the memtable and in the files, answer most misses from a few bits.
        let mut dedupe_tables = table_options(&cache);
        dedupe_tables.set_bloom_filter(DEDUPE_BLOOM_BITS_PER_KEY, false);
        dedupe_tables.set_whole_key_filtering(true);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut cf_opts = Options::default();
            cf_opts.set_write_buffer_size(MEMTABLE_BYTES);
            if *cf == Cf::Dedupe {
                cf_opts.set_block_based_table_factory(&dedupe_tables);
                cf_opts.set_memtable_prefix_bloom_ratio(DEDUPE_MEMTABLE_BLOOM_RATIO);
                cf_opts.set_memtable_whole_key_filtering(true);
            } else {
                cf_opts.set_block_based_table_factory(&tables);
            }
            ColumnFamilyDescriptor::new(cf.name(), cf_opts)
        });
        let inner =
            DB::open_cf_descriptors(&opts, &path, cfs).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let db = Db {
            inner: Arc::new(inner),
            path: Arc::new(path),
            purged: Arc::new(parking_lot::Mutex::new(None)),
        };
        let identity = db.check_identity(cluster_id, existed.as_deref())?;
        if identity.fresh {
            db.set_aside_old_snapshots()?;
        }
        Ok((db, identity))
    }

    /// A new store beside a `snapshots/` directory: the RocksDB directory was wiped (or lost)
    /// and the snapshots of the old one stayed. A new node must not start from another node's
    /// state, so they are moved to `snapshots.orphaned-<unix seconds>/` (kept for whoever
    /// wants them, never read again).
    fn set_aside_old_snapshots(&self) -> Result<(), StoreError> {
        let dir = self.snapshot_dir();
        let holds_any = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
        if !holds_any {
            return Ok(());
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = dir.with_file_name(format!("snapshots.orphaned-{secs}"));
        std::fs::rename(&dir, &aside).map_err(|e| StoreError::Snapshot {
            path: dir.clone(),
            reason: format!(
                "a new store cannot move the old snapshots aside to {}: {e}",
                aside.display()
            ),
        })?;
        tracing::warn!(
            from = %dir.display(),
            to = %aside.display(),
            "a new store found snapshots of an earlier one (its RocksDB directory was wiped); moved them aside"
        );
        Ok(())
    }

    /// `existed`: the contents of CURRENT before this open, when the store already existed.
    fn check_identity(
        &self,
        cluster_id: &str,
        existed: Option<&str>,
    ) -> Result<Identity, StoreError> {
        let stored: Option<String> = self.get(Cf::Meta, MetaKey::ClusterId.key())?;
        let node_id: Option<NodeId> = self.get(Cf::Meta, MetaKey::NodeId.key())?;
        match (stored, node_id) {
            (Some(stored), Some(node_id)) if stored == cluster_id => {
                // Stores written before the marker existed are format 1.
                let found: u32 = self.get(Cf::Meta, MetaKey::Format.key())?.unwrap_or(1);
                if found != STORE_FORMAT {
                    return Err(StoreError::Format {
                        path: self.path.as_ref().clone(),
                        found,
                        wanted: STORE_FORMAT,
                    });
                }
                Ok(Identity {
                    node_id,
                    fresh: false,
                })
            }
            (Some(stored), _) if stored != cluster_id => Err(StoreError::ClusterMismatch {
                path: self.path.as_ref().clone(),
                stored,
                wanted: cluster_id.to_string(),
            }),
            (_, Some(_)) | (Some(_), None) => Err(self.corrupt(
                Cf::Meta,
                "node_id",
                "cluster id and node id must be stored together".into(),
            )),
            (None, None) if existed.is_some() => Err(self.corrupt(
                Cf::Meta,
                "node_id",
                format!(
                    "the store existed before this start (CURRENT names {}) but holds no node \
                     identity: its MANIFEST or CURRENT is damaged or truncated (or the first start \
                     crashed before the identity was written); refusing to start as a new, empty \
                     node (move the data dir away to start afresh)",
                    existed.unwrap_or_default().trim()
                ),
            )),
            (None, None) => {
                let node_id = loop {
                    let candidate: u64 = rand::random();
                    if candidate != 0 {
                        break candidate;
                    }
                };
                let mut batch = WriteBatch::default();
                self.put(
                    &mut batch,
                    Cf::Meta,
                    MetaKey::ClusterId.key(),
                    &cluster_id.to_string(),
                )?;
                self.put(&mut batch, Cf::Meta, MetaKey::NodeId.key(), &node_id)?;
                self.put(&mut batch, Cf::Meta, MetaKey::Format.key(), &STORE_FORMAT)?;
                self.write(batch, true)?;
                Ok(Identity {
                    node_id,
                    fresh: true,
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Held from reading `MetaKey::LastPurged` to writing the batch that changes it; holds
    /// the last log id of the current snapshot file, set by whoever replaces that file.
    pub fn purge_guard(&self) -> parking_lot::MutexGuard<'_, Option<LogId>> {
        self.purged.lock()
    }

    pub fn raw(&self) -> &DB {
        &self.inner
    }

    /// `<data dir>/snapshots`, beside this RocksDB directory.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from("snapshots"), |d| d.join("snapshots"))
    }

    pub fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StoreError> {
        self.inner
            .cf_handle(cf.name())
            .ok_or(StoreError::MissingCf(cf.name()))
    }

    pub fn rocks_err(
        &self,
        action: &'static str,
    ) -> impl FnOnce(rocksdb::Error) -> StoreError + '_ {
        move |source| StoreError::Rocks {
            path: self.path.as_ref().clone(),
            action,
            source,
        }
    }

    pub fn corrupt(&self, cf: Cf, key: impl std::fmt::Display, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.as_ref().clone(),
            cf: cf.name(),
            key: key.to_string(),
            reason,
        }
    }

    /// Read and decode one value; `None` only when the key is absent.
    pub fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>, StoreError> {
        let handle = self.cf(cf)?;
        let Some(bytes) = self
            .inner
            .get_pinned_cf(handle, key)
            .map_err(self.rocks_err("read"))?
        else {
            return Ok(None);
        };
        self.decode(cf, key, &bytes).map(Some)
    }

    pub fn decode<T: DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| self.corrupt(cf, show_key(key), e.to_string()))
    }

    pub fn put<T: Serialize>(
        &self,
        batch: &mut WriteBatch,
        cf: Cf,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(value)
            .map_err(|e| StoreError::Task(format!("encode {}: {e}", show_key(key))))?;
        batch.put_cf(self.cf(cf)?, key, bytes);
        Ok(())
    }

    /// Make every write so far durable (the WAL synced), including those written unsynced.
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        self.inner
            .flush_wal(true)
            .map_err(self.rocks_err("sync the write-ahead log"))
    }

    /// Write a batch atomically; `sync` waits for the WAL to reach the disk.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.inner
            .write_opt(batch, &opts)
            .map_err(self.rocks_err("write"))
    }

    /// Run storage work that blocks (RocksDB calls, fsync) without stalling a tokio worker.
    ///
    /// On the multi-threaded runtime this is `block_in_place`: the calling thread becomes a
    /// blocking thread and hands its other tasks to another worker, so the storage call starts
    /// at once and its caller resumes at once, instead of two thread wake-ups (to a pool thread
    /// and back) on the write path of every entry. On a current-thread runtime (unit tests)
    /// it falls back to `spawn_blocking`.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread) {
            return tokio::task::block_in_place(|| f(self));
        }
        let db = self.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Record that this node was removed from the cluster (survives restarts).
    pub fn mark_removed(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        self.put(&mut batch, Cf::Meta, MetaKey::Removed.key(), &true)?;
        self.write(batch, true)
    }

    pub fn is_removed(&self) -> Result<bool, StoreError> {
        Ok(self
            .get::<bool>(Cf::Meta, MetaKey::Removed.key())?
            .unwrap_or(false))
    }

    /// Flush memtables so a clean shutdown leaves little WAL to replay.
    pub fn flush(&self) -> Result<(), StoreError> {
        for cf in Cf::ALL {
            self.inner
                .flush_cf(self.cf(cf)?)
                .map_err(self.rocks_err("flush"))?;
        }
        Ok(())
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

/// Upper bound of every key in the journal, dedupe and expiry families (ids are UTF-8, which
/// never contains 0xff; index keys are 8 bytes).
pub const KEY_END: [u8; 9] = [0xff; 9];

/// Key of a dedupe expiry row: commit time (big-endian milliseconds) then the operation id, so
/// rows sort by expiry.
pub fn expiry_key(at_ms: u64, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&at_ms.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// Big-endian u64 keys sort numerically.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn parse_index_key(db: &Db, cf: Cf, key: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = key
        .try_into()
        .map_err(|_| db.corrupt(cf, show_key(key), "key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
}

/// A key for messages: UTF-8 when it is, hex otherwise.
pub fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_string(),
        _ => key.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

impl From<StoreError> for crate::types::StorageError {
    fn from(e: StoreError) -> Self {
        openraft::StorageIOError::<NodeId>::write(&e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_keeps_its_node_id_and_refuses_another_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let (db, first) = Db::open(dir.path(), "c-1").unwrap();
        assert!(first.fresh);
        drop(db);
        let (db, again) = Db::open(dir.path(), "c-1").unwrap();
        assert_eq!(
            again,
            Identity {
                node_id: first.node_id,
                fresh: false
            }
        );
        drop(db);
        let err = Db::open(dir.path(), "c-2").unwrap_err();
        assert!(matches!(err, StoreError::ClusterMismatch { .. }), "{err}");
        assert!(err.to_string().contains("c-1"), "{err}");
    }

    #[test]
    fn a_data_dir_of_another_store_format_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), "c-1").unwrap();
        // What a data dir written before the format marker looks like.
        let cf = db.cf(Cf::Meta).unwrap();
        db.raw().delete_cf(cf, MetaKey::Format.key()).unwrap();
        drop(db);
        let err = Db::open(dir.path(), "c-1").unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Format {
                    found: 1,
                    wanted: STORE_FORMAT,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("format 1"), "{err}");
        let (db, _) = Db::open(tempfile::tempdir().unwrap().path(), "c-1").unwrap();
        let format: Option<u32> = db.get(Cf::Meta, MetaKey::Format.key()).unwrap();
        assert_eq!(format, Some(STORE_FORMAT), "a new store is marked");
    }

    #[test]
    fn a_wiped_store_does_not_start_from_the_snapshots_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (db, first) = Db::open(dir.path(), "c-1").unwrap();
        let snapshots = db.snapshot_dir();
        std::fs::create_dir_all(&snapshots).unwrap();
        std::fs::write(snapshots.join("current.snap"), b"the old node's state").unwrap();
        drop(db);
        std::fs::remove_dir_all(dir.path().join("rocksdb")).unwrap();
        let (db, again) = Db::open(dir.path(), "c-1").unwrap();
        assert!(again.fresh && again.node_id != first.node_id);
        assert!(
            !snapshots.join("current.snap").exists(),
            "the old snapshot is still current"
        );
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("snapshots.orphaned-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        // The state machine opens empty.
        let sm = state_machine::StateMachineStore::open(db, 100).unwrap();
        assert_eq!(sm.reader().applied().last_applied, None);
    }

    #[test]
    fn an_undecodable_value_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _) = Db::open(dir.path(), "c-1").unwrap();
        let cf = db.cf(Cf::Meta).unwrap();
        db.raw()
            .put_cf(cf, MetaKey::Vote.key(), [0xff, 0xff, 0xff])
            .unwrap();
        let err = db
            .get::<crate::types::Vote>(Cf::Meta, MetaKey::Vote.key())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("vote") && msg.contains("rocksdb"), "{msg}");
    }
}
