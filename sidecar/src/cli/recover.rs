//! `raft-sidecar recover`: bring a cluster that lost its majority for good back from one
//! stopped survivor (see `store::recover`). The survivor then runs as the only member of the
//! cluster; the others join it again on empty data dirs.

use clap::Args;

use super::run::Failure;
use crate::config;
use crate::store::recover;
use crate::store::restore::{Outcome, RestoreError};
use crate::types::Member;

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Required: recovery discards the other members, and the entries this node never
    /// received. Pass it once the majority is known to be lost for good.
    #[arg(long)]
    pub force: bool,
    /// `--journal-retention` of the node (its log entries past its snapshot are applied here).
    #[arg(long, env = "RAFT_JOURNAL_RETENTION", default_value_t = 100_000)]
    pub journal_retention: u64,
    /// The survivor, as `raft-sidecar run` is given it (stop it first).
    #[command(flatten)]
    pub member: config::MemberArgs,
}

pub async fn run(args: RecoverArgs) -> Result<(), Failure> {
    let member = args
        .member
        .resolve()
        .map_err(|e| Failure::Config(e.to_string()))?;
    if !args.force {
        return Err(Failure::Config(
            "recover makes this node the only member of its cluster, discarding the others and \
             every entry it never received: pass --force once the majority is lost for good"
                .into(),
        ));
    }
    let data_dir = member.data_dir.clone();
    let cluster = member.cluster_id.clone();
    let me = Member {
        name: member.name,
        peer_addr: member.advertise_peer,
        admin_addr: member.advertise_admin,
    };
    let retention = args.journal_retention;
    let (dir, id) = (data_dir.clone(), cluster.clone());
    let outcome = tokio::task::spawn_blocking(move || recover::recover(&dir, &id, me, retention))
        .await
        .map_err(|e| Failure::Runtime(format!("the recovery task failed: {e}")))?
        .map_err(|e| {
            let text = format!("recovery of {} failed: {e}", data_dir.display());
            match e {
                RestoreError::Store(_) | RestoreError::Io { .. } => Failure::Runtime(text),
                _ => Failure::Config(text),
            }
        })?;
    if let Outcome::Restored {
        node_id,
        from,
        journal_next_index,
        log_entries_applied,
        set_aside,
        ..
    } = outcome
    {
        println!(
            "recovered {}: node {node_id} is now the only member of cluster {cluster}, with every \
             entry up to log index {} ({log_entries_applied} of them applied from its log now); \
             the journal continues at {journal_next_index}; the old store is in {}; start it \
             with `raft-sidecar run` and add the other members on empty data dirs",
            data_dir.display(),
            from.last_log_id.index,
            set_aside.map_or_else(|| "-".into(), |p| p.display().to_string()),
        );
    }
    Ok(())
}
