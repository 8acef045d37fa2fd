//! Starting and stopping one node: open the store, start openraft with our storage and
//! transport, build the shared [`Node`], spawn its tasks (peer server, monitor, batcher, static
//! bootstrap) into one `JoinSet`, and on shutdown stop them all and join them within a bound.

use std::sync::Arc;
use std::time::Duration;

use openraft::SnapshotPolicy;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::batch::Batcher;
use super::health::millis;
use super::node::{Lifecycle, Node, NodeParts};
use super::peer::PeerService;
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::store::log::LogStore;
use crate::store::staged::{self, Adopted};
use crate::store::state_machine::StateMachineStore;
use crate::store::state_machine::pace::SnapshotPace;
use crate::store::{Db, StoreError};
use crate::tls::Tls;
use crate::transport::link::{Links, PeerIdentity};
use crate::transport::network::Network;
use crate::transport::server::{self, MemberName, PeerAuth};
use crate::types::Raft;

/// Raft entries per AppendEntries RPC. An entry holds at most ~1 MiB of batched operations plus
/// one operation of at most [`crate::config::MAX_OPERATION_BYTES_LIMIT`], so one RPC stays far
/// below the transport's frame limit.
const MAX_PAYLOAD_ENTRIES: u64 = 8;
/// How long shutdown waits for Raft to stop, and then for the node's tasks to end.
const STOP_BOUND: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid Raft timing: {0}")]
    RaftConfig(String),
    #[error("failed to start Raft: {0}")]
    RaftStart(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen for peers on {addr}: {source}")]
    PeerListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot carry out the restore or recovery requested through the admin API: {0}")]
    Requested(#[from] crate::store::restore::RestoreError),
}

/// A started node and the tasks it runs.
pub struct Running {
    pub node: Arc<Node>,
    tasks: JoinSet<()>,
}

/// A restore staged through the admin API becomes the store, unless the node joined a cluster
/// since (`store::staged`).
fn adopt_staged_restore(cfg: &NodeConfig) -> Result<(), NodeError> {
    match staged::adopt(&cfg.data_dir, &cfg.cluster_id)? {
        Adopted::Nothing => {}
        Adopted::Restored { set_aside } => tracing::info!(
            set_aside = ?set_aside,
            "starting on the restore staged through the admin API"
        ),
        Adopted::Refused { moved_to } => tracing::error!(
            moved_to = %moved_to.display(),
            "a restore was staged but this node has joined a cluster since: the staged store is \
             not used"
        ),
    }
    Ok(())
}

/// A recovery requested through the admin API (`store::recover`): this node becomes the only
/// voter of its cluster, keeping everything its store holds.
fn recover_if_requested(cfg: &NodeConfig) -> Result<(), NodeError> {
    let member = crate::types::Member {
        name: cfg.name.clone(),
        peer_addr: cfg.advertise_peer.clone(),
        admin_addr: cfg.advertise_admin.clone(),
    };
    let done = crate::store::recover::if_requested(
        &cfg.data_dir,
        &cfg.cluster_id,
        member,
        cfg.journal_retention,
    )?;
    use crate::store::recover::RequestOutcome;
    if let RequestOutcome::Dropped(why) = &done {
        tracing::error!(%why, "a recovery requested through the admin API was not carried out");
    }
    if let RequestOutcome::Recovered(crate::store::restore::Outcome::Restored {
        node_id,
        from,
        log_entries_applied,
        set_aside,
        ..
    }) = done
    {
        tracing::warn!(
            node_id,
            last_log_index = from.last_log_id.index,
            log_entries_applied,
            set_aside = ?set_aside,
            "recovered as the only voter of the cluster, as requested through the admin API"
        );
    }
    Ok(())
}

/// Open storage, start Raft, the peer listener and the node's tasks. The HTTP APIs are
/// started by the caller.
pub async fn start(cfg: NodeConfig, metrics: Arc<Metrics>) -> Result<Running, NodeError> {
    let cfg = Arc::new(cfg);
    adopt_staged_restore(&cfg)?;
    recover_if_requested(&cfg)?;
    let (db, identity) = Db::open(&cfg.data_dir, &cfg.cluster_id)?;
    let removed = db.is_removed()?;
    tracing::info!(node_id = identity.node_id, fresh = identity.fresh, removed, dir = %cfg.data_dir.display(), "store open");
    let tls = match &cfg.tls {
        Some(paths) => Some(Tls::load(paths.clone(), &cfg.name, metrics.tls())?),
        None => {
            tracing::warn!(
                "--insecure-plaintext: peer and admin traffic is NOT encrypted or authenticated by \
                 certificates; anyone on the pod network can read and replay the cluster token"
            );
            None
        }
    };
    let links = Links::new(PeerIdentity {
        node_id: identity.node_id,
        name: cfg.name.clone(),
        cluster_id: cfg.cluster_id.clone(),
        token: cfg.token.as_ref().map(|t| t.expose().to_owned()),
        tls: tls.clone(),
        backoff_max: cfg.election_timeout_min / 3,
    });
    let pace = Arc::new(SnapshotPace::new(
        cfg.snapshot_build_share,
        Some(metrics.snapshot_build.clone()),
    ));
    let state_machine =
        StateMachineStore::open(db.clone(), cfg.journal_retention)?.paced(pace.clone());
    let journal = state_machine.reader();
    // Quiet start: a node restarting with its store does not stand for election until it has
    // heard from a leader or a detection window passed without one (the monitor turns
    // elections on): its election timer would otherwise run out while the leader is still
    // re-dialing it, and its higher term would depose a healthy leader (openraft 0.9 has no
    // pre-vote). A fresh node has no leader to depose.
    let quiet = !identity.fresh && !removed;
    let raft = Raft::new(
        identity.node_id,
        Arc::new(raft_config(&cfg, removed, quiet)?),
        Network::new(links.clone(), cfg.election_timeout_min / 3),
        LogStore::new(db.clone()),
        state_machine,
    )
    .await
    .map_err(|e| NodeError::RaftStart(e.to_string()))?;
    let listener =
        TcpListener::bind(cfg.peer_listen)
            .await
            .map_err(|source| NodeError::PeerListen {
                addr: cfg.peer_listen,
                source,
            })?;
    let (batcher, batch_task) = Batcher::new(
        raft.clone(),
        &cfg,
        metrics.clone(),
        journal.subscribe(),
        links.clone(),
    );
    let parts = NodeParts {
        id: identity.node_id,
        cfg: cfg.clone(),
        raft,
        db,
        journal,
        links,
        metrics,
        tls: tls.clone(),
        snapshot_pace: pace,
    };
    let lifecycle = if removed {
        Lifecycle::Removed
    } else {
        Lifecycle::Running
    };
    let node = Arc::new(Node::new(parts, batcher, lifecycle));
    if removed {
        let _ = node.raft.shutdown().await;
    }
    let member_name: MemberName = {
        let raft = node.raft.clone();
        Arc::new(move |id| {
            let metrics = raft.metrics().borrow().clone();
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|m| m.name.clone())
        })
    };
    let auth = PeerAuth {
        node_id: node.id,
        cluster_id: cfg.cluster_id.clone(),
        token: cfg.token.as_ref().map(|t| t.expose().to_owned()),
        tls: tls.clone(),
        member_name,
        refused: node.metrics.peer_handshakes_refused.clone(),
        connections_refused: node.metrics.connections_refused.clone(),
    };
    let mut tasks = JoinSet::new();
    if let Some(tls) = tls {
        tasks.spawn(tls.watch(node.shutdown_signal()));
    }
    tasks.spawn(server::serve(
        listener,
        auth,
        PeerService::new(node.clone()),
        node.shutdown_signal(),
    ));
    tasks.spawn(batch_task.run(node.shutdown_signal()));
    tasks.spawn(super::monitor::run(node.clone(), quiet));
    if !cfg.initial_members.is_empty() {
        tasks.spawn(super::bootstrap::run(node.clone()));
    }
    Ok(Running { node, tasks })
}

