//! One consensus node: opens the store, starts openraft with our storage and transport, and
//! owns everything the APIs ask about. The write path is in `submit`, membership in
//! `membership`, the background watchers (partition detection, split-vote watchdog, events,
//! metrics, removed-node detection) in `monitor`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{ServerState, SnapshotPolicy};
use raft_api::daemon::{ConsensusEvent, PartitionState};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

use super::submit::Batcher;
use super::types::{Member, NodeId, Raft, RaftMetrics};
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::store::log::LogStore;
use crate::store::state_machine::{JournalReader, StateMachineStore};
use crate::store::{Db, StoreError};
use crate::transport::frame::{
    HealthView, MembershipView, NodeIdentity, PeerRequest, PeerResponse,
};
use crate::transport::link::{Links, PeerIdentity};
use crate::transport::network::Network;
use crate::transport::server::{self, PeerAuth, PeerHandler};

/// Raft entries per AppendEntries RPC. An entry holds at most ~1 MiB of batched operations plus
/// one operation of at most [`crate::config::MAX_OPERATION_BYTES_LIMIT`], so one RPC stays far
/// below the transport's frame limit.
const MAX_PAYLOAD_ENTRIES: u64 = 8;

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Running,
    /// SIGTERM received: no new operations.
    Stopping,
    /// A committed configuration removed this node; Raft is shut down.
    Removed,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid Raft timing: {0}")]
    RaftConfig(String),
    #[error("failed to start Raft: {0}")]
    RaftStart(String),
    #[error("cannot listen for peers on {addr}: {source}")]
    PeerListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// What the monitor concluded about reachability; read by the APIs.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub partition: PartitionState,
    pub quorum_available: bool,
    /// Time since each member was last heard from (either direction).
    pub last_contact: HashMap<NodeId, Duration>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            partition: PartitionState::Healthy,
            quorum_available: false,
            last_contact: HashMap::new(),
        }
    }
}

pub struct Node {
    pub id: NodeId,
    pub cfg: Arc<NodeConfig>,
    pub raft: Raft,
    pub db: Db,
    pub journal: JournalReader,
    pub links: Links,
    pub metrics: Arc<Metrics>,
    pub events: broadcast::Sender<ConsensusEvent>,
    pub(super) batcher: Batcher,
    pub(super) health: watch::Sender<Health>,
    pub(super) lifecycle: watch::Sender<Lifecycle>,
    /// When each peer last sent us a request.
    pub(super) inbound: Mutex<HashMap<NodeId, Instant>>,
    /// Daemon submits being handled right now (shutdown waits for them).
    pub(super) inflight: watch::Sender<usize>,
    /// On a follower: the leader's latest answer to `PeerRequest::Health`, and when it came.
    pub(super) leader_report: Mutex<Option<(NodeId, HealthView, Instant)>>,
    shutdown: watch::Sender<bool>,
}

impl Node {
    /// Open storage, start Raft and the peer listener. The APIs are started by the caller.
    pub async fn start(cfg: NodeConfig, metrics: Arc<Metrics>) -> Result<Arc<Node>, NodeError> {
        let cfg = Arc::new(cfg);
        let (db, identity) = Db::open(&cfg.data_dir, &cfg.cluster_id)?;
        let removed = db.is_removed()?;
        tracing::info!(node_id = identity.node_id, fresh = identity.fresh, removed, dir = %cfg.data_dir.display(), "store open");
        let raft_config = openraft::Config {
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
            enable_elect: !removed,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::RaftConfig(e.to_string()))?;
        let links = Links::new(PeerIdentity {
            node_id: identity.node_id,
            cluster_id: cfg.cluster_id.clone(),
            token: cfg.token.clone(),
            backoff_max: cfg.election_timeout_min / 3,
        });
        let state_machine = StateMachineStore::open(db.clone(), cfg.journal_retention)?;
        let journal = state_machine.reader();
        let network = Network::new(links.clone(), cfg.election_timeout_min / 3);
        let raft = Raft::new(
            identity.node_id,
            Arc::new(raft_config),
            network,
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
        let (events, _) = broadcast::channel(256);
        let (shutdown, _) = watch::channel(false);
        let node = Arc::new(Node {
            id: identity.node_id,
            batcher: Batcher::start(raft.clone(), &cfg, metrics.clone()),
            cfg: cfg.clone(),
            raft,
            db,
            journal,
            links,
            metrics,
            events,
            health: watch::channel(Health::default()).0,
            lifecycle: watch::channel(if removed {
                Lifecycle::Removed
            } else {
                Lifecycle::Running
            })
            .0,
            inbound: Mutex::new(HashMap::new()),
            inflight: watch::channel(0).0,
            leader_report: Mutex::new(None),
            shutdown,
        });
        if removed {
            let _ = node.raft.shutdown().await;
        }
        let auth = PeerAuth {
            node_id: identity.node_id,
            cluster_id: cfg.cluster_id.clone(),
            token: cfg.token.clone(),
            refused: node.metrics.peer_handshakes_refused.clone(),
        };
        tokio::spawn(server::serve(
            listener,
            auth,
            node.clone(),
            node.shutdown_signal(),
        ));
        tokio::spawn(super::monitor::run(node.clone()));
        if !cfg.initial_members.is_empty() {
            tokio::spawn(super::bootstrap::run(node.clone()));
        }
        Ok(node)
    }

    /// Resolves once [`Node::shutdown`] was called.
    pub fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// Resolves once the node stops admitting operations (SIGTERM); long-lived streams end then
    /// so a graceful HTTP drain never waits on an idle subscriber.
    pub fn stopping_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.lifecycle.subscribe();
        async move {
            let _ = rx.wait_for(|l| *l == Lifecycle::Stopping).await;
        }
    }

