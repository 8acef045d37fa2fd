//! Recovery from a permanent quorum loss (`raft-sidecar recover`), like etcd's
//! `--force-new-cluster`: a stopped survivor's store becomes the only voter of a new
//! one-member cluster under the same cluster id, which other members then join.
//!
//! It keeps everything the survivor holds: its applied state, and every entry of its Raft log
//! past that, committed or not. The lost majority may have committed (and acknowledged) entries
//! this member had not yet applied, and nothing can tell which: all are applied. Entries the
//! survivor never received are lost; that is what the operator of the cluster accepts by
//! recovering. The survivor's own store is kept in `<data dir>/pre-recovery-<unix secs>/`.
//!
//! The work is [`super::restore`]'s, from an image of the survivor's applied state.
//!
//! A running node cannot recover itself (its store is open): `POST /admin/v1/recover` leaves a
//! request in the data dir ([`request`]) and restarts the node, whose next start carries it out
//! ([`if_requested`]) before the store opens.

use std::ops::Bound;
use std::path::Path;

use super::log::LogStore;
use super::restore::{self, Outcome, Recovery, Request, RestoreError};
use super::state_machine::AppliedState;
use super::state_machine::snapshots::SnapshotFiles;
use super::{Cf, Db, MetaKey};
use crate::types::Member;

/// Turn the store in `data_dir` (whose node must be stopped: RocksDB's lock refuses otherwise)
/// into a one-member cluster of `member`.
pub fn recover(
    data_dir: &Path,
    cluster_id: &str,
    member: Member,
    journal_retention: u64,
) -> Result<Outcome, RestoreError> {
    if !data_dir.join("rocksdb").exists() {
        return Err(RestoreError::NoStore {
            path: data_dir.to_path_buf(),
        });
    }
    let (image, pending) = {
        let (db, _) = Db::open(data_dir, cluster_id)?;
        let applied: AppliedState = db
            .get(Cf::Meta, MetaKey::Applied.key())?
            .unwrap_or_default();
        let from = applied.last_applied.map_or(0, |id| id.index + 1);
        let pending = LogStore::read_range(&db, from, Bound::Unbounded)?;
        // The image of what it applied; the snapshot sequence only names the file.
        let (_, image) = SnapshotFiles::open(&db)?.build(&db, u64::MAX)?;
        (image, pending)
    };
    let request = Request {
        data_dir,
        cluster_id,
        member,
        node_id: None,
        manifest: None,
        recovery: Some(Recovery {
            pending,
            journal_retention,
        }),
    };
    restore::restore(std::io::BufReader::new(image), &request)
}

/// The recovery request a running node leaves for its next start.
const REQUESTED: &str = ".recover-requested";

/// Ask the next start of the node on `data_dir` to recover it (durable once this returns).
pub fn request(data_dir: &Path) -> Result<(), RestoreError> {
    let path = data_dir.join(REQUESTED);
    let io = |action: &'static str| {
        let path = path.clone();
        move |source| RestoreError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::write(&path, b"recover\n").map_err(io("write"))?;
    std::fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(io("sync"))?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync"))
}

/// Whether a recovery waits for the next start.
pub fn is_requested(data_dir: &Path) -> bool {
    data_dir.join(REQUESTED).exists()
}

/// At start, before the store opens: carry out a requested recovery, then drop the request.
/// A start that stopped half-way recovers again (the store it left is a one-member cluster
/// already; recovering it changes nothing but its node id and keeps the earlier store aside).
pub fn if_requested(
    data_dir: &Path,
    cluster_id: &str,
    member: Member,
    journal_retention: u64,
) -> Result<Option<Outcome>, RestoreError> {
    if !is_requested(data_dir) {
        return Ok(None);
    }
    let outcome = recover(data_dir, cluster_id, member, journal_retention)?;
    let path = data_dir.join(REQUESTED);
    std::fs::remove_file(&path).map_err(|source| RestoreError::Io {
        action: "remove",
        path,
        source,
    })?;
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::journal::{Proposal, StoredOperation};
    use crate::store::index_key;
    use crate::store::state_machine::{JournalSlice, StateMachineStore};
    use crate::types::{Entry, LogId};

    fn entry(index: u64, id: &str) -> Entry {
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

    fn member() -> Member {
        Member {
            name: "survivor".into(),
            peer_addr: "127.0.0.1:1".into(),
            admin_addr: "127.0.0.1:2".into(),
        }
    }

    #[tokio::test]
    async fn a_survivor_keeps_what_it_applied_and_applies_every_entry_of_its_log_past_that() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, &format!("op-{i}"))).collect();
        {
            let (db, _) = Db::open(dir.path(), "c").unwrap();
            // All five in the log; only the first three applied (the other two may have been
            // committed by the lost majority, unknown to this member).
            let mut batch = rocksdb::WriteBatch::default();
            for e in &entries {
                db.put(&mut batch, Cf::Log, &index_key(e.log_id.index), e)
                    .unwrap();
            }
            db.write(batch, true).unwrap();
            let mut sm = StateMachineStore::open(db, 100).unwrap();
            sm.apply(entries[..3].to_vec()).await.unwrap();
        }
        let outcome = recover(dir.path(), "c", member(), 100).unwrap();
        let Outcome::Restored {
            node_id,
            from,
            log_entries_applied,
            journal_next_index,
            set_aside,
            ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!((log_entries_applied, journal_next_index), (2, 6));
        assert_eq!(from.last_log_id, entries[4].log_id);
        assert_eq!(from.kind, restore::RestoreKind::Recovery);
        assert!(set_aside.unwrap().join("rocksdb").exists());

        let (db, identity) = Db::open(dir.path(), "c").unwrap();
        assert_eq!(identity.node_id, node_id);
        let sm = StateMachineStore::open(db.clone(), 100).unwrap();
        let applied = sm.reader().applied();
        assert_eq!(applied.last_applied, Some(entries[4].log_id));
        let voters: Vec<u64> = applied.membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![node_id]);
        let JournalSlice::Records { records, .. } = sm.reader().page(None, 10).await.unwrap()
        else {
            panic!("compacted")
        };
        let ids: Vec<String> = records
            .iter()
            .map(|(_, r)| r.operation.id.clone())
            .collect();
        assert_eq!(ids, ["op-1", "op-2", "op-3", "op-4", "op-5"]);
        let log_left = db
            .raw()
            .iterator_cf(db.cf(Cf::Log).unwrap(), rocksdb::IteratorMode::Start)
            .count();
        assert_eq!(log_left, 0, "the new log starts after the recovered state");
    }

    #[test]
    fn there_is_nothing_to_recover_without_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let err = recover(dir.path(), "c", member(), 100).unwrap_err();
        assert!(matches!(err, RestoreError::NoStore { .. }), "{err}");
        assert!(!dir.path().join("rocksdb").exists());
    }
}
