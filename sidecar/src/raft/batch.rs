//! The batcher: on the leader, operations that passed the quorum gate queue here and go to
//! openraft as one `client_write` per batch; each caller gets its own operation's outcome.
//!
//! openraft 0.9 appends and fsyncs once per `client_write`, so concurrent operations are
//! grouped: the batcher takes whatever is queued (up to a count and byte cap) whenever a
//! proposal slot is free; under load batches grow, alone an operation goes out at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use raft_api::ErrorCode;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::clock::LeaderClock;
use super::health::{self, Gate, millis};
use crate::config::NodeConfig;
use crate::journal::{OpOutcome, Proposal, StoredOperation};
use crate::metrics::Metrics;
use crate::store::state_machine::AppliedState;
use crate::transport::link::Links;
use crate::types::{Member, NodeId, Raft, RaftMetrics, TypeConfig};
use crate::write::{WriteFailure, WriteResult};

/// Most operations in one Raft entry.
const MAX_BATCH_OPS: usize = 2048;
/// A batch stops growing past this many bytes (one larger operation still goes alone).
pub(super) const MAX_BATCH_BYTES: usize = 1 << 20;
/// Proposals in flight at once (openraft pipelines them).
const MAX_IN_FLIGHT: usize = 4;
/// Operations waiting for a batch.
const QUEUE: usize = 16 * 1024;

/// One queued operation and where its outcome goes.
pub struct Pending {
    pub op: StoredOperation,
    pub reply: oneshot::Sender<WriteResult>,
}

/// Handle on the batching task: the sending end of its queue.
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

/// The batching task, to be spawned by whoever owns the node's tasks.
pub struct BatchTask {
    raft: Raft,
    rx: mpsc::Receiver<Pending>,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// What this node has applied: the replicated dedupe clock the proposals advance.
    applied: watch::Receiver<AppliedState>,
    clock: LeaderClock,
    /// Whether peers are up ([`leader_gate`]).
    links: Links,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    write_timeout: Duration,
    /// `--dedupe-window`: adopted by a cluster that has no window yet.
    initial_window_ms: u64,
    /// When a leader has lost its quorum ([`quorum_lost`]).
    gate: GateLimits,
}

impl Batcher {
    pub fn new(
        raft: Raft,
        cfg: &NodeConfig,
        metrics: Arc<Metrics>,
        applied: watch::Receiver<AppliedState>,
        links: Links,
    ) -> (Batcher, BatchTask) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let limits = Limits {
            write_timeout: cfg.write_timeout,
            initial_window_ms: millis(cfg.dedupe_window),
            gate: GateLimits::of(cfg),
        };
        let task = BatchTask {
            raft,
            rx,
            limits,
            metrics,
            applied,
            clock: LeaderClock::new(Instant::now()),
            links,
        };
        (Batcher { tx }, task)
    }

    /// Queue `op`; its outcome arrives on `reply`. A full queue makes it wait until `until`,
    /// then refuses it with `BUSY` (never queued, so never proposed).
    pub async fn send(
        &self,
        pending: Pending,
        until: tokio::time::Instant,
    ) -> Result<(), WriteFailure> {
        match tokio::time::timeout_at(until, self.tx.reserve()).await {
            Ok(Ok(slot)) => {
                slot.send(pending);
                Ok(())
            }
            Ok(Err(_)) => Err(WriteFailure::new(
                ErrorCode::ShuttingDown,
                "batcher stopped",
            )),
            Err(_) => Err(WriteFailure::busy("the leader's write queue is full")),
        }
    }
}

impl BatchTask {
    /// Batch and propose until `stop` resolves, then wait for the proposals in flight (each
    /// ends within the write timeout, at once when Raft has shut down). Operations still
    /// queued are dropped: their callers get `SHUTTING_DOWN`.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut proposals = JoinSet::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            let next = async {
                let permit = slots.clone().acquire_owned().await.ok()?;
                let first = self.rx.recv().await?;
                Some((permit, first))
            };
            let (permit, first) = tokio::select! {
                () = &mut stop => break,
                next = next => match next {
                    Some(next) => next,
                    None => break,
                },
            };
            let mut bytes = first.op.approx_size();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
                match self.rx.try_recv() {
                    Ok(next) => {
                        bytes += next.op.approx_size();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            let term = self.raft.metrics().borrow().current_term;
            let applied_ms = self.applied.borrow().journal.clock_ms;
            let clock_ms = self.clock.read(term, applied_ms, Instant::now());
            let (raft, metrics, limits) = (self.raft.clone(), self.metrics.clone(), self.limits);
            let links = self.links.clone();
            proposals.spawn(async move {
                propose(&raft, &links, batch, clock_ms, limits, &metrics).await;
                drop(permit);
            });
            // Reap finished proposals so the set stays small.
            while proposals.try_join_next().is_some() {}
        }
        while proposals.join_next().await.is_some() {}
    }
}

