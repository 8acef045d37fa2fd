//! The write path of one daemon operation: admit → find the leader → (on a follower: refuse
//! at once when the write cannot succeed, else forward over the peer transport) → on the
//! leader: quorum gate → batcher → the answering node waits until it has applied the operation
//! itself. Never waits past `--write-timeout-ms`.

use tokio::sync::oneshot;
use tokio::time::Instant;

use raft_api::ErrorCode;
use raft_api::daemon::PartitionState;

use super::batch::{GATE_POLL, GateLimits, Pending, leader_gate};
use super::health::{self, Gate};
use super::node::{Lifecycle, Node};
use crate::journal::{OpOutcome, StoredOperation};
use crate::operation;
use crate::transport::frame::{PeerRequest, PeerResponse};
use crate::transport::link::CallError;
use crate::types::NodeId;
use crate::write::{WriteFailure, WriteResult};

/// The answer of a submit on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    pub index: u64,
    pub term: u64,
    pub duplicate: bool,
}

/// Counts a submit in `Node::submits_in_flight` until dropped (also when the client goes away
/// mid-request), so shutdown can wait for the submits it admitted.
struct CountedSubmit<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> CountedSubmit<'a> {
    fn enter(counter: &'a tokio::sync::watch::Sender<usize>) -> Self {
        counter.send_modify(|n| *n += 1);
        CountedSubmit(counter)
    }
}

impl Drop for CountedSubmit<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Submit one operation from the local daemon: propose it (or forward it to the leader), then
/// wait until this node has applied it. `on_committed` runs once the leader has committed it,
/// before this node applied it (the `REPLICATED` status).
pub async fn submit(
    node: &Node,
    op: StoredOperation,
    on_committed: impl FnOnce(Submitted) + Send,
) -> Result<Submitted, WriteFailure> {
    let deadline = Instant::now() + node.cfg.write_timeout;
    let _counted = CountedSubmit::enter(&node.submits_in_flight);
    let result = submit_by(node, op, deadline, on_committed).await;
    match &result {
        Ok(s) if s.duplicate => {
            node.metrics.duplicate.inc();
        }
        Ok(_) => {
            node.metrics.replicated.inc();
            node.metrics.committed.inc();
        }
        Err(f) => node.metrics.count_failure(f.code),
    }
    result
}

async fn submit_by(
    node: &Node,
    op: StoredOperation,
    deadline: Instant,
    on_committed: impl FnOnce(Submitted) + Send,
) -> Result<Submitted, WriteFailure> {
    admit(node)?;
    // No leader known and no majority heard: do not wait for an election that cannot end.
    if node.raft_metrics().current_leader.is_none()
        && node.health().partition == PartitionState::Minority
    {
        return Err(WriteFailure::no_quorum());
    }
    let outcome = route(node, op, deadline).await?;
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
    await_applied(node, submitted.index, deadline).await?;
    Ok(submitted)
}

/// How many leaders one submit tries: leadership moves at most once or twice within a deadline.
const MAX_ROUTES: usize = 3;

/// Propose on this node when it leads, else forward to the leader. When the leader it went to
/// answers that it no longer leads (a handoff: the operation was not proposed) and another
/// leader is known at once, the operation goes there instead of back to the daemon.
async fn route(node: &Node, op: StoredOperation, deadline: Instant) -> WriteResult {
    let mut routes = 1;
    loop {
        let leader = await_leader(node, deadline).await?;
        let attempt = if leader == node.id {
            propose_as_leader(node, op.clone(), deadline).await
        } else {
            leader_in_contact(node, leader)?;
            forward(node, leader, op.clone(), deadline).await
        };
        match attempt {
            Err(f)
                if f.code == ErrorCode::NoLeader
                    && routes < MAX_ROUTES
                    && leader_moved(node, leader, deadline).await =>
            {
                routes += 1;
            }
            other => return other,
        }
    }
}

