//! The checkpoint: where the daemon stands in the journal, the state that executing the journal
//! up to there produced, and how far submitting has got, in one file replaced atomically.
//!
//! Exactly-once execution rests on one rule: **the position and the effect are made durable
//! together**. Here the effect is the digest itself, so one file holds both, and a crash leaves
//! either the old pair or the new one: a restart re-executes exactly the entries whose effect
//! was lost with the process, never one whose effect survived. A daemon whose effects live
//! elsewhere (a database, files) must store the applied index inside the same transaction as
//! the effect, or make each effect idempotent by journal index.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{ApplyState, parse_digest};

/// File name inside `--state-dir`.
pub const FILE_NAME: &str = "checkpoint.json";
const VERSION: u32 = 1;

/// How far submitting has got. Saved with the apply state so that a restart resumes the
/// submit sequence instead of starting over; an operation that was in flight at a crash is
/// submitted again under the same id, which the sidecar answers as a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitProgress {
    /// Number of the next operation to submit (1-based); `next - 1` have been settled.
    pub next: u64,
    /// Operations the sidecar answered as committed (including duplicates).
    pub acknowledged: u64,
    /// Operations given up on (deadline passed or refused for good).
    pub failed: u64,
}

impl SubmitProgress {
    pub fn start() -> Self {
        Self {
            next: 1,
            acknowledged: 0,
            failed: 0,
        }
    }
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    pub version: u32,
    pub daemon_id: String,
    pub applied_index: u64,
    pub executed: u64,
    /// 16 hex digits (a JSON number would lose bits in most JSON tools).
    pub digest: String,
    pub counter: i64,
    pub resyncs: u64,
    pub submit: SubmitProgress,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {path} is unreadable ({reason}); refusing to start from scratch, which \
         would execute the journal a second time: inspect or delete it"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint writer task failed: {0}")]
    Task(String),
}

impl Checkpoint {
    pub fn new(daemon_id: &str, apply: &ApplyState, submit: SubmitProgress) -> Self {
        Self {
            version: VERSION,
            daemon_id: daemon_id.to_string(),
            applied_index: apply.applied_index,
            executed: apply.executed,
            digest: apply.digest_hex(),
            counter: apply.counter,
            resyncs: apply.resyncs,
            submit,
        }
    }

    /// The apply state this checkpoint recorded, or why it cannot be used.
    pub fn apply_state(&self) -> Result<ApplyState, String> {
        if self.version != VERSION {
            return Err(format!(
                "version {} (this daemon writes {VERSION})",
                self.version
            ));
        }
        let digest = parse_digest(&self.digest)
            .ok_or_else(|| format!("digest {:?} is not 16 hex digits", self.digest))?;
        Ok(ApplyState {
            applied_index: self.applied_index,
            executed: self.executed,
            digest,
            counter: self.counter,
            resyncs: self.resyncs,
        })
    }
}

/// The checkpoint file in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Read the checkpoint at `path`: `None` when there is none yet (first start). A file that
/// exists but does not parse is an error, never "no checkpoint".
pub fn load(path: &Path) -> Result<Option<(Checkpoint, ApplyState)>, CheckpointError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    let apply = cp.apply_state().map_err(corrupt)?;
    Ok(Some((cp, apply)))
}

/// Replace the checkpoint at `path` atomically: write a temporary file beside it, fsync it,
/// rename it over the old one, fsync the directory. A crash at any point leaves the old
/// checkpoint or the new one, never a torn mix (rename is atomic within a file system, and the
/// directory fsync makes the rename itself durable).
pub fn store(path: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let err = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(cp).map_err(|e| err(std::io::Error::other(e)))?;
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(err)?;
        file.write_all(&text).map_err(err)?;
        file.sync_all().map_err(err)?;
    }
    fs::rename(&tmp, path).map_err(err)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

/// Serialises checkpoint writes from the daemon's tasks. The snapshot is taken while holding
/// the lock, so a later snapshot never lands before an earlier one.
#[derive(Debug)]
pub struct Checkpointer {
    path: Option<PathBuf>,
    lock: tokio::sync::Mutex<()>,
}

impl Checkpointer {
    /// `dir`: `--state-dir`; without one, [`Checkpointer::save`] does nothing.
    pub fn new(dir: Option<&Path>) -> Self {
        Self {
            path: dir.map(path_in),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Write the checkpoint `snapshot` returns. The file system work runs on the blocking
    /// pool; it has no deadline of its own because a hung disk cannot be cancelled anyway.
    pub async fn save(&self, snapshot: impl FnOnce() -> Checkpoint) -> Result<(), CheckpointError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let _guard = self.lock.lock().await;
        let cp = snapshot();
        tokio::task::spawn_blocking(move || store(&path, &cp))
            .await
            .map_err(|e| CheckpointError::Task(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (ApplyState, Checkpoint) {
        let apply = ApplyState {
            applied_index: 42,
            executed: 40,
            digest: 0x0123_4567_89ab_cdef,
            counter: -3,
            resyncs: 1,
        };
        let submit = SubmitProgress {
            next: 8,
            acknowledged: 6,
            failed: 1,
        };
        (apply, Checkpoint::new("d-0", &apply, submit))
    }

    #[test]
    fn a_missing_checkpoint_is_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&path_in(dir.path())).unwrap().is_none());
    }

    #[test]
    fn store_then_load_round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(&dir.path().join("nested"));
        let (apply, cp) = sample();
        store(&path, &cp).unwrap();
        let (loaded, loaded_apply) = load(&path).unwrap().unwrap();
        assert_eq!(loaded, cp);
        assert_eq!(loaded_apply, apply);
        // Overwrite: the new content replaces the old one whole.
        let mut next = cp.clone();
        next.applied_index = 43;
        store(&path, &next).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().0.applied_index, 43);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn a_damaged_checkpoint_is_refused_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        for text in [
            "{\"version\":1,".to_string(),
            "[]".to_string(),
            serde_json::to_string(&Checkpoint {
                digest: "not-hex".into(),
                ..sample().1
            })
            .unwrap(),
            serde_json::to_string(&Checkpoint {
                version: 99,
                ..sample().1
            })
            .unwrap(),
        ] {
            fs::write(&path, &text).unwrap();
            let err = load(&path).unwrap_err();
            assert!(
                matches!(err, CheckpointError::Corrupt { .. }),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn a_stale_temporary_from_a_crash_is_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let (_, cp) = sample();
        store(&path, &cp).unwrap();
        // A crash between writing the temporary and renaming it leaves a torn temporary.
        fs::write(path.with_extension("json.tmp"), "{\"vers").unwrap();
        assert_eq!(load(&path).unwrap().unwrap().0, cp);
        store(&path, &cp).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().0, cp);
    }

    #[tokio::test]
    async fn the_checkpointer_writes_only_with_a_state_dir() {
        let (_, cp) = sample();
        Checkpointer::new(None).save(|| cp.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let saver = Checkpointer::new(Some(dir.path()));
        saver.save(|| cp.clone()).await.unwrap();
        assert_eq!(load(saver.path().unwrap()).unwrap().unwrap().0, cp);
    }
}
