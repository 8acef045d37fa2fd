//! The write path: daemon operation → (forward to the leader over the peer transport) →
//! quorum gate → batcher → one `client_write` per batch → each caller gets its own outcome →
//! the answering node waits until it has applied the operation itself.
//!
//! openraft 0.9 appends and fsyncs once per `client_write`, so concurrent operations are
//! grouped: the batcher takes whatever is queued (up to a count and byte cap) whenever a
//! proposal slot is free; under load batches grow, alone an operation goes out at once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use raft_api::ErrorCode;
use raft_api::daemon::PartitionState;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::node::{Lifecycle, Node, millis};
use super::types::{Member, NodeId, Raft, TypeConfig};
use super::write::{WriteFailure, WriteResult};
use crate::config::NodeConfig;
use crate::journal::{OpOutcome, Proposal, StoredOperation};
use crate::metrics::Metrics;
use crate::transport::frame::{PeerRequest, PeerResponse};

/// Most operations in one Raft entry.
const MAX_BATCH_OPS: usize = 2048;
/// A batch stops growing past this many bytes (one larger operation still goes alone).
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Proposals in flight at once (openraft pipelines them).
const MAX_IN_FLIGHT: usize = 4;

struct Pending {
    op: StoredOperation,
    reply: oneshot::Sender<WriteResult>,
}

/// Handle on the batching task.
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    pub fn start(raft: Raft, cfg: &NodeConfig, metrics: Arc<Metrics>) -> Batcher {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let limits = Limits {
            write_timeout: cfg.write_timeout,
            dedupe_window_ms: millis(cfg.dedupe_window),
            quorum_limit_ms: millis(cfg.election_timeout_max),
        };
        tokio::spawn(run_batcher(raft, rx, limits, metrics));
        Batcher { tx }
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    write_timeout: Duration,
    dedupe_window_ms: u64,
    /// A leader without a quorum acknowledgement for longer than this has lost its quorum.
    quorum_limit_ms: u64,
}

async fn run_batcher(
    raft: Raft,
    mut rx: mpsc::Receiver<Pending>,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut bytes = first.op.approx_size();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.op.approx_size();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (raft, metrics) = (raft.clone(), metrics.clone());
        tokio::spawn(async move {
            propose(&raft, batch, limits, &metrics).await;
            drop(permit);
        });
    }
}

fn cut_off() -> WriteFailure {
    WriteFailure::new(
        ErrorCode::NoQuorum,
        "this node cannot reach a majority of voters (minority side of a partition?)",
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// Resolves when the leader has gone without a quorum acknowledgement for longer than
/// `limit_ms` (or stopped leading): a write in flight then has an unknown outcome.
async fn quorum_lost(raft: &Raft, limit_ms: u64) {
    let mut rx = raft.metrics();
    let _ = rx
        .wait_for(|m| {
            let voters = m.membership_config.membership().voter_ids().count();
            let acked = voters <= 1 || m.millis_since_quorum_ack.is_some_and(|ms| ms <= limit_ms);
            !acked || m.current_leader != Some(m.id)
        })
        .await;
}

async fn propose(raft: &Raft, batch: Vec<Pending>, limits: Limits, metrics: &Metrics) {
    let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    let count = ops.len();
    let proposal = Proposal {
        operations: ops,
        proposed_at_ms: now_ms(),
        dedupe_window_ms: limits.dedupe_window_ms,
    };
    let started = Instant::now();
    let timeout = limits.write_timeout;
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, raft.client_write(Arc::new(proposal))) => Some(r),
        () = quorum_lost(raft, limits.quorum_limit_ms) => None,
    };
    let result = match outcome {
        None => Err(WriteFailure::new(
            ErrorCode::Timeout,
            "the leader lost its quorum while the write was in flight; the outcome is unknown, retry with the same id",
        )),
        Some(Err(_)) => Err(WriteFailure::new(
            ErrorCode::Timeout,
            format!(
                "not committed within {timeout:?}; the outcome is unknown, retry with the same id"
            ),
        )),
        Some(Ok(r)) => classify(r, count),
    };
    match result {
        Ok(outcomes) => {
            metrics
                .commit_latency
                .observe(started.elapsed().as_secs_f64());
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(Err(failure.clone()));
            }
        }
    }
}

type ClientWriteResult =
    Result<ClientWriteResponse<TypeConfig>, RaftError<NodeId, ClientWriteError<NodeId, Member>>>;

/// Map openraft's answer for a batch of `count` operations.
fn classify(r: ClientWriteResult, count: usize) -> Result<Vec<OpOutcome>, WriteFailure> {
    match r {
        Ok(resp) if resp.data.outcomes.len() == count => Ok(resp.data.outcomes),
        Ok(resp) => Err(WriteFailure::new(
            ErrorCode::Internal,
            format!(
                "state machine answered {} outcomes for {count} operations",
                resp.data.outcomes.len()
            ),
        )),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(WriteFailure::new(
            ErrorCode::NoLeader,
            "leadership changed before the operation was proposed; retry",
        )
        .with_leader(f.leader_node.map(|n| n.name))),
        Err(RaftError::APIError(e)) => Err(WriteFailure::new(ErrorCode::Internal, e.to_string())),
        Err(RaftError::Fatal(e)) => Err(WriteFailure::new(ErrorCode::ShuttingDown, e.to_string())),
    }
}

