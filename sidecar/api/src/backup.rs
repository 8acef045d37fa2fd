//! Backups: a snapshot image as `GET /admin/v1/snapshot` streams it, plus a manifest that says
//! what it holds and how to check it. Whoever stores a backup (`raft-sidecar ctl backup`, the
//! operator) writes the manifest; `raft-sidecar restore` checks the image against it.
//!
//! The download carries the manifest's facts in response headers ([`header`]); size and
//! SHA-256 are computed by the receiver over the bytes it actually got.

use serde::{Deserialize, Serialize};

/// `format` of every manifest this version writes and reads.
pub const MANIFEST_FORMAT: &str = "raft-sidecar-backup/v1";

/// File name suffix of a manifest stored beside its image (`backup.rsnp` →
/// `backup.rsnp.manifest.json`).
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// Response headers of `GET /admin/v1/snapshot`.
pub mod header {
    pub const SNAPSHOT_ID: &str = "x-raft-snapshot-id";
    pub const CLUSTER_ID: &str = "x-raft-cluster-id";
    pub const LAST_LOG_INDEX: &str = "x-raft-last-log-index";
    pub const LAST_LOG_TERM: &str = "x-raft-last-log-term";
    pub const JOURNAL_FIRST_INDEX: &str = "x-raft-journal-first-index";
    pub const JOURNAL_LAST_INDEX: &str = "x-raft-journal-last-index";
    pub const IMAGE_FORMAT: &str = "x-raft-image-format";
    pub const SIDECAR_VERSION: &str = "x-raft-sidecar-version";
    /// Request header of `POST /admin/v1/restore`: the backup's manifest as compact JSON.
    pub const MANIFEST: &str = "x-raft-backup-manifest";
}

/// What a backup holds. `journalLastIndex < journalFirstIndex` means the journal window was
/// empty; the journal of a cluster restored from it continues at `journalLastIndex + 1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The cluster the backup was taken from.
    pub cluster_id: String,
    pub snapshot_id: String,
    /// The last Raft log entry the image includes.
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub journal_first_index: u64,
    pub journal_last_index: u64,
    /// Size of the image in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the image, lowercase hex.
    pub sha256: String,
    /// When the image was downloaded (RFC 3339, UTC).
    pub created_at: String,
    /// Version of the raft-sidecar that served the image.
    pub sidecar_version: String,
    /// The image's own format version (the `RSNP` header's).
    pub image_format: u32,
}

impl BackupManifest {
    /// The manifest's path beside an image file.
    pub fn path_beside(image: &std::path::Path) -> std::path::PathBuf {
        let mut name = image.as_os_str().to_os_string();
        name.push(MANIFEST_SUFFIX);
        std::path::PathBuf::from(name)
    }
}

/// What `raft-sidecar ctl backup --json` prints, as its last line: the backup it stored and
/// the older ones it deleted. The operator reads it from the log of its backup Jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    /// The backup's name (its image's file or object name).
    pub name: String,
    /// Where it is (the directory or `s3://bucket/prefix`).
    pub location: String,
    pub manifest: BackupManifest,
    /// Backups deleted to keep `--keep` of them.
    #[serde(default)]
    pub deleted: Vec<String>,
}

/// What `raft-sidecar ctl restore --json` prints, as its last line: the backup it sent and
/// what the node made of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub name: String,
    pub location: String,
    pub manifest: BackupManifest,
    /// The node's answer; `None` when it had already staged this backup and was restarting
    /// onto it (an earlier request whose answer was lost).
    pub result: Option<crate::admin::RestoreResult>,
}
