//! The plugin's commands and what each asks of the API server. Output goes to `out` so tests and
//! callers choose where it lands.

use std::io::Write;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams, PostParams};
use raft_crds::RaftCluster;

use crate::logs::{PodLog, interleave};
use crate::status;

/// The sidecar container of every RaftCluster pod (the operator names it so).
const SIDECAR_CONTAINER: &str = "raft-sidecar";

#[derive(Debug, Parser)]
#[command(name = "kubectl-raft", bin_name = "kubectl raft", version, about)]
pub struct Cli {
    /// Namespace of the RaftCluster (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true, env = "KUBECTL_RAFT_NAMESPACE")]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summary, conditions and members of a RaftCluster: leader, term, step in flight.
    Status {
        /// The RaftCluster's name.
        name: String,
    },
    /// The members of a RaftCluster: node id, role, leader, health, matched index.
    Members {
        /// The RaftCluster's name.
        name: String,
    },
    /// The sidecar logs of every member, interleaved by time and prefixed with the pod.
    Logs {
        /// The RaftCluster's name.
        name: String,
        /// Only lines newer than this (e.g. 10m, 1h).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Only the last N lines of each member.
        #[arg(long)]
        tail: Option<i64>,
    },
    /// Backups of a RaftCluster (`spec.backup`).
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Create RaftCluster NAME from a backup of RaftCluster --from: the same spec, started from
    /// its newest backup (or --backup NAME) in the bucket of its `spec.backup`.
    Restore {
        /// The new RaftCluster's name.
        name: String,
        /// The RaftCluster whose backups to restore (it must still exist, with `spec.backup`).
        #[arg(long)]
        from: String,
        /// `latest`, or a backup's name as `kubectl raft status` shows it.
        #[arg(long, default_value = raft_crds::LATEST_BACKUP)]
        backup: String,
        /// Print the new RaftCluster (JSON, which `kubectl apply -f -` takes) instead of creating
        /// it.
        #[arg(long)]
        dry_run: bool,
    },
    /// After a permanent quorum loss: ask the operator to rebuild RaftCluster NAME from one
    /// survivor (sets `consensus.unrdf.io/recover-from`). Refused while a quorum answers or if
    /// another member holds a longer log; `kubectl raft status NAME` shows the answer.
    Recover {
        /// The RaftCluster's name.
        name: String,
        /// The surviving pod to keep (the one with the longest log: `kubectl raft members`).
        #[arg(long)]
        from: String,
    },
    /// A completion script for a shell (source it, e.g. `source <(kubectl raft completion bash)`).
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Ask the operator for a backup now (sets the `consensus.unrdf.io/backup-now` annotation);
    /// `kubectl raft status NAME` shows when it completed.
    Now {
        /// The RaftCluster's name.
        name: String,
    },
}