/// Counts a submit as in flight until dropped (also when the client goes away mid-request).
struct InFlight<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a tokio::sync::watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The answer of a submit on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub index: u64,
    pub term: u64,
    pub duplicate: bool,
}

impl Node {
    /// Submit one operation from the local daemon: propose it (or forward it to the leader),
    /// then wait until this node has applied it. Never waits past `--write-timeout-ms`.
    /// `on_committed` runs once the leader has committed it, before this node applied it
    /// (the `REPLICATED` status).
    pub async fn submit(
        &self,
        op: StoredOperation,
        on_committed: impl FnOnce(Submitted) + Send,
    ) -> Result<Submitted, WriteFailure> {
        let deadline = Instant::now() + self.cfg.write_timeout;
        let _counted = InFlight::enter(&self.inflight);
        let result = self.submit_inner(op, deadline, on_committed).await;
        match &result {
            Ok(s) if s.duplicate => {
                self.metrics.duplicate.inc();
            }
            Ok(_) => {
                self.metrics.replicated.inc();
                self.metrics.committed.inc();
            }
            Err(f) => self.metrics.count_failure(f.code),
        }
        result
    }

    async fn submit_inner(
        &self,
        op: StoredOperation,
        deadline: Instant,
        on_committed: impl FnOnce(Submitted) + Send,
    ) -> Result<Submitted, WriteFailure> {
        self.admit()?;
        // No leader known and no majority heard: do not wait for an election that cannot end.
        if self.raft_metrics().current_leader.is_none()
            && self.health().partition == PartitionState::Minority
        {
            return Err(cut_off());
        }
        let leader = self.await_leader(deadline).await?;
        let outcome = if leader == self.id {
            self.propose_as_leader(op, deadline).await?
        } else {
            self.leader_in_contact(leader)?;
            self.forward(leader, op, deadline).await?
        };
        let submitted = match outcome {
            OpOutcome::Appended { index, term } => Submitted {
                index,
                term,
                duplicate: false,
            },
            OpOutcome::Duplicate { index, term } => Submitted {
                index,
                term,
                duplicate: true,
            },
            OpOutcome::Conflict { index } => {
                return Err(WriteFailure::new(
                    ErrorCode::IdConflict,
                    format!(
                        "operation id already committed at index {index} with a different type or payload"
                    ),
                ));
            }
        };
        on_committed(submitted);
        self.await_applied(submitted.index, deadline).await?;
        Ok(submitted)
    }

    /// Refuse at once when this node cannot take operations at all.
    pub(super) fn admit(&self) -> Result<(), WriteFailure> {
        match self.lifecycle() {
            Lifecycle::Stopping => Err(WriteFailure::new(
                ErrorCode::ShuttingDown,
                "node is shutting down",
            )),
            Lifecycle::Removed => Err(WriteFailure::new(
                ErrorCode::NotInitialized,
                "node was removed from the cluster",
            )),
            Lifecycle::Running if !self.is_member(&self.raft_metrics()) => Err(WriteFailure::new(
                ErrorCode::NotInitialized,
                "node is not a member of a cluster yet",
            )),
            Lifecycle::Running => Ok(()),
        }
    }

    /// The leader's id; during an election wait (briefly, within the deadline) for one.
    async fn await_leader(&self, deadline: Instant) -> Result<u64, WriteFailure> {
        let patience = (self.cfg.election_timeout_max * 3)
            .min(deadline.saturating_duration_since(Instant::now()));
        let mut rx = self.raft.metrics();
        let waited =
            tokio::time::timeout(patience, rx.wait_for(|m| m.current_leader.is_some())).await;
        match waited {
            Ok(Ok(m)) => m
                .current_leader
                .ok_or_else(|| WriteFailure::new(ErrorCode::NoLeader, "no leader known")),
            Ok(Err(_)) => Err(WriteFailure::new(
                ErrorCode::ShuttingDown,
                "Raft has stopped",
            )),
            Err(_) => Err(WriteFailure::new(
                ErrorCode::NoLeader,
                format!(
                    "no leader known after {patience:?}; an election is under way or this node is cut off"
                ),
            )),
        }
    }

    /// On the leader: gate on quorum, then hand the operation to the batcher.
    pub(super) async fn propose_as_leader(
        &self,
        op: StoredOperation,
        deadline: Instant,
    ) -> WriteResult {
        self.admit()?;
        self.quorum_gate(deadline).await?;
        let (reply, answer) = oneshot::channel();
        let stopped = || WriteFailure::new(ErrorCode::ShuttingDown, "batcher stopped");
        let queued = async {
            self.batcher
                .tx
                .send(Pending { op, reply })
                .await
                .map_err(|_| stopped())?;
            answer.await.map_err(|_| stopped())?
        };
        match tokio::time::timeout_at(deadline.into(), queued).await {
            Ok(result) => result,
            Err(_) => Err(WriteFailure::new(
                ErrorCode::Timeout,
                "not committed before the write deadline; the outcome is unknown, retry with the same id",
            )),
        }
    }

