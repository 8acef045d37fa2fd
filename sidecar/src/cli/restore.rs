//! `raft-sidecar restore`: a data dir from a backup (an image written by `ctl backup` and its
//! manifest beside it), for clusters run without Kubernetes and for init containers. The node
//! then runs as the only member of a new cluster; the others join it as learners and are
//! promoted (`ctl add-learner`, `ctl promote`), receiving the restored state as a snapshot.

use std::path::PathBuf;

use clap::Args;
use raft_api::backup::BackupManifest;

use super::run::Failure;
use crate::config;
use crate::store::restore::{self, Outcome, Request, RestoreError};
use crate::types::Member;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup image (`raft-sidecar ctl backup FILE`). Its manifest, FILE.manifest.json, is
    /// checked too (size, SHA-256, log and journal positions) unless --no-manifest.
    #[arg(long, env = "RAFT_RESTORE_FROM")]
    pub from: PathBuf,
    /// Restore an image that has no manifest: only the image's own checksum is checked.
    #[arg(long, env = "RAFT_RESTORE_NO_MANIFEST")]
    pub no_manifest: bool,
    /// The member the node will run as (the same flags and variables as `run`; --data-dir
    /// must not hold a store yet).
    #[command(flatten)]
    pub member: config::MemberArgs,
}

pub fn run(args: RestoreArgs) -> Result<(), Failure> {
    let member = args
        .member
        .resolve()
        .map_err(|e| Failure::Config(e.to_string()))?;
    let manifest = if args.no_manifest {
        None
    } else {
        Some(read_manifest(&args.from)?)
    };
    let image = std::fs::File::open(&args.from)
        .map_err(|e| Failure::Config(format!("cannot open backup {}: {e}", args.from.display())))?;
    let request = Request {
        data_dir: &member.data_dir,
        cluster_id: &member.cluster_id,
        member: Member {
            name: member.name.clone(),
            peer_addr: member.advertise_peer.clone(),
            admin_addr: member.advertise_admin.clone(),
        },
        manifest: manifest.as_ref(),
    };
    let outcome = restore::restore(std::io::BufReader::new(image), &request).map_err(|e| {
        let text = format!("restore from {} failed: {e}", args.from.display());
        match e {
            RestoreError::Store(_) | RestoreError::Io { .. } => Failure::Runtime(text),
            _ => Failure::Config(text),
        }
    })?;
    match outcome {
        Outcome::Restored {
            node_id,
            from,
            journal_first_index,
            journal_next_index,
            journal_records,
            dedupe_records,
            size_bytes,
        } => println!(
            "restored {} ({size_bytes} bytes, snapshot {} at log index {}) into {}: node {node_id} \
             of cluster {}, journal {journal_first_index}..{journal_next_index} \
             ({journal_records} records), {dedupe_records} dedupe records; start it with \
             `raft-sidecar run` and add the other members to it",
            args.from.display(),
            from.snapshot_id,
            from.last_log_id.index,
            member.data_dir.display(),
            member.cluster_id,
        ),
        Outcome::AlreadyRestored { node_id, from } => println!(
            "{} already holds node {node_id} restored from snapshot {}: nothing to do",
            member.data_dir.display(),
            from.snapshot_id
        ),
    }
    Ok(())
}

fn read_manifest(image: &std::path::Path) -> Result<BackupManifest, Failure> {
    let path = BackupManifest::path_beside(image);
    let text = std::fs::read(&path).map_err(|e| {
        Failure::Config(format!(
            "cannot read the backup's manifest {}: {e} (pass --no-manifest to restore an image \
             without one, checking only its own checksum)",
            path.display()
        ))
    })?;
    let manifest: BackupManifest = serde_json::from_slice(&text)
        .map_err(|e| Failure::Config(format!("manifest {} is not valid: {e}", path.display())))?;
    if manifest.format != raft_api::backup::MANIFEST_FORMAT {
        return Err(Failure::Config(format!(
            "manifest {} has format {:?}; this raft-sidecar reads {:?}",
            path.display(),
            manifest.format,
            raft_api::backup::MANIFEST_FORMAT
        )));
    }
    Ok(manifest)
}