/// The annotation whose new value asks the operator for a backup.
const BACKUP_NOW_ANNOTATION: &str = "consensus.unrdf.io/backup-now";
/// The annotation whose new value asks the operator for a recovery from the pod it names.
const RECOVER_FROM_ANNOTATION: &str = "consensus.unrdf.io/recover-from";

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("raftcluster {name:?} not found in namespace {namespace:?}")]
    NotFound { name: String, namespace: String },
    #[error("raftcluster {name:?} has no spec.backup: there is nowhere to back it up to")]
    NoBackupSpec { name: String },
    #[error("no pods of raftcluster {name:?} in namespace {namespace:?}")]
    NoPods { name: String, namespace: String },
    #[error(transparent)]
    Restore(#[from] crate::restore::RestoreError),
    #[error("encoding the RaftCluster: {0}")]
    Encode(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Run one command, writing what it prints to `out` (warnings about single pods to stderr).
pub async fn run(cli: Cli, out: &mut impl Write) -> Result<(), PluginError> {
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "kubectl-raft", out);
        return Ok(());
    }
    let client = kube::Client::try_default().await?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    match cli.command {
        Command::Status { name } => {
            let rc = cluster(&client, &namespace, &name).await?;
            write!(out, "{}", status::render(&rc, Timestamp::now()))?;
        }
        Command::Members { name } => {
            let rc = cluster(&client, &namespace, &name).await?;
            let s = rc.status.unwrap_or_default();
            write!(out, "{}", status::members(&s))?;
        }
        Command::Logs { name, since, tail } => {
            for line in member_logs(&client, &namespace, &name, since, tail).await? {
                writeln!(out, "{line}")?;
            }
        }
        Command::Backup {
            command: BackupCommand::Now { name },
        } => {
            let rc = cluster(&client, &namespace, &name).await?;
            if rc.spec.backup.is_none() {
                return Err(PluginError::NoBackupSpec { name });
            }
            let value = Timestamp::now().as_millisecond().to_string();
            annotate(&client, &namespace, &name, BACKUP_NOW_ANNOTATION, &value).await?;
            writeln!(
                out,
                "asked for a backup of raftcluster {name} ({BACKUP_NOW_ANNOTATION}={value}); \
                 `kubectl raft status {name}` shows when it completed"
            )?;
        }
        Command::Restore {
            name,
            from,
            backup,
            dry_run,
        } => {
            let old = cluster(&client, &namespace, &from).await?;
            let new = crate::restore::new_cluster(&old, &name, &backup)?;
            if dry_run {
                let json = serde_json::to_string_pretty(&new)
                    .map_err(|e| PluginError::Encode(e.to_string()))?;
                writeln!(out, "{json}")?;
                return Ok(());
            }
            let api: Api<RaftCluster> = Api::namespaced(client.clone(), &namespace);
            api.create(&PostParams::default(), &new).await?;
            writeln!(
                out,
                "created raftcluster {name} from backup {backup} of {from}; `kubectl raft status \
                 {name}` shows the restore"
            )?;
        }
        Command::Recover { name, from } => {
            cluster(&client, &namespace, &name).await?;
            let value = format!("{from}@{}", Timestamp::now().as_millisecond());
            annotate(&client, &namespace, &name, RECOVER_FROM_ANNOTATION, &value).await?;
            writeln!(
                out,
                "asked for a recovery of raftcluster {name} from {from} \
                 ({RECOVER_FROM_ANNOTATION}={value}); `kubectl raft status {name}` shows whether \
                 it was accepted"
            )?;
        }
        Command::Completion { .. } => {}
    }
    Ok(())
}

/// Set one annotation of RaftCluster `name` (a request to the operator).
async fn annotate(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Result<(), PluginError> {
    let patch = serde_json::json!({ "metadata": { "annotations": { key: value } } });
    let api: Api<RaftCluster> = Api::namespaced(client.clone(), namespace);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn cluster(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<RaftCluster, PluginError> {
    let api: Api<RaftCluster> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await?
        .ok_or_else(|| PluginError::NotFound {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        })
}

async fn member_logs(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    since: Option<Duration>,
    tail: Option<i64>,
) -> Result<Vec<String>, PluginError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app.kubernetes.io/name=raft-cluster,app.kubernetes.io/instance={name}");
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    if list.items.is_empty() {
        return Err(PluginError::NoPods {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        });
    }
    let params = LogParams {
        container: Some(SIDECAR_CONTAINER.to_owned()),
        timestamps: true,
        since_seconds: since.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        tail_lines: tail,
        ..LogParams::default()
    };
    let mut logs = Vec::new();
    for pod in list.items {
        let Some(pod_name) = pod.metadata.name else {
            continue;
        };
        match pods.logs(&pod_name, &params).await {
            Ok(text) => logs.push(PodLog {
                pod: pod_name,
                text,
            }),
            // A pod that has no log yet (Pending) must not hide the others'.
            Err(e) => eprintln!("kubectl-raft: no log of {pod_name}: {e}"),
        }
    }
    Ok(interleave(&logs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[tokio::test]
    async fn a_bash_completion_script_names_every_command() {
        let cli = Cli::try_parse_from(["kubectl-raft", "completion", "bash"]).unwrap();
        let mut out = Vec::new();
        run(cli, &mut out).await.unwrap();
        let script = String::from_utf8(out).unwrap();
        for command in [
            "status",
            "members",
            "logs",
            "restore",
            "recover",
            "completion",
        ] {
            assert!(script.contains(command), "{command} missing");
        }
    }
}