    /// openraft 0.9 has no CheckQuorum: a leader cut off from the majority would accept writes
    /// that hang. Refuse them (`NO_QUORUM`) unless a majority acknowledged us recently.
    async fn quorum_gate(&self, deadline: Instant) -> Result<(), WriteFailure> {
        let limit = millis(self.cfg.election_timeout_max);
        let fresh = |m: &super::types::RaftMetrics| {
            let voters = m.membership_config.membership().voter_ids().count();
            voters <= 1 || m.millis_since_quorum_ack.is_some_and(|ms| ms <= limit)
        };
        let mut rx = self.raft.metrics();
        let m = rx.borrow().clone();
        if !self.is_leader(&m) {
            return Err(WriteFailure::new(
                ErrorCode::NoLeader,
                "this node is no longer the leader",
            )
            .with_leader(self.leader_name(&m)));
        }
        if fresh(&m) {
            return Ok(());
        }
        let patience = self
            .cfg
            .election_timeout_max
            .min(deadline.saturating_duration_since(Instant::now()));
        // Just elected, or a heartbeat round late: give acknowledgements one timeout to arrive.
        match tokio::time::timeout(patience, rx.wait_for(|m| fresh(m))).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(WriteFailure::new(
                ErrorCode::NoQuorum,
                "the leader cannot reach a majority of voters (minority side of a partition?)",
            )
            .with_leader(Some(self.cfg.name.clone()))),
        }
    }

    /// On a follower, before forwarding: refuse at once (`NO_QUORUM`) when the leader itself
    /// said lately that it cannot reach a majority, or (`NO_QUORUM`/`NO_LEADER`) when the leader
    /// has not been heard within `--partition-detection-ms` (openraft still names it until an
    /// election starts). Nothing is sent, so the answer is quick and certain instead of a
    /// forward that hangs and ends with an unknown outcome. Contact is checked live, not from
    /// the monitor's last tick, so a leader just heard from is never refused.
    fn leader_in_contact(&self, leader: NodeId) -> Result<(), WriteFailure> {
        let m = self.raft_metrics();
        if super::monitor::leader_verdict(self, &m) == Some(PartitionState::Minority) {
            return Err(cut_off());
        }
        let heard = self
            .peer_contact()
            .get(&leader)
            .is_some_and(|d| *d <= self.cfg.partition_detection);
        match self.health().partition {
            _ if heard => Ok(()),
            PartitionState::Minority => Err(cut_off()),
            PartitionState::Leaderless => Err(WriteFailure::new(
                ErrorCode::NoLeader,
                "the leader has not been heard from within the partition-detection window",
            )),
            PartitionState::Healthy | PartitionState::Degraded => Ok(()),
        }
    }

    /// On a follower: hand the operation to the leader over the peer transport.
    async fn forward(&self, leader: u64, op: StoredOperation, deadline: Instant) -> WriteResult {
        let m = self.raft_metrics();
        let member = self
            .member(&m, leader)
            .ok_or_else(|| WriteFailure::new(ErrorCode::NoLeader, "leader unknown"))?;
        let link = self.links.get(leader, &member.peer_addr);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut metrics = self.raft.metrics();
        let answer = tokio::select! {
            answer = link.call(PeerRequest::Forward(op), remaining) => answer,
            _ = metrics.wait_for(|m| m.current_leader != Some(leader)) => {
                return Err(WriteFailure::new(
                    ErrorCode::Timeout,
                    "the leader changed while the write was forwarded; the outcome is unknown, retry with the same id",
                ));
            }
        };
        match answer {
            Ok(PeerResponse::Forward(result)) => result,
            Ok(other) => Err(WriteFailure::new(
                ErrorCode::NoLeader,
                format!("leader could not take the write: {other:?}"),
            )
            .with_leader(Some(member.name))),
            Err(crate::transport::link::CallError::Timeout { .. }) => Err(WriteFailure::new(
                ErrorCode::Timeout,
                "the leader did not answer in time; the outcome is unknown, retry with the same id",
            )),
            // Never sent: safe to report as "no leader reachable".
            Err(e @ crate::transport::link::CallError::Unreachable { .. }) => Err(
                WriteFailure::new(ErrorCode::NoLeader, format!("cannot reach the leader: {e}"))
                    .with_leader(Some(member.name)),
            ),
            // Sent, then the connection failed: the leader may have committed it.
            Err(e) => Err(WriteFailure::new(
                ErrorCode::Timeout,
                format!(
                    "connection to the leader failed mid-request ({e}); the outcome is unknown, retry with the same id"
                ),
            )),
        }
    }

    /// Wait until this node's journal holds `index`.
    async fn await_applied(&self, index: u64, deadline: Instant) -> Result<(), WriteFailure> {
        let mut rx = self.journal.subscribe();
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, rx.wait_for(|s| s.journal.last_index() >= index))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            _ => Err(WriteFailure::new(
                ErrorCode::Timeout,
                format!(
                    "committed at index {index} but not yet applied on this node; retry with the same id"
                ),
            )),
        }
    }
}
