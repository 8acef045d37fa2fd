//! The state one consensus node shares between its tasks: openraft's handle, the store, peer
//! links, metrics, the event channel, the monitor's verdict, where the node is in its life.
//! Every task (peer server, monitor, bootstrap, batcher) and every API handler borrows it
//! through an `Arc<Node>`; `launch` builds it and owns the tasks. The rules live elsewhere:
//! `health` (verdicts), `submit` (the write path), `membership` (changes), `monitor`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::error::Fatal;
use parking_lot::Mutex;
use raft_api::ErrorCode;
use raft_api::daemon::{ConsensusEvent, PartitionState};
use tokio::sync::{broadcast, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::batch::Batcher;
use super::health::{self, Health, LeaderReport};
use super::timeline::LogTimeline;
use crate::config::NodeConfig;
use crate::metrics::Metrics;
use crate::store::Db;
use crate::store::state_machine::JournalReader;
use crate::store::state_machine::pace::SnapshotPace;
use crate::tls::Tls;
use crate::transport::link::{Link, Links};
use crate::types::{Member, NodeId, Raft, RaftMetrics};
use crate::write::WriteFailure;

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Running,
    /// SIGTERM received: no new operations.
    Stopping,
    /// A committed configuration removed this node; Raft is shut down.
    Removed,
}

pub struct Node {
    pub id: NodeId,
    pub cfg: Arc<NodeConfig>,
    pub raft: Raft,
    pub db: Db,
    pub journal: JournalReader,
    pub links: Links,
    pub metrics: Arc<Metrics>,
    /// `None` only with `--insecure-plaintext`; the admin API serves with it too.
    pub tls: Option<Arc<Tls>>,
    /// When snapshot builds may start (an explicit snapshot request hurries it).
    pub snapshot_pace: Arc<SnapshotPace>,
    pub events: broadcast::Sender<ConsensusEvent>,
    pub(super) batcher: Batcher,
    /// The monitor's latest verdict.
    pub(super) health: watch::Sender<Health>,
    pub(super) lifecycle: watch::Sender<Lifecycle>,
    /// When each peer last sent us a request.
    inbound: Mutex<HashMap<NodeId, Instant>>,
    /// Daemon submits being handled right now (shutdown waits for them).
    pub(super) submits_in_flight: watch::Sender<usize>,
    /// Every proposal to openraft holds this for reading until it is answered; a leadership
    /// handoff holds it for writing, so the log stops growing while it runs (see `handoff`).
    pub(super) proposals: tokio::sync::RwLock<()>,
    /// Since when this node leads, as the monitor saw it (a tick late, so never early).
    leading_since: Mutex<Option<Instant>>,
    /// On a follower: the leader's latest answer to `PeerRequest::Health`.
    leader_report: Mutex<Option<LeaderReport>>,
    /// When the log reached each index (sampled by the monitor): how far behind in time a
    /// follower's matched index is.
    timeline: Mutex<LogTimeline>,
    /// Short background errands (a removal notice, a question to the leader), joined by
    /// `launch` on shutdown like the long-lived tasks.
    errands: Mutex<JoinSet<()>>,
    shutdown: watch::Sender<bool>,
    /// Why the node must stop and start again (a restore staged through the admin API).
    restart: watch::Sender<Option<String>>,
    /// Held by the one restore or recovery the admin API runs at a time, until it is staged
    /// (owned, so a client that goes away does not release it early).
    pub restore_turn: Arc<tokio::sync::Mutex<()>>,
}

