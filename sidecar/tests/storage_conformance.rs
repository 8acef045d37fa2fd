//! openraft's storage conformance suite against the real RocksDB store on temp dirs.
#![allow(clippy::panic, reason = "test code")]

use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use raft_sidecar::store::Db;
use raft_sidecar::store::log::LogStore;
use raft_sidecar::store::state_machine::StateMachineStore;
use raft_sidecar::types::{NodeId, TypeConfig};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| openraft::StorageIOError::<NodeId>::write(&e))?;
        let (db, _) = Db::open(dir.path(), "conformance")?;
        let sm = StateMachineStore::open(db.clone(), 1_000)?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn the_rocksdb_store_passes_openraft_storage_conformance() {
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("storage conformance failed: {e}");
    }
}
