//! `raft-sidecar ctl`: a command-line client for one sidecar, like etcdctl. Prints JSON answers;
//! an error answer is printed to stderr and exits 1.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use futures_util::StreamExt;
use raft_api::ErrorCode;
use raft_api::admin::{MemberSpec, SettingsUpdate};
use raft_api::backup::{BackupReport, RestoreReport};
use raft_api::client::{ClientError, ClientTls, SidecarClient, TlsHttp};
use raft_api::daemon::{Consistency, Operation};

use super::run::Failure;

#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// Daemon API of the sidecar.
    #[arg(long, env = "RAFT_API", default_value = "127.0.0.1:7080")]
    pub api: String,
    /// Admin API of the sidecar.
    #[arg(long, env = "RAFT_ADMIN", default_value = "127.0.0.1:7090")]
    pub admin: String,
    /// File holding the admin token (default: `raft-dev/token` when present).
    #[arg(long, env = "RAFT_AUTH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Client certificate for the admin API's mutual TLS (default: `raft-dev/tls/raft-admin/`
    /// when present; without one the admin API is called in plain text).
    #[arg(long, env = "RAFT_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Key of --tls-cert.
    #[arg(long, env = "RAFT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA bundle.
    #[arg(long, env = "RAFT_TLS_CA", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Deadline of each request.
    #[arg(long, env = "RAFT_CTL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// `state`, `get` and `log` read with `?consistency=linearizable`: they reflect every write
    /// acknowledged before them, on any node.
    #[arg(long)]
    pub linearizable: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Consensus state of the node (`GET /v1/state`).
    State,
    /// Submit an operation.
    Submit {
        #[arg(long)]
        id: String,
        #[arg(long = "type")]
        op_type: String,
        /// JSON payload.
        #[arg(long)]
        payload: Option<String>,
    },
    /// Submit several operations in one request (`POST /v1/operations:batch`): a JSON array of
    /// operations from a file, or `-` for standard input. Prints one result per operation.
    Batch {
        #[arg(long)]
        file: PathBuf,
    },
    /// Status of one operation.
    Get { id: String },
    /// Read the journal.
    Log {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Follow the journal (Ctrl-C to stop).
    Watch {
        #[arg(long)]
        from: Option<u64>,
    },
    /// The cluster's replicated settings; with `--dedupe-window`, change the window (on the
    /// leader).
    Settings {
        #[arg(long, value_parser = humantime::parse_duration)]
        dedupe_window: Option<Duration>,
    },
    /// Membership from the leader's view.
    Members,
    /// Add a learner (on the leader).
    AddLearner {
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        name: String,
        /// Peer address `host:port`.
        #[arg(long)]
        address: String,
        #[arg(long)]
        admin_address: Option<String>,
    },
    /// Promote a caught-up learner to voter.
    Promote { node_id: u64 },
    /// Gracefully remove a member.
    Remove { node_id: u64 },
    /// Hand leadership to another voter (point `--admin` at the leader).
    TransferLeadership {
        /// The voter to lead next; by default the most caught-up one that is up.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Build a snapshot and compact now.
    Snapshot,
    /// Back the cluster up: build a snapshot now (point `--admin` at the leader for the newest
    /// state), then stream it, with its manifest, to TARGET: a file (manifest in
    /// FILE.manifest.json), a directory or `s3://bucket/prefix` (under a name from the time).
    Backup {
        target: String,
        /// Download the node's current snapshot as it is, without building one first.
        #[arg(long)]
        no_build: bool,
        /// Then keep only the newest N backups at TARGET's location.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        keep: Option<u64>,
        /// Print the result as one line of JSON (the backup, its manifest, what was deleted).
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into the node at `--admin`, which must be blank (never initialized,
    /// never joined): it checks the image against the manifest, stages it and restarts onto it
    /// as the only member of its cluster. SOURCE is as for `raft-sidecar restore --from`: a
    /// backup file, a directory or `s3://bucket/prefix` (their newest backup) or
    /// `s3://bucket/prefix/NAME`.
    Restore {
        source: String,
        /// The backup to restore from SOURCE's location, by name; default the newest.
        #[arg(long)]
        backup: Option<String>,
        /// Deadline of the whole upload (the image can be large).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        deadline: Duration,
        /// Print the result as one line of JSON (the backup, its manifest, the node's answer).
        #[arg(long)]
        json: bool,
    },
    /// Node status (`GET /admin/v1/status`).
    Status,
}

fn print(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// One line of JSON, for scripts that read the last line of the output.
fn print_line(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

fn failed(e: ClientError) -> Failure {
    Failure::Runtime(e.to_string())
}

pub async fn run(args: CtlArgs) -> Result<(), Failure> {
    let token_file = args.token_file.clone().or_else(|| {
        let dev = PathBuf::from("raft-dev/token");
        dev.exists().then_some(dev)
    });
    let token = match token_file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    Failure::Config(format!("cannot read token file {}: {e}", path.display()))
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let mut client = SidecarClient::new(Some(&args.api), Some(&args.admin), token, args.timeout);
    if let Some(tls) = client_tls(&args)? {
        client = client.with_tls(&tls);
    }
    let consistency = if args.linearizable {
        Consistency::Linearizable
    } else {
        Consistency::Local
    };
    match args.command {
        CtlCommand::State => print(&client.state_read(consistency).await.map_err(failed)?),
        CtlCommand::Status => print(&client.status().await.map_err(failed)?),
        CtlCommand::Submit {
            id,
            op_type,
            payload,
        } => {
            let payload = match payload {
                Some(p) => Some(
                    serde_json::from_str(&p)
                        .map_err(|e| Failure::Config(format!("--payload is not JSON: {e}")))?,
                ),
                None => None,
            };
            let op = Operation {
                id,
                op_type,
                payload,
                daemon_id: None,
                timestamp: None,
            };
            print(&client.submit(&op).await.map_err(failed)?);
        }
        CtlCommand::Batch { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            }
            .map_err(|e| Failure::Config(format!("--file {}: {e}", file.display())))?;
            let ops: Vec<Operation> = serde_json::from_str(&text).map_err(|e| {
                Failure::Config(format!(
                    "--file {} is not a JSON array of operations: {e}",
                    file.display()
                ))
            })?;
            print(&client.submit_batch(&ops).await.map_err(failed)?);
        }
        CtlCommand::Get { id } => print(
            &client
                .operation_read(&id, consistency)
                .await
                .map_err(failed)?,
        ),
        CtlCommand::Log { from, limit } => print(
            &client
                .journal_read(from, limit, consistency)
                .await
                .map_err(failed)?,
        ),
        CtlCommand::Settings { dedupe_window } => match dedupe_window {
            Some(window) => {
                let update = SettingsUpdate {
                    dedupe_window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
                };
                print(&client.set_settings(&update).await.map_err(failed)?)
            }
            None => print(&client.settings().await.map_err(failed)?),
        },
        CtlCommand::Watch { from } => {
            let path = from.map_or_else(
                || "/v1/journal/watch".to_string(),
                |f| format!("/v1/journal/watch?from={f}"),
            );
            let resp = client.stream(&path).await.map_err(failed)?;
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Failure::Runtime(format!("watch ended: {e}")))?;
                for line in String::from_utf8_lossy(&chunk).lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        println!("{}", data.trim());
                    }
                }
            }
        }
        CtlCommand::Members => print(&client.cluster().await.map_err(failed)?),
        CtlCommand::AddLearner {
            node_id,
            name,
            address,
            admin_address,
        } => {
            let spec = MemberSpec {
                node_id,
                name,
                address,
                admin_address,
            };
            print(&client.add_learner(&spec).await.map_err(failed)?);
        }
        CtlCommand::Promote { node_id } => print(&client.promote(node_id).await.map_err(failed)?),
        CtlCommand::Remove { node_id } => print(&client.remove(node_id).await.map_err(failed)?),
        CtlCommand::TransferLeadership { to } => {
            print(&client.transfer_leadership(to).await.map_err(failed)?);
        }
        CtlCommand::Snapshot => print(&client.snapshot().await.map_err(failed)?),
        CtlCommand::Backup {
            target,
            no_build,
            keep,
            json,
        } => backup(&client, &target, no_build, keep, json).await?,
        CtlCommand::Restore {
            source,
            backup,
            deadline,
            json,
        } => restore(&client, &source, backup, deadline, json).await?,
    }
    Ok(())
}

