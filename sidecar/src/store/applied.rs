//! What the state machine has applied, as stored under [`MetaKey::Applied`](super::MetaKey)
//! in every apply batch: the last applied log id, the committed membership, the journal's
//! bounds. Read at open, by snapshots and by the log store's committed-id check.

use rocksdb::{DB, SnapshotWithThreadMode};
use serde::{Deserialize, Serialize};

use super::{Cf, Db, MetaKey, StoreError};
use crate::journal::JournalState;
use crate::types::{LogId, StoredMembership};

/// What the state machine has applied; stored under [`MetaKey::Applied`] in every apply batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub journal: JournalState,
}

impl AppliedState {
    /// The applied state as of `view`, a RocksDB snapshot of `db` (default when none is stored
    /// yet), so what is read next from the same view agrees with it.
    pub fn read_in(db: &Db, view: &SnapshotWithThreadMode<'_, DB>) -> Result<Self, StoreError> {
        match view
            .get_cf(db.cf(Cf::Meta)?, MetaKey::Applied.key())
            .map_err(db.rocks_err("read applied state"))?
        {
            Some(bytes) => db.decode(Cf::Meta, MetaKey::Applied.key(), &bytes),
            None => Ok(AppliedState::default()),
        }
    }
}