impl Node {
    /// A node in `lifecycle` over an opened store and a started Raft instance.
    pub(super) fn new(parts: NodeParts, batcher: Batcher, lifecycle: Lifecycle) -> Node {
        Node {
            id: parts.id,
            cfg: parts.cfg,
            raft: parts.raft,
            db: parts.db,
            journal: parts.journal,
            links: parts.links,
            metrics: parts.metrics,
            tls: parts.tls,
            snapshot_pace: parts.snapshot_pace,
            events: broadcast::channel(256).0,
            batcher,
            health: watch::channel(Health::default()).0,
            lifecycle: watch::channel(lifecycle).0,
            inbound: Mutex::new(HashMap::new()),
            submits_in_flight: watch::channel(0).0,
            proposals: tokio::sync::RwLock::new(()),
            leading_since: Mutex::new(None),
            leader_report: Mutex::new(None),
            timeline: Mutex::new(LogTimeline::default()),
            errands: Mutex::new(JoinSet::new()),
            shutdown: watch::channel(false).0,
            restart: watch::channel(None).0,
            restore_turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Ask whoever runs the node (`raft-sidecar run`) to stop it and start it again.
    pub fn request_restart(&self, why: impl Into<String>) {
        let why = why.into();
        self.restart.send_if_modified(|r| {
            let first = r.is_none();
            if first {
                *r = Some(why);
            }
            first
        });
    }

    /// Resolves with the reason once [`Node::request_restart`] was called.
    pub async fn restart_requested(&self) -> String {
        let mut rx = self.restart.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Resolves once [`Node::signal_shutdown`] was called.
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

    /// Resolves once this node has applied Raft index `index`: true, or false if Raft stopped.
    pub async fn applied_through(&self, index: u64) -> bool {
        let mut metrics = self.raft.metrics();
        metrics
            .wait_for(|m| m.last_applied.is_some_and(|l| l.index >= index))
            .await
            .is_ok()
    }

    /// Resolves when the node's lifecycle or its reachability verdict changes.
    pub fn standing_changed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (mut life, mut health) = (self.lifecycle.subscribe(), self.health.subscribe());
        async move {
            tokio::select! {
                _ = life.changed() => {}
                _ = health.changed() => {}
            }
        }
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

    /// Resolves when no submit is in flight: the daemon's own, and on the leader those followers
    /// forwarded.
    pub async fn drained(&self) {
        let mut rx = self.submits_in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Tell every task to stop (see `launch::Running::shutdown`, which then joins them).
    pub(super) fn signal_shutdown(&self) {
        self.begin_shutdown();
        self.shutdown.send_replace(true);
    }

    /// Run a short background errand; it is joined (or aborted past the deadline) on shutdown.
    pub(super) fn spawn_errand(
        &self,
        errand: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> AbortHandle {
        let mut errands = self.errands.lock();
        while errands.try_join_next().is_some() {}
        errands.spawn(errand)
    }

    /// The errands, taken out to be joined at shutdown.
    pub(super) fn take_errands(&self) -> JoinSet<()> {
        std::mem::take(&mut *self.errands.lock())
    }

    /// openraft's metrics, cloned out of the watch at once (holding the borrow can stall Raft).
    pub fn raft_metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// Resolves when Raft stopped on its own: its core quit on a storage error, or its task
    /// ended without saying why (a panic). A stop that was asked for (shutdown, removal) never
    /// resolves it. A node in that state can neither commit nor apply anything, yet its APIs
    /// would keep answering from a store that no longer moves: the caller exits instead, so
    /// the node restarts from its store (the kubelet restarts the container).
    pub async fn raft_failed(&self) -> String {
        let mut rx = self.raft.metrics();
        loop {
            let state = rx.borrow_and_update().running_state.clone();
            match state {
                Err(Fatal::Stopped) => return std::future::pending().await,
                Err(e) => return e.to_string(),
                Ok(()) => {}
            }
            if rx.changed().await.is_err() {
                if matches!(rx.borrow().running_state, Err(Fatal::Stopped)) {
                    return std::future::pending().await;
                }
                return "the Raft core's task ended without reporting why (a panic)".into();
            }
        }
    }

    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// A member's entry in the effective membership.
    pub fn member(&self, m: &RaftMetrics, id: NodeId) -> Option<Member> {
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// The leader's member record and the link to it, to send it a forwarded request.
    pub(super) fn leader_link(&self, leader: NodeId) -> Result<(Member, Arc<Link>), WriteFailure> {
        let m = self.raft_metrics();
        let member = self
            .member(&m, leader)
            .ok_or_else(|| WriteFailure::new(ErrorCode::NoLeader, "leader unknown"))?;
        let link = self.links.get(leader, &member.peer_addr);
        Ok((member, link))
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

    /// Take a turn to propose: waits while a leadership handoff runs, until `deadline`. The
    /// guard is held until the proposal is answered.
    pub(super) async fn proposal_turn(
        &self,
        deadline: Instant,
    ) -> Result<tokio::sync::RwLockReadGuard<'_, ()>, WriteFailure> {
        tokio::time::timeout_at(deadline, self.proposals.read())
            .await
            .map_err(|_| {
                WriteFailure::new(
                    ErrorCode::NoLeader,
                    "leadership is being handed over and no new leader took over in time",
                )
            })
    }

    /// Since when this node leads (`None` while it does not).
    pub(super) fn leading_since(&self) -> Option<Instant> {
        *self.leading_since.lock()
    }

    pub(super) fn set_leading_since(&self, since: Option<Instant>) {
        *self.leading_since.lock() = since;
    }

    /// A peer just sent us a request.
    pub(super) fn touch(&self, from: Option<NodeId>) {
        if let Some(peer) = from {
            self.inbound.lock().insert(peer, Instant::now());
        }
    }

    /// The leader's verdict about itself as last reported to this follower, while it is fresh
    /// (see [`health::leader_verdict`]).
    pub fn leader_verdict(&self, m: &RaftMetrics) -> Option<PartitionState> {
        let report = *self.leader_report.lock();
        health::leader_verdict(
            report.as_ref(),
            m.current_leader,
            m.current_term,
            self.cfg.partition_detection,
        )
    }

    pub(super) fn record_leader_report(&self, report: LeaderReport) {
        *self.leader_report.lock() = Some(report);
    }

    /// The log's last index now (the monitor calls this every tick).
    pub(super) fn sample_log(&self, m: &RaftMetrics) {
        self.timeline
            .lock()
            .record(m.last_log_index.unwrap_or(0), Instant::now().into_std());
    }

    /// How long this log has held entries past `matched` (`None`: longer than its history).
    pub fn behind(&self, matched: u64) -> Option<Duration> {
        self.timeline
            .lock()
            .behind(matched, Instant::now().into_std())
    }

    /// Time since `peer` last sent us a request (it can reach us).
    pub fn inbound_from(&self, peer: NodeId) -> Option<Duration> {
        self.inbound.lock().get(&peer).map(Instant::elapsed)
    }

    /// Time since each peer last reached us or answered us.
    pub fn peer_contact(&self) -> HashMap<NodeId, Duration> {
        let mut contact = self.links.last_heard();
        let inbound = self.inbound.lock();
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

/// What a node is made of before its tasks start (see `launch`).
pub(super) struct NodeParts {
    pub id: NodeId,
    pub cfg: Arc<NodeConfig>,
    pub raft: Raft,
    pub db: Db,
    pub journal: JournalReader,
    pub links: Links,
    pub metrics: Arc<Metrics>,
    pub tls: Option<Arc<Tls>>,
    pub snapshot_pace: Arc<SnapshotPace>,
}