/// `ctl backup`: a snapshot (unless `no_build`), streamed to `target` with its manifest, then
/// the older backups beyond `keep` deleted.
async fn backup(
    client: &SidecarClient,
    target: &str,
    no_build: bool,
    keep: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    if !no_build {
        client.snapshot().await.map_err(failed)?;
    }
    let (store, name) = raft_backup::source(target).map_err(stored)?;
    let name = name.unwrap_or_else(|| raft_backup::new_name(std::time::SystemTime::now()));
    let manifest = store.upload(client, &name).await.map_err(stored)?;
    if !json {
        println!(
            "backed up {} bytes to {name} in {} (last log index {}, journal {}..={})",
            manifest.size_bytes,
            store.location(),
            manifest.last_log_index,
            manifest.journal_first_index,
            manifest.journal_last_index
        );
    }
    let mut deleted = Vec::new();
    if let Some(keep) = keep {
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        deleted = store.prune(keep).await.map_err(stored)?;
        if !json {
            for old in &deleted {
                println!("deleted the older backup {old}");
            }
        }
    }
    if json {
        print_line(&BackupReport {
            name,
            location: store.location().to_owned(),
            manifest,
            deleted,
        });
    }
    Ok(())
}

/// `ctl restore`: the backup `backup` (default the newest) at `source`, streamed into the
/// node's `POST /admin/v1/restore`.
async fn restore(
    client: &SidecarClient,
    source: &str,
    backup: Option<String>,
    deadline: Duration,
    json: bool,
) -> Result<(), Failure> {
    let (store, named) = raft_backup::source(source).map_err(stored)?;
    let (name, manifest) = match backup.or(named) {
        Some(name) => {
            let manifest = store.manifest(&name).await.map_err(stored)?;
            (name, manifest)
        }
        None => {
            let newest = store.latest().await.map_err(stored)?;
            (newest.name, newest.manifest)
        }
    };
    let image = store.open_image(&name).await.map_err(stored)?;
    let result = match client.restore(&manifest, image, deadline).await {
        Ok(result) => Some(result),
        // Staged by an earlier request: the node is on its way down to start on it.
        Err(e) if e.code() == Some(ErrorCode::ShuttingDown) => None,
        Err(e) => return Err(failed(e)),
    };
    let report = RestoreReport {
        name,
        location: store.location().to_owned(),
        manifest,
        result,
    };
    if json {
        print_line(&report);
    } else {
        print(&report);
    }
    Ok(())
}

fn stored(e: raft_backup::BackupError) -> Failure {
    Failure::Runtime(e.to_string())
}

/// The admin client's certificate: the flags, else `raft-dev`'s when present, else none.
fn client_tls(args: &CtlArgs) -> Result<Option<TlsHttp>, Failure> {
    let files = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => Some((ca.clone(), cert.clone(), key.clone())),
        _ => {
            let dev = PathBuf::from("raft-dev/tls/raft-admin");
            dev.exists().then(|| {
                (
                    dev.join(raft_pki::CA_FILE),
                    dev.join(raft_pki::CERT_FILE),
                    dev.join(raft_pki::KEY_FILE),
                )
            })
        }
    };
    let Some((ca, cert, key)) = files else {
        return Ok(None);
    };
    ClientTls::from_files(&ca, &cert, &key)
        .and_then(|tls| tls.connector())
        .map(Some)
        .map_err(|e| Failure::Config(e.to_string()))
}
