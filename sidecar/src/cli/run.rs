//! `raft-sidecar run`: start one node and its APIs, then on SIGTERM/SIGINT hand leadership over
//! (when this node leads), stop admitting operations, let in-flight ones finish within the
//! grace period, close peers, flush RocksDB.
//! The same stop, ending in exit 1, when Raft stops on its own (a storage error, a panic).

use std::sync::Arc;

use futures_util::FutureExt;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::config::RunArgs;
use crate::metrics::Metrics;
use crate::raft::handoff;
use crate::raft::launch::{self, NodeError};
use crate::raft::node::Node;
use crate::store::StoreError;

/// How a subcommand failed: bad configuration (exit 64) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum Failure {
    Config(String),
    Runtime(String),
}

pub async fn run(args: RunArgs) -> Result<(), Failure> {
    let cfg = args
        .validate()
        .map_err(|e| Failure::Config(e.to_string()))?;
    let grace = cfg.shutdown_grace;
    // Watched from the start: a SIGTERM while the store opens (a restart replaying its log can
    // take a while) must stop the node cleanly, not kill it with the default action.
    let mut signals = Signals::watch().map_err(Failure::Runtime)?;
    let running = launch::start(cfg, Arc::new(Metrics::new()))
        .await
        .map_err(|e| match e {
            NodeError::Store(StoreError::ClusterMismatch { .. })
            | NodeError::RaftConfig(_)
            | NodeError::Tls(_)
            | NodeError::PeerListen { .. } => Failure::Config(e.to_string()),
            other => Failure::Runtime(other.to_string()),
        })?;
    if signals.arrived() {
        tracing::info!("stopping: signalled while starting");
        running.shutdown().await;
        tracing::info!("stopped");
        return Ok(());
    }
    let node = running.node.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let servers = crate::api::serve(node.clone(), stop_rx)
        .await
        .map_err(|e| Failure::Config(e.to_string()))?;
    tracing::info!(
        node_id = node.id,
        name = %node.cfg.name,
        api = %servers.daemon_addr,
        admin = %servers.admin_addr,
        peer = %node.cfg.peer_listen,
        advertise = %node.cfg.advertise_peer,
        "raft-sidecar running"
    );
    let failed = tokio::select! {
        () = signals.recv() => None,
        why = node.raft_failed() => Some(why),
        why = node.restart_requested() => {
            // Exit 0: the container (or any supervisor) starts the node again, on the new store.
            tracing::info!(reason = %why, "stopping to start again");
            None
        }
    };
    if let Some(why) = &failed {
        tracing::error!(
            error = %why,
            "Raft stopped on its own; exiting so that the node restarts from its store"
        );
    }
    let deadline = tokio::time::Instant::now() + grace;
    if failed.is_none() {
        hand_off_before_stopping(&node, deadline).await;
    }
    tracing::info!(
        ?grace,
        "stopping: refusing new operations, draining in-flight ones"
    );
    // New submits answer 503 SHUTTING_DOWN while the listeners stay up; in-flight ones finish.
    node.begin_shutdown();
    if tokio::time::timeout_at(deadline, node.drained())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight operations did not finish within the grace period"
        );
    }
    stop_tx.send_replace(true);
    let closing = futures_util::future::join_all(servers.tasks);
    if tokio::time::timeout_at(deadline, closing).await.is_err() {
        tracing::warn!("HTTP connections still open at the end of the grace period");
    }
    drop(node);
    running.shutdown().await;
    tracing::info!("stopped");
    match failed {
        Some(why) => Err(Failure::Runtime(format!("Raft stopped: {why}"))),
        None => Ok(()),
    }
}

/// A leader that stops hands leadership over first, so its followers need not wait out an
/// election timeout; within half the grace period, the rest is for draining.
async fn hand_off_before_stopping(node: &Node, deadline: tokio::time::Instant) {
    if !node.is_leader(&node.raft_metrics()) {
        return;
    }
    let now = tokio::time::Instant::now();
    let until = now + deadline.saturating_duration_since(now) / 2;
    match tokio::time::timeout_at(
        until,
        handoff::hand_off(node, None, handoff::Purpose::Shutdown),
    )
    .await
    {
        Ok(Ok(done)) => tracing::info!(
            leader = %done.leader_id,
            took_ms = done.took_ms,
            "stopping: leadership handed over"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "stopping without a handoff"),
        Err(_) => tracing::warn!("stopping without a handoff: it did not finish in time"),
    }
}

/// SIGTERM and SIGINT, watched from the moment this is made (signals that arrive before the
/// first `recv` are kept).
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn watch() -> Result<Self, String> {
        Ok(Self {
            term: signal(SignalKind::terminate())
                .map_err(|e| format!("cannot watch SIGTERM: {e}"))?,
            int: signal(SignalKind::interrupt())
                .map_err(|e| format!("cannot watch SIGINT: {e}"))?,
        })
    }

    /// Whether a signal has arrived already.
    fn arrived(&mut self) -> bool {
        self.term.recv().now_or_never().is_some() || self.int.recv().now_or_never().is_some()
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