/// Whether a leader other than `from` is known, waiting briefly (one minimal election timeout,
/// within `deadline`) for it: the old leader of a handoff knows its successor when it answers,
/// the followers learn it from the successor's first append moments later.
async fn leader_moved(node: &Node, from: NodeId, deadline: Instant) -> bool {
    let until = (Instant::now() + node.cfg.election_timeout_min).min(deadline);
    let mut rx = node.raft.metrics();
    let moved = async {
        rx.wait_for(|m| m.current_leader.is_some_and(|l| l != from))
            .await
            .is_ok()
    };
    tokio::time::timeout_at(until, moved).await == Ok(true)
}

/// Refuse at once when this node cannot take operations at all.
fn admit(node: &Node) -> Result<(), WriteFailure> {
    match node.lifecycle() {
        Lifecycle::Stopping => Err(WriteFailure::new(
            ErrorCode::ShuttingDown,
            "node is shutting down",
        )),
        Lifecycle::Removed => Err(WriteFailure::new(
            ErrorCode::NotInitialized,
            "node was removed from the cluster",
        )),
        Lifecycle::Running if !node.is_member(&node.raft_metrics()) => Err(WriteFailure::new(
            ErrorCode::NotInitialized,
            "node is not a member of a cluster yet",
        )),
        Lifecycle::Running => Ok(()),
    }
}