/// The write gate of this node as leader ([`health::gate`]), from openraft's metrics and the
/// links' contact times.
pub(super) fn leader_gate(m: &RaftMetrics, limits: GateLimits, links: &Links) -> Gate {
    let membership = m.membership_config.membership();
    // Every write asks: the usual answer comes without collecting voters or link times.
    if health::quorum_fresh(
        membership.voter_ids().count(),
        m.millis_since_quorum_ack,
        limits.ack_within,
    ) {
        return Gate::Open;
    }
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    health::gate(
        m.id,
        &voters,
        m.millis_since_quorum_ack,
        limits.ack_within,
        &links.last_alive(),
        limits.alive_within,
    )
}

/// The two windows of the write gate.
#[derive(Debug, Clone, Copy)]
pub(super) struct GateLimits {
    /// A quorum acknowledgement this recent opens the gate (`--election-timeout-max-ms`).
    pub ack_within: Duration,
    /// A peer that sent anything this recently is up ([`health::alive_within`]).
    pub alive_within: Duration,
}

impl GateLimits {
    pub fn of(cfg: &NodeConfig) -> Self {
        Self {
            ack_within: cfg.election_timeout_max,
            alive_within: health::alive_within(cfg.partition_detection),
        }
    }
}

/// How often a wait on the gate looks again: link contact has no watch to wake it.
pub(super) const GATE_POLL: Duration = Duration::from_millis(25);

/// Resolves when the leader stopped leading, or has gone without a quorum acknowledgement for
/// longer than `limits.ack_within` while no majority is up on its links: a write in flight then
/// has an unknown outcome. A majority that is up but slow keeps the write waiting for its
/// deadline.
async fn quorum_lost(raft: &Raft, limits: GateLimits, links: &Links) {
    let mut rx = raft.metrics();
    loop {
        // Cloned: holding the watch's borrow can stall Raft.
        let m = rx.borrow_and_update().clone();
        let lost =
            m.current_leader != Some(m.id) || leader_gate(&m, limits, links) == Gate::Unreachable;
        if lost {
            return;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(GATE_POLL) => {}
        }
    }
}

async fn propose(
    raft: &Raft,
    links: &Links,
    batch: Vec<Pending>,
    clock_ms: u64,
    limits: Limits,
    metrics: &Metrics,
) {
    let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.op, p.reply)).unzip();
    let count = ops.len();
    let proposal = Proposal {
        operations: ops,
        clock_ms,
        initial_window_ms: limits.initial_window_ms,
        set_window_ms: None,
    };
    let started = Instant::now();
    let timeout = limits.write_timeout;
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, raft.client_write(Arc::new(proposal))) => Some(r),
        () = quorum_lost(raft, limits.gate, links) => None,
    };
    let result = match outcome {
        None => Err(WriteFailure::outcome_unknown(
            "the leader lost its quorum while the write was in flight",
        )),
        Some(Err(_)) => Err(WriteFailure::outcome_unknown(format!(
            "not committed within {timeout:?}"
        ))),
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
        // openraft answers ForwardToLeader both when this node was no longer leader at the
        // call (nothing appended) and when the entry it appended was truncated by a newer
        // leader; a node that still holds that entry can win a later election and commit it
        // (Raft's "figure 8"). The two cannot be told apart here, so the outcome is unknown.
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(WriteFailure::outcome_unknown(
                "leadership changed while the operation was being proposed",
            )
            .with_leader(f.leader_node.map(|n| n.name)))
        }
        Err(RaftError::APIError(e)) => Err(WriteFailure::new(ErrorCode::Internal, e.to_string())),
        // Raft stopped with the entry possibly appended and replicated: not a refusal.
        Err(RaftError::Fatal(e)) => Err(WriteFailure::outcome_unknown(format!(
            "Raft stopped while the operation was being proposed ({e})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use openraft::error::ForwardToLeader;

    use super::*;

    #[test]
    fn a_leadership_change_during_a_proposal_is_an_unknown_outcome_not_a_refusal() {
        let lost: ClientWriteResult = Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
            ForwardToLeader::empty(),
        )));
        let err = classify(lost, 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::Timeout, "{err:?}");
        assert!(err.code.is_retryable());
    }
}
