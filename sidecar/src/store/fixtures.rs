//! Test stores shared by the store's tests: a survivor's store with a log and applied entries.
#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::Path;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};

use super::state_machine::StateMachineStore;
use super::{Cf, Db, index_key};
use crate::journal::{Proposal, StoredOperation};
use crate::types::{Entry, LogId, Member, NodeId};

pub fn entry(index: u64, id: &str) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 7), index),
        payload: EntryPayload::Normal(Arc::new(Proposal {
            operations: vec![StoredOperation {
                id: id.into(),
                op_type: "t".into(),
                payload: Some(format!("{{\"n\":{index}}}")),
                daemon_id: None,
                timestamp: None,
            }],
            clock_ms: 1_000 + index,
            initial_window_ms: 60_000,
            set_window_ms: None,
        })),
    }
}

pub fn member() -> Member {
    Member {
        name: "survivor".into(),
        peer_addr: "127.0.0.1:1".into(),
        admin_addr: "127.0.0.1:2".into(),
    }
}

/// A survivor's store with five entries in its log, three applied; its node id.
pub async fn survivor(dir: &Path) -> NodeId {
    let entries: Vec<Entry> = (1..=5).map(|i| entry(i, &format!("op-{i}"))).collect();
    let (db, identity) = Db::open(dir, "c").unwrap();
    let mut batch = rocksdb::WriteBatch::default();
    for e in &entries {
        db.put(&mut batch, Cf::Log, &index_key(e.log_id.index), e)
            .unwrap();
    }
    db.write(batch, true).unwrap();
    let mut sm = StateMachineStore::open(db, 100).unwrap();
    sm.apply(entries[..3].to_vec()).await.unwrap();
    identity.node_id
}