/// The leader's id; during an election wait (briefly, within the deadline) for one.
async fn await_leader(node: &Node, deadline: Instant) -> Result<NodeId, WriteFailure> {
    let patience =
        (node.cfg.election_timeout_max * 3).min(deadline.saturating_duration_since(Instant::now()));
    let mut rx = node.raft.metrics();
    let waited = tokio::time::timeout(patience, rx.wait_for(|m| m.current_leader.is_some())).await;
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

/// On the leader, an operation a follower forwarded: counted in flight like a local submit,
/// so a SIGTERM lets it finish (or answer truly) before Raft stops.
pub(super) async fn forwarded(node: &Node, op: StoredOperation) -> WriteResult {
    // Checked again, never trusted: the sending follower checked it, but so could anyone
    // holding the token claim to have.
    if let Err(e) = operation::check_parsed(&op, node.cfg.max_operation_bytes) {
        return Err(WriteFailure::new(
            e.code(),
            format!("forwarded operation refused: {e}"),
        ));
    }
    let _counted = CountedSubmit::enter(&node.submits_in_flight);
    let deadline = Instant::now() + node.cfg.write_timeout;
    propose_as_leader(node, op, deadline).await
}

/// On the leader: gate on quorum, then hand the operation to the batcher.
pub(super) async fn propose_as_leader(
    node: &Node,
    op: StoredOperation,
    deadline: Instant,
) -> WriteResult {
    admit(node)?;
    // Held until the write is answered: a leadership handoff waits for it, and new writes
    // wait for the handoff (then find this node no longer leads, and go to the new leader).
    let _turn = node.proposal_turn(deadline).await?;
    let limits = GateLimits::of(&node.cfg);
    // Past this a write that could not be taken gets BUSY: the rest of the deadline is for
    // committing it. Never before peers had the time to look gone: cut off from a majority,
    // the leader answers NO_QUORUM, not BUSY.
    let now = Instant::now();
    let busy_at = deadline
        .checked_sub(node.cfg.write_timeout / 2)
        .unwrap_or(now)
        .max(now + limits.alive_within)
        .min(deadline);
    quorum_gate(node, limits, deadline, busy_at).await?;
    let (reply, answer) = oneshot::channel();
    let queued = async {
        node.batcher.send(Pending { op, reply }, busy_at).await?;
        answer
            .await
            .map_err(|_| WriteFailure::new(ErrorCode::ShuttingDown, "batcher stopped"))?
    };
    match tokio::time::timeout_at(deadline, queued).await {
        Ok(result) => result,
        Err(_) => Err(WriteFailure::outcome_unknown(
            "not committed before the write deadline",
        )),
    }
}

/// openraft 0.9 has no CheckQuorum: a leader cut off from the majority would accept writes
/// that hang. Refuse them (`NO_QUORUM`) unless a majority acknowledged us recently, or is up
/// on its links ([`Gate::Busy`]): then the write waits for acknowledgements until `busy_at`,
/// and gets `BUSY` past it. Overload slows writes down; only a majority that is gone refuses
/// them as lost.
async fn quorum_gate(
    node: &Node,
    limits: GateLimits,
    deadline: Instant,
    busy_at: Instant,
) -> Result<(), WriteFailure> {
    // Just elected, or a heartbeat round late: acknowledgements get one timeout to arrive.
    let unreachable_at = (Instant::now() + limits.ack_within).min(deadline);
    loop {
        let m = node.raft_metrics();
        if !node.is_leader(&m) {
            return Err(WriteFailure::new(
                ErrorCode::NoLeader,
                "this node is no longer the leader",
            )
            .with_leader(node.leader_name(&m)));
        }
        let now = Instant::now();
        match leader_gate(&m, limits, &node.links) {
            Gate::Open => return Ok(()),
            Gate::Busy if now >= busy_at => {
                return Err(WriteFailure::busy(
                    "a majority of voters is up but has not acknowledged the leader in time",
                )
                .with_leader(Some(node.cfg.name.clone())));
            }
            Gate::Unreachable if now >= unreachable_at => {
                return Err(WriteFailure::new(
                    ErrorCode::NoQuorum,
                    "the leader cannot reach a majority of voters (minority side of a partition?)",
                )
                .with_leader(Some(node.cfg.name.clone())));
            }
            Gate::Busy | Gate::Unreachable => {}
        }
        // A timer, not the metrics watch: under load the metrics change hundreds of times a
        // second, and every waiting write would wake on each change.
        tokio::time::sleep(GATE_POLL).await;
    }
}

/// On a follower, before forwarding: refuse at once when the write cannot succeed (see
/// [`health::forward_refusal`]). Contact is checked live, not from the monitor's last tick.
fn leader_in_contact(node: &Node, leader: NodeId) -> Result<(), WriteFailure> {
    let m = node.raft_metrics();
    let heard = node
        .peer_contact()
        .get(&leader)
        .is_some_and(|d| *d <= node.cfg.partition_detection);
    match health::forward_refusal(node.leader_verdict(&m), heard, node.health().partition) {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

/// On a follower: hand the operation to the leader over the peer transport.
async fn forward(
    node: &Node,
    leader: NodeId,
    op: StoredOperation,
    deadline: Instant,
) -> WriteResult {
    let (member, link) = node.leader_link(leader)?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut metrics = node.raft.metrics();
    let call = link.call(PeerRequest::Forward(op), remaining);
    tokio::pin!(call);
    let answer = tokio::select! {
        answer = &mut call => answer,
        _ = async { metrics.wait_for(|m| m.current_leader != Some(leader)).await.is_ok() } => {
            // A leader that handed over answers at once (committed, or refused unproposed);
            // one that is gone does not, and the outcome stays unknown.
            let grace = node.cfg.election_timeout_min.min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(grace, &mut call).await {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(WriteFailure::outcome_unknown(
                        "the leader changed while the write was forwarded",
                    ));
                }
            }
        }
    };
    match answer {
        Ok(PeerResponse::Forward(result)) => result,
        Ok(other) => Err(WriteFailure::new(
            ErrorCode::NoLeader,
            format!("leader could not take the write: {other:?}"),
        )
        .with_leader(Some(member.name))),
        Err(CallError::Timeout { .. }) => Err(WriteFailure::outcome_unknown(
            "the leader did not answer in time",
        )),
        // Never sent: safe to report as "no leader reachable".
        Err(e @ CallError::Unreachable { .. }) => Err(WriteFailure::new(
            ErrorCode::NoLeader,
            format!("cannot reach the leader: {e}"),
        )
        .with_leader(Some(member.name))),
        // Sent, then the connection failed: the leader may have committed it.
        Err(e) => Err(WriteFailure::outcome_unknown(format!(
            "connection to the leader failed mid-request ({e})"
        ))),
    }
}

/// Wait until this node's journal holds `index`.
async fn await_applied(node: &Node, index: u64, deadline: Instant) -> Result<(), WriteFailure> {
    let mut rx = node.journal.subscribe();
    match tokio::time::timeout_at(deadline, rx.wait_for(|s| s.journal.last_index() >= index)).await
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