fn raft_config(
    cfg: &NodeConfig,
    removed: bool,
    quiet: bool,
) -> Result<openraft::Config, NodeError> {
    openraft::Config {
        cluster_name: cfg.cluster_id.clone(),
        heartbeat_interval: millis(cfg.heartbeat),
        election_timeout_min: millis(cfg.election_timeout_min),
        election_timeout_max: millis(cfg.election_timeout_max),
        install_snapshot_timeout: 5_000,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_interval),
        max_in_snapshot_log_to_keep: cfg.log_compaction_threshold,
        snapshot_max_chunk_size: 1 << 20,
        // A removed node must never start an election with its stale configuration.
        enable_tick: !removed,
        enable_elect: !removed && !quiet,
        ..Default::default()
    }
    .validate()
    .map_err(|e| NodeError::RaftConfig(e.to_string()))
}

impl Running {
    /// Finish: stop admitting operations, stop Raft, stop and join every task of the node
    /// (each bounded; what is still running past the bound is aborted), flush RocksDB.
    pub async fn shutdown(mut self) {
        let node = self.node;
        node.signal_shutdown();
        if node.lifecycle() != Lifecycle::Removed {
            let _ = tokio::time::timeout(STOP_BOUND, node.raft.shutdown()).await;
        }
        let mut errands = node.take_errands();
        let joined = async {
            while self.tasks.join_next().await.is_some() {}
            while errands.join_next().await.is_some() {}
        };
        if tokio::time::timeout(STOP_BOUND, joined).await.is_err() {
            tracing::warn!(bound = ?STOP_BOUND, "node tasks still running at shutdown; aborting them");
            self.tasks.shutdown().await;
            errands.shutdown().await;
        }
        // Peer links last: the tasks above (and Raft) held some of them.
        let mut links = node.links.close();
        let closed = async { while links.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_BOUND, closed).await.is_err() {
            links.shutdown().await;
        }
        let db = node.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.flush()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::MAX_PAYLOAD_ENTRIES;
    use crate::config::MAX_OPERATION_BYTES_LIMIT;
    use crate::journal::{Proposal, StoredOperation};
    use crate::raft::batch::MAX_BATCH_BYTES;
    use crate::transport::MAX_FRAME_BYTES;
    use crate::transport::frame::{self, Envelope, PeerRequest};
    use crate::types::{Entry, LogId, Vote};

    fn operation(id: &str, payload_bytes: usize) -> StoredOperation {
        StoredOperation {
            id: id.into(),
            op_type: "t".into(),
            payload: Some("p".repeat(payload_bytes)),
            daemon_id: Some("d".into()),
            timestamp: Some(u64::MAX),
        }
    }

    #[test]
    fn the_largest_legal_append_entries_fits_in_a_frame() {
        // Each entry: the batcher stops growing a batch once it holds MAX_BATCH_BYTES, so the
        // most it holds is just under that, plus one operation of the largest size allowed.
        let proposal = Arc::new(Proposal {
            operations: vec![
                operation(&"a".repeat(256), MAX_BATCH_BYTES - 1),
                operation(&"b".repeat(256), MAX_OPERATION_BYTES_LIMIT),
            ],
            clock_ms: u64::MAX,
            initial_window_ms: u64::MAX,
            set_window_ms: Some(u64::MAX),
        });
        let leader = CommittedLeaderId::new(u64::MAX, u64::MAX);
        let entries: Vec<Entry> = (0..MAX_PAYLOAD_ENTRIES)
            .map(|i| Entry {
                log_id: LogId::new(leader, u64::MAX - i),
                payload: EntryPayload::Normal(proposal.clone()),
            })
            .collect();
        let request = PeerRequest::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(u64::MAX, u64::MAX),
            prev_log_id: Some(LogId::new(leader, u64::MAX)),
            entries,
            leader_commit: Some(LogId::new(leader, u64::MAX)),
        });
        let bytes = frame::encode(&Envelope {
            id: u64::MAX,
            body: request,
        })
        .expect("the largest legal AppendEntries encodes within the frame limit");
        let carried =
            MAX_PAYLOAD_ENTRIES as usize * (MAX_BATCH_BYTES - 1 + MAX_OPERATION_BYTES_LIMIT);
        assert!(
            bytes.len() >= carried,
            "the frame carries every payload byte"
        );
        assert!(bytes.len() <= MAX_FRAME_BYTES);
        // and with room to spare, not by luck of a few bytes
        assert!(
            bytes.len() < MAX_FRAME_BYTES - (4 << 20),
            "{} bytes",
            bytes.len()
        );
    }
}