    pub fn lifecycle(&self) -> Lifecycle {
        *self.lifecycle.borrow()
    }

    /// Stop admitting operations (they answer SHUTTING_DOWN).
    pub fn begin_shutdown(&self) {
        self.lifecycle.send_if_modified(|l| {
            let changed = *l == Lifecycle::Running;
            if changed {
                *l = Lifecycle::Stopping;
            }
            changed
        });
    }

    /// Resolves when no daemon submit is in flight.
    pub async fn drained(&self) {
        let mut rx = self.inflight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Finish: stop Raft, close peer listeners, flush RocksDB.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.shutdown.send_replace(true);
        if self.lifecycle() != Lifecycle::Removed {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.raft.shutdown()).await;
        }
        let db = self.db.clone();
        let _ = tokio::task::spawn_blocking(move || db.flush()).await;
    }

    /// openraft's metrics, cloned out of the watch at once (holding the borrow can stall Raft).
    pub fn raft_metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// A member's entry in the effective membership.
    pub fn member(&self, m: &RaftMetrics, id: NodeId) -> Option<Member> {
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// Name of the current leader, if known.
    pub fn leader_name(&self, m: &RaftMetrics) -> Option<String> {
        m.current_leader
            .and_then(|id| self.member(m, id))
            .map(|member| member.name)
    }

    /// Whether this node is a member of a cluster (initialized or added, not removed).
    pub fn is_member(&self, m: &RaftMetrics) -> bool {
        self.lifecycle() != Lifecycle::Removed
            && m.membership_config
                .membership()
                .get_node(&self.id)
                .is_some()
    }

    pub fn is_leader(&self, m: &RaftMetrics) -> bool {
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    fn touch(&self, from: Option<NodeId>) {
        if let Some(peer) = from {
            let mut inbound = self
                .inbound
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            inbound.insert(peer, Instant::now());
        }
    }

    /// Time since each peer last reached us or answered us.
    pub fn peer_contact(&self) -> HashMap<NodeId, Duration> {
        let mut contact = self.links.last_heard();
        let inbound = self
            .inbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (peer, at) in inbound.iter() {
            let d = at.elapsed();
            contact
                .entry(*peer)
                .and_modify(|c| *c = (*c).min(d))
                .or_insert(d);
        }
        contact
    }

    /// Record that a committed configuration removed this node and stop its Raft instance.
    pub async fn become_removed(&self, why: &str) {
        let first = self.lifecycle.send_if_modified(|l| {
            let changed = *l != Lifecycle::Removed;
            *l = Lifecycle::Removed;
            changed
        });
        if !first {
            return;
        }
        tracing::warn!(
            why,
            "this node was removed from the cluster; shutting Raft down"
        );
        let db = self.db.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || db.mark_removed()).await {
            tracing::error!(error = %e, "could not record removal");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.raft.shutdown()).await;
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl PeerHandler for Node {
    async fn handle(&self, from: Option<NodeId>, request: PeerRequest) -> PeerResponse {
        self.touch(from);
        let removed = self.lifecycle() == Lifecycle::Removed;
        match request {
            PeerRequest::Identify => PeerResponse::Identity(NodeIdentity {
                node_id: self.id,
                name: self.cfg.name.clone(),
                admin_addr: self.cfg.advertise_admin.clone(),
                initialized: self.is_member(&self.raft_metrics()),
            }),
            PeerRequest::Membership => {
                let m = self.raft_metrics();
                PeerResponse::Membership(MembershipView {
                    leader: m.current_leader,
                    term: m.current_term,
                    // The applied membership is committed; the effective one may not be.
                    membership: self.journal.applied().membership,
                })
            }
            PeerRequest::Health => {
                let m = self.raft_metrics();
                PeerResponse::Health(HealthView {
                    leading: self.is_leader(&m),
                    term: m.current_term,
                    partition: self.health().partition,
                })
            }
            _ if removed => PeerResponse::Refused("this node was removed from the cluster".into()),
            PeerRequest::AppendEntries(rpc) => {
                PeerResponse::AppendEntries(self.raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => PeerResponse::Vote(self.raft.vote(rpc).await),
            PeerRequest::InstallSnapshot(rpc) => {
                PeerResponse::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            PeerRequest::Forward(op) => {
                let deadline = Instant::now() + self.cfg.write_timeout;
                PeerResponse::Forward(self.propose_as_leader(op, deadline).await)
            }
            PeerRequest::Removed { term, target } => {
                let m = self.raft_metrics();
                // Only the named node, only if it was a committed member, only from a leader
                // at least as recent as what we know.
                let was_member = self.journal.applied().membership.log_id().is_some();
                if target == self.id
                    && was_member
                    && term >= m.current_term
                    && from.is_some_and(|f| f != self.id)
                {
                    self.become_removed("the leader reported our removal").await;
                }
                PeerResponse::Ack
            }
        }
    }
}
