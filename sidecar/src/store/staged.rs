//! A restore staged by the admin API (`POST /admin/v1/restore`) on a running node that is not
//! a member of any cluster yet, and adopted at its next start.
//!
//! A running node holds its store open, so a restore cannot replace it in place. [`stage`]
//! restores the image into `<data dir>/.restore-pending/` (a complete data dir, checked as
//! `raft-sidecar restore` checks it); the node then stops, and [`adopt`], run before the store
//! opens, swaps the staged store in, but only over a store that is still blank (no vote, no
//! log, nothing applied: the node did not join a cluster in between). The blank store it
//! replaces is kept under `pre-restore-<unix secs>/`.
//!
//! Every step can be interrupted and run again: a staging that did not finish has no `STAGED`
//! mark in the pending dir and is discarded; an adoption that stopped half-way finds the
//! staged parts still to move and moves them.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::restore::{self, Outcome, Request, RestoreError};
use super::{Db, MetaKey};
use crate::store::Cf;
use crate::store::applied::AppliedState;
use crate::types::Vote;

/// The staged data dir, inside the node's data dir.
const PENDING: &str = ".restore-pending";
/// Written into the pending dir once the staged store is complete.
const STAGED: &str = "STAGED";

fn pending_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(PENDING)
}

/// Whether a complete restore waits in `data_dir` for the next start.
pub fn is_staged(data_dir: &Path) -> bool {
    pending_dir(data_dir).join(STAGED).exists()
}

/// Restore the image read from `input` into the pending dir of `req.data_dir` (whose own
/// store is left alone). Refused when a restore is staged already.
pub fn stage(input: impl Read, req: &Request<'_>) -> Result<Outcome, RestoreError> {
    let pending = pending_dir(req.data_dir);
    if is_staged(req.data_dir) {
        return Err(RestoreError::NotEmpty {
            path: pending,
            detail: " staged by an earlier restore request (it is adopted when the node \
                     restarts)"
                .into(),
        });
    }
    if pending.exists() {
        fs::remove_dir_all(&pending).map_err(io_error("clear", &pending))?;
    }
    fs::create_dir_all(&pending).map_err(io_error("create", &pending))?;
    let staged = Request {
        data_dir: &pending,
        ..req.clone()
    };
    let outcome = restore::restore(input, &staged).and_then(|outcome| {
        let mark = pending.join(STAGED);
        fs::write(&mark, b"staged\n")
            .and_then(|()| fs::File::open(&mark)?.sync_all())
            .and_then(|()| fs::File::open(&pending)?.sync_all())
            .map_err(io_error("mark", &mark))?;
        Ok(outcome)
    });
    if outcome.is_err() {
        let _ = fs::remove_dir_all(&pending);
    }
    outcome
}

/// What [`adopt`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Adopted {
    /// No restore was staged.
    Nothing,
    /// The staged store is now the node's; the blank one it replaced was kept here.
    Restored { set_aside: Option<PathBuf> },
    /// The node's store is no longer blank (it joined a cluster after the restore was
    /// staged): the staged restore was moved here and not used.
    Refused { moved_to: PathBuf },
}

/// Before the store opens: swap a staged restore in over a blank store.
pub fn adopt(data_dir: &Path, cluster_id: &str) -> Result<Adopted, RestoreError> {
    let pending = pending_dir(data_dir);
    if !pending.exists() {
        return Ok(Adopted::Nothing);
    }
    if !pending.join(STAGED).exists() {
        // A staging that never finished.
        fs::remove_dir_all(&pending).map_err(io_error("discard", &pending))?;
        return Ok(Adopted::Nothing);
    }
    let staged_db = pending.join("rocksdb");
    let staged_snapshots = pending.join("snapshots");
    if !staged_db.exists() {
        // The store moved in already: an adoption that stopped before removing the pending dir.
        fs::remove_dir_all(&pending).map_err(io_error("remove", &pending))?;
        return Ok(Adopted::Restored { set_aside: None });
    }
    let secs = unix_secs();
    let current = data_dir.join("rocksdb");
    let mut set_aside = None;
    if current.exists() {
        if !is_blank(data_dir, cluster_id)? {
            let moved_to = data_dir.join(format!("restore-refused-{secs}"));
            fs::rename(&pending, &moved_to).map_err(io_error("move aside", &pending))?;
            return Ok(Adopted::Refused { moved_to });
        }
        let aside = data_dir.join(format!("pre-restore-{secs}"));
        fs::create_dir_all(&aside).map_err(io_error("create", &aside))?;
        for name in ["rocksdb", "snapshots"] {
            let from = data_dir.join(name);
            if from.exists() {
                fs::rename(&from, aside.join(name)).map_err(io_error("move aside", &from))?;
            }
        }
        set_aside = Some(aside);
    }
    if staged_snapshots.exists() {
        let to = data_dir.join("snapshots");
        if to.exists() {
            let orphaned = data_dir.join(format!("snapshots.orphaned-{secs}"));
            fs::rename(&to, &orphaned).map_err(io_error("move aside", &to))?;
        }
        fs::rename(&staged_snapshots, &to).map_err(io_error("move into place", &to))?;
    }
    fs::rename(&staged_db, &current).map_err(io_error("move into place", &staged_db))?;
    fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", data_dir))?;
    fs::remove_dir_all(&pending).map_err(io_error("remove", &pending))?;
    Ok(Adopted::Restored { set_aside })
}

