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
use crate::types::{Member, NodeId};

/// Turn the store in `data_dir` (whose node must be stopped: RocksDB's lock refuses otherwise)
/// into a one-member cluster of `member`.
pub fn recover(
    data_dir: &Path,
    cluster_id: &str,
    member: Member,
    journal_retention: u64,
) -> Result<Outcome, RestoreError> {
    roll_back_interrupted(data_dir)?;
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

/// How long a recovery request stays good: the node restarts within its shutdown grace, so a
/// request found later was left behind (a crash before the restart) and is not carried out.
pub const REQUEST_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// What the running node was when it asked to be recovered; the start that finds the request
/// carries it out only if the store is still that node, its log has not grown since (it did
/// not rejoin a working cluster in between), and the request is recent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Requested {
    pub node_id: NodeId,
    /// The last log index when asked.
    pub last_log_index: Option<u64>,
    pub at_unix_secs: u64,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.to_path_buf();
    move |source| RestoreError::Io {
        action,
        path,
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), RestoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))
}

/// Ask the next start of the node on `data_dir` to recover it; durable once this returns, and
/// nothing is left behind when it fails.
pub fn request(data_dir: &Path, requested: &Requested) -> Result<(), RestoreError> {
    let path = data_dir.join(REQUESTED);
    let temporary = data_dir.join(format!("{REQUESTED}.tmp"));
    let written = (|| {
        let bytes = serde_json::to_vec(requested).map_err(|e| RestoreError::Io {
            action: "encode",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&temporary, bytes).map_err(io_error("write", &temporary))?;
        std::fs::File::open(&temporary)
            .and_then(|f| f.sync_all())
            .map_err(io_error("sync", &temporary))?;
        std::fs::rename(&temporary, &path).map_err(io_error("rename", &temporary))?;
        sync_dir(data_dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
        let _ = std::fs::remove_file(&path);
    }
    written
}

/// Whether a recovery waits for the next start.
pub fn is_requested(data_dir: &Path) -> bool {
    data_dir.join(REQUESTED).exists()
}

/// What [`if_requested`] did.
#[derive(Debug)]
pub enum RequestOutcome {
    None,
    Recovered(Outcome),
    /// The request was stale and was dropped; why.
    Dropped(String),
}

/// At start, before the store opens: carry out a recovery requested through the admin API,
/// then drop the request. A stale request (another node's store, a log that grew since, older
/// than [`REQUEST_LIFETIME`], unreadable) is dropped instead. A start that stopped half-way
/// through a recovery finds the request still there and recovers again.
pub fn if_requested(
    data_dir: &Path,
    cluster_id: &str,
    member: Member,
    journal_retention: u64,
) -> Result<RequestOutcome, RestoreError> {
    let path = data_dir.join(REQUESTED);
    if !path.exists() {
        return Ok(RequestOutcome::None);
    }
    roll_back_interrupted(data_dir)?;
    let stale = match stale(data_dir, cluster_id, &path)? {
        Some(why) => Some(why),
        None => {
            let outcome = recover(data_dir, cluster_id, member, journal_retention)?;
            std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
            sync_dir(data_dir)?;
            return Ok(RequestOutcome::Recovered(outcome));
        }
    };
    std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
    sync_dir(data_dir)?;
    Ok(RequestOutcome::Dropped(stale.unwrap_or_default()))
}

/// Why the request at `path` must not be carried out, if it must not.
fn stale(data_dir: &Path, cluster_id: &str, path: &Path) -> Result<Option<String>, RestoreError> {
    let requested: Requested = match std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(r) => r,
        None => return Ok(Some("the request cannot be read".into())),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.saturating_sub(requested.at_unix_secs) > REQUEST_LIFETIME.as_secs() {
        return Ok(Some(format!(
            "it was made {} s ago, more than {} s: left behind, not carried out",
            now.saturating_sub(requested.at_unix_secs),
            REQUEST_LIFETIME.as_secs()
        )));
    }
    if !data_dir.join("rocksdb").exists() {
        return Ok(Some("there is no store to recover".into()));
    }
    let (db, identity) = Db::open(data_dir, cluster_id)?;
    if identity.node_id != requested.node_id {
        return Ok(Some(format!(
            "it was made by node {}, the store is node {}'s",
            requested.node_id, identity.node_id
        )));
    }
    let last = super::log::last_log_id(&db)?.map(|id| id.index);
    if last > requested.last_log_index {
        return Ok(Some(format!(
            "the log grew from {:?} to {last:?} since: the node is in touch with a cluster again",
            requested.last_log_index
        )));
    }
    Ok(None)
}

/// A recovery stopped between moving the survivor's store aside (`pre-recovery-<secs>/`) and
/// moving the recovered one in leaves no `rocksdb/`: put the survivor's store back (and drop a
/// `snapshots/` that came from the unfinished recovery), so that the recovery runs again from
/// it.
pub fn roll_back_interrupted(data_dir: &Path) -> Result<(), RestoreError> {
    if data_dir.join("rocksdb").exists() {
        return Ok(());
    }
    let newest = std::fs::read_dir(data_dir)
        .map_err(io_error("read", data_dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pre-recovery-"))
                && p.join("rocksdb").exists()
        })
        .max();
    let Some(aside) = newest else {
        return Ok(());
    };
    let snapshots = data_dir.join("snapshots");
    if snapshots.exists() {
        std::fs::remove_dir_all(&snapshots).map_err(io_error("remove", &snapshots))?;
    }
    for name in ["snapshots", "rocksdb"] {
        let from = aside.join(name);
        if from.exists() {
            std::fs::rename(&from, data_dir.join(name)).map_err(io_error("move back", &from))?;
        }
    }
    std::fs::remove_dir(&aside).map_err(io_error("remove", &aside))?;
    sync_dir(data_dir)?;
    tracing::warn!(
        from = %aside.display(),
        "an interrupted recovery left no store: the survivor's store was moved back"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{entry, member, survivor};
    use crate::store::state_machine::{JournalSlice, StateMachineStore};
    use crate::types::Entry;

    #[tokio::test]
    async fn a_survivor_keeps_what_it_applied_and_applies_every_entry_of_its_log_past_that() {
        let dir = tempfile::tempdir().unwrap();
        // All five in the log; only the first three applied (the other two may have been
        // committed by the lost majority, unknown to this member).
        survivor(dir.path()).await;
        let entries: Vec<Entry> = (1..=5).map(|i| entry(i, &format!("op-{i}"))).collect();
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

    fn now_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[tokio::test]
    async fn a_request_left_behind_is_dropped_not_carried_out() {
        let dir = tempfile::tempdir().unwrap();
        let me = survivor(dir.path()).await;
        let cases = [
            ("another node", me + 1, Some(5), now_secs()),
            ("the log grew", me, Some(4), now_secs()),
            (
                "too old",
                me,
                Some(5),
                now_secs() - REQUEST_LIFETIME.as_secs() - 1,
            ),
        ];
        for (case, node_id, last_log_index, at_unix_secs) in cases {
            let requested = Requested {
                node_id,
                last_log_index,
                at_unix_secs,
            };
            request(dir.path(), &requested).unwrap();
            let done = if_requested(dir.path(), "c", member(), 100).unwrap();
            assert!(
                matches!(done, RequestOutcome::Dropped(_)),
                "{case}: {done:?}"
            );
            assert!(!is_requested(dir.path()), "{case}: the request is gone");
            let (_, identity) = Db::open(dir.path(), "c").unwrap();
            assert_eq!(identity.node_id, me, "{case}: not recovered");
        }
        let requested = Requested {
            node_id: me,
            last_log_index: Some(5),
            at_unix_secs: now_secs(),
        };
        request(dir.path(), &requested).unwrap();
        let done = if_requested(dir.path(), "c", member(), 100).unwrap();
        assert!(matches!(done, RequestOutcome::Recovered(_)), "{done:?}");
        assert!(!is_requested(dir.path()));
    }

    #[tokio::test]
    async fn a_recovery_interrupted_after_moving_the_store_aside_runs_again_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let me = survivor(dir.path()).await;
        // What a crash between the two renames leaves: the store aside, a staged snapshot dir.
        let aside = dir.path().join("pre-recovery-1700000000");
        std::fs::create_dir_all(&aside).unwrap();
        std::fs::rename(dir.path().join("rocksdb"), aside.join("rocksdb")).unwrap();
        std::fs::create_dir_all(dir.path().join("snapshots")).unwrap();
        let outcome = recover(dir.path(), "c", member(), 100).unwrap();
        let Outcome::Restored {
            log_entries_applied,
            node_id,
            ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(log_entries_applied, 2, "the survivor's own log, moved back");
        assert_ne!(node_id, me);
        assert!(
            !aside.exists(),
            "moved back, then aside again under a new name"
        );
    }

    #[test]
    fn there_is_nothing_to_recover_without_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let err = recover(dir.path(), "c", member(), 100).unwrap_err();
        assert!(matches!(err, RestoreError::NoStore { .. }), "{err}");
        assert!(!dir.path().join("rocksdb").exists());
    }
}
