//! `raft-sidecar restore`: a data dir from a backup written by `ctl backup` (an image and its
//! manifest, in a directory or an S3-compatible bucket), for clusters run without Kubernetes
//! and for init containers. The node
//! then runs as the only member of a new cluster; the others join it as learners and are
//! promoted (`ctl add-learner`, `ctl promote`), receiving the restored state as a snapshot.

use clap::Args;

use super::run::Failure;
use crate::config;
use crate::store::restore::{self, Outcome, Request, RestoreError};
use crate::types::Member;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup: a file (`ctl backup FILE`), `s3://bucket/prefix/NAME.rsnp`, or a directory
    /// or `s3://bucket/prefix` for the newest backup there. Its manifest (NAME.manifest.json)
    /// is checked too (size, SHA-256, log and journal positions) unless --no-manifest.
    #[arg(long, env = "RAFT_RESTORE_FROM")]
    pub from: String,
    /// Restore an image that has no manifest: only the image's own checksum is checked.
    #[arg(long, env = "RAFT_RESTORE_NO_MANIFEST")]
    pub no_manifest: bool,
    /// The member the node will run as (the same flags and variables as `run`; --data-dir
    /// must not hold a store yet).
    #[command(flatten)]
    pub member: config::MemberArgs,
}

pub async fn run(args: RestoreArgs) -> Result<(), Failure> {
    let member = args
        .member
        .resolve()
        .map_err(|e| Failure::Config(e.to_string()))?;
    let (member_dir, cluster) = (member.data_dir.clone(), member.cluster_id.clone());
    // A backup is read, never made: a local path that is not there is a typo, and opening it
    // as a location would create its directory.
    if !args.from.starts_with("s3://") && !std::path::Path::new(&args.from).exists() {
        return Err(Failure::Config(format!(
            "no backup at {}: no such file or directory",
            args.from
        )));
    }
    let (store, name) = raft_backup::source(&args.from).map_err(not_found)?;
    let name = match name {
        Some(name) => name,
        None => store.latest().await.map_err(not_found)?.name,
    };
    let manifest = if args.no_manifest {
        None
    } else {
        Some(store.manifest(&name).await.map_err(|e| {
            Failure::Config(format!(
                "{e} (pass --no-manifest to restore an image without one, checking only its own \
                 checksum)"
            ))
        })?)
    };
    if let Some(m) = &manifest
        && m.format != raft_api::backup::MANIFEST_FORMAT
    {
        return Err(Failure::Config(format!(
            "the manifest of {name} has format {:?}; this raft-sidecar reads {:?}",
            m.format,
            raft_api::backup::MANIFEST_FORMAT
        )));
    }
    let image = store.open_image(&name).await.map_err(not_found)?;
    let member = Member {
        name: member.name,
        peer_addr: member.advertise_peer,
        admin_addr: member.advertise_admin,
    };
    let (data_dir, cluster_id) = (member_dir.clone(), cluster.clone());
    let outcome = tokio::task::spawn_blocking(move || {
        let request = Request {
            data_dir: &data_dir,
            cluster_id: &cluster_id,
            member,
            manifest: manifest.as_ref(),
            node_id: None,
            recovery: None,
        };
        let image = tokio_util::io::SyncIoBridge::new(image);
        restore::restore(
            std::io::BufReader::with_capacity(256 << 10, image),
            &request,
        )
    })
    .await
    .map_err(|e| Failure::Runtime(format!("the restore task failed: {e}")))?
    .map_err(|e| {
        let text = format!("restore from {} failed: {e}", args.from);
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
            ..
        } => println!(
            "restored {name} from {} ({size_bytes} bytes, snapshot {} at log index {}) into {}: \
             node {node_id} of cluster {}, journal {journal_first_index}..{journal_next_index} \
             ({journal_records} records), {dedupe_records} dedupe records; start it with \
             `raft-sidecar run` and add the other members to it",
            store.location(),
            from.snapshot_id,
            from.last_log_id.index,
            member_dir.display(),
            cluster,
        ),
        Outcome::AlreadyRestored {
            node_id,
            from,
            same_image,
        } => println!(
            "{} already holds node {node_id} restored from snapshot {}{}: nothing to do (a \
             restore happens once)",
            member_dir.display(),
            from.snapshot_id,
            if same_image {
                String::new()
            } else {
                format!(", not from {name}")
            }
        ),
    }
    Ok(())
}

/// The backup could not be found or read: a wrong `--from` (exit 64).
fn not_found(e: raft_backup::BackupError) -> Failure {
    Failure::Config(e.to_string())
}