/// No vote, no log entry, nothing applied: a node that never took part in a cluster.
fn is_blank(data_dir: &Path, cluster_id: &str) -> Result<bool, RestoreError> {
    let (db, _) = Db::open(data_dir, cluster_id)?;
    let vote: Option<Vote> = db.get(Cf::Meta, MetaKey::Vote.key())?;
    let applied: Option<AppliedState> = db.get(Cf::Meta, MetaKey::Applied.key())?;
    let log = super::log::last_log_id(&db)?;
    Ok(vote.is_none_or(|v| v.leader_id().term == 0)
        && applied.is_none_or(|a| a.last_applied.is_none())
        && log.is_none())
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RestoreError + 'a {
    move |source| RestoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    //! Staging and adoption, including the states an interrupted adoption leaves.

    use super::*;
    use crate::store::fixtures::{member, survivor};
    use crate::store::state_machine::snapshots::SnapshotFiles;

    /// An image of a store with three applied entries.
    async fn image(scratch: &Path) -> Vec<u8> {
        let source = scratch.join("source");
        survivor(&source).await;
        let (db, _) = Db::open(&source, "c").unwrap();
        let (_, mut file) = SnapshotFiles::open(&db).unwrap().build(&db, 1).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).unwrap();
        bytes
    }

    /// A running node's data dir: a blank store of cluster `new`; its node id.
    fn blank(data: &Path) -> u64 {
        std::fs::create_dir_all(data).unwrap();
        Db::open(data, "new").unwrap().1.node_id
    }

    fn stage_into(data: &Path, node_id: u64, image: &[u8]) {
        let request = Request {
            data_dir: data,
            cluster_id: "new",
            member: member(),
            node_id: Some(node_id),
            manifest: None,
            recovery: None,
        };
        stage(image, &request).unwrap();
        assert!(is_staged(data));
    }

    fn restored_node(data: &Path) -> u64 {
        let (db, identity) = Db::open(data, "new").unwrap();
        let from: Option<restore::RestoredFrom> =
            db.get(Cf::Meta, MetaKey::RestoredFrom.key()).unwrap();
        assert!(from.is_some(), "the store in place is the restored one");
        identity.node_id
    }

    #[tokio::test]
    async fn a_staged_restore_replaces_a_blank_store_keeping_its_node_id() {
        let scratch = tempfile::tempdir().unwrap();
        let image = image(scratch.path()).await;
        let data = scratch.path().join("data");
        let me = blank(&data);
        stage_into(&data, me, &image);
        let adopted = adopt(&data, "new").unwrap();
        let Adopted::Restored { set_aside } = adopted else {
            panic!("{adopted:?}")
        };
        assert!(
            set_aside.unwrap().join("rocksdb").exists(),
            "the blank store is kept"
        );
        assert_eq!(restored_node(&data), me);
        assert!(!pending_dir(&data).exists());
        assert_eq!(adopt(&data, "new").unwrap(), Adopted::Nothing);
    }

    #[tokio::test]
    async fn an_adoption_interrupted_at_any_step_finishes_at_the_next_start() {
        let scratch = tempfile::tempdir().unwrap();
        let image = image(scratch.path()).await;
        // Stopped after moving the blank store aside; after moving the snapshots in; after
        // moving the store in but before removing the pending dir.
        for stopped_after in 1..=3 {
            let data = scratch.path().join(format!("data-{stopped_after}"));
            let me = blank(&data);
            stage_into(&data, me, &image);
            let pending = pending_dir(&data);
            let aside = data.join("pre-restore-1");
            std::fs::create_dir_all(&aside).unwrap();
            std::fs::rename(data.join("rocksdb"), aside.join("rocksdb")).unwrap();
            if stopped_after >= 2 {
                std::fs::rename(pending.join("snapshots"), data.join("snapshots")).unwrap();
            }
            if stopped_after >= 3 {
                std::fs::rename(pending.join("rocksdb"), data.join("rocksdb")).unwrap();
            }
            let adopted = adopt(&data, "new").unwrap();
            assert!(
                matches!(adopted, Adopted::Restored { .. }),
                "stopped after step {stopped_after}: {adopted:?}"
            );
            assert_eq!(
                restored_node(&data),
                me,
                "stopped after step {stopped_after}"
            );
            assert!(!pending.exists());
        }
    }

    #[tokio::test]
    async fn an_unfinished_staging_is_discarded_and_a_member_is_never_restored_over() {
        let scratch = tempfile::tempdir().unwrap();
        let image = image(scratch.path()).await;
        let data = scratch.path().join("data");
        let me = blank(&data);
        // A staging killed half-way: no STAGED mark.
        std::fs::create_dir_all(pending_dir(&data).join(".restoring")).unwrap();
        assert!(!is_staged(&data));
        assert_eq!(adopt(&data, "new").unwrap(), Adopted::Nothing);
        assert!(!pending_dir(&data).exists());

        // Staged, then the node voted in a cluster before it restarted.
        stage_into(&data, me, &image);
        {
            let (db, _) = Db::open(&data, "new").unwrap();
            let mut batch = rocksdb::WriteBatch::default();
            db.put(
                &mut batch,
                Cf::Meta,
                MetaKey::Vote.key(),
                &crate::types::Vote::new(3, 99),
            )
            .unwrap();
            db.write(batch, true).unwrap();
        }
        let adopted = adopt(&data, "new").unwrap();
        let Adopted::Refused { moved_to } = adopted else {
            panic!("{adopted:?}")
        };
        assert!(moved_to.join("rocksdb").exists());
        let (db, identity) = Db::open(&data, "new").unwrap();
        let from: Option<restore::RestoredFrom> =
            db.get(Cf::Meta, MetaKey::RestoredFrom.key()).unwrap();
        assert_eq!(
            (identity.node_id, from),
            (me, None),
            "the member's own store stays"
        );
    }
}
