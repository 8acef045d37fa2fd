//! Linearizable reads (`?consistency=linearizable`): before a read is served from this node's
//! applied state, the leader confirms with a quorum that it still leads and names the index
//! every write acknowledged so far is at or below (openraft's read index); this node then
//! waits until it has applied that index. A follower asks its leader for the index over the
//! peer transport, as etcd's follower reads do. Bounded by `--write-timeout-ms`.

use openraft::error::{CheckIsLeaderError, RaftError};
use raft_api::ErrorCode;
use tokio::time::Instant;

use super::node::{Lifecycle, Node};
use crate::transport::frame::{PeerRequest, PeerResponse};
use crate::types::{Member, NodeId};
use crate::write::WriteFailure;

/// Returns once this node's applied state reflects every write acknowledged before the call.
pub async fn linearizable(node: &Node) -> Result<(), WriteFailure> {
    let deadline = Instant::now() + node.cfg.write_timeout;
    if node.lifecycle() == Lifecycle::Removed || !node.is_member(&node.raft_metrics()) {
        return Err(WriteFailure::new(
            ErrorCode::NotInitialized,
            "this node is not a member of a cluster: it cannot serve a linearizable read",
        ));
    }
    let m = node.raft_metrics();
    let index = match m.current_leader {
        _ if node.is_leader(&m) => read_index(node, deadline).await?,
        Some(leader) => ask_leader(node, leader, deadline).await?,
        None => {
            return Err(WriteFailure::new(
                ErrorCode::NoLeader,
                "no leader known to confirm a linearizable read",
            ));
        }
    };
    match tokio::time::timeout_at(deadline, node.applied_through(index)).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(WriteFailure::new(
            ErrorCode::ShuttingDown,
            "Raft has stopped",
        )),
        Err(_) => Err(WriteFailure::new(
            ErrorCode::Timeout,
            format!("this node has not applied the read index {index} in time; retry"),
        )),
    }
}

/// On the leader: confirm leadership with a quorum; the Raft index a read must see.
pub(super) async fn read_index(node: &Node, deadline: Instant) -> Result<u64, WriteFailure> {
    match tokio::time::timeout_at(deadline, node.raft.get_read_log_id()).await {
        Ok(Ok((read, _))) => Ok(read.map_or(0, |l| l.index)),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
            Err(not_leader(f.leader_node))
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
            Err(WriteFailure::no_quorum())
        }
        Ok(Err(RaftError::Fatal(e))) => {
            Err(WriteFailure::new(ErrorCode::ShuttingDown, e.to_string()))
        }
        Err(_) => Err(WriteFailure::new(
            ErrorCode::Timeout,
            "the leader could not confirm its leadership with a quorum in time; retry",
        )),
    }
}

fn not_leader(leader: Option<Member>) -> WriteFailure {
    WriteFailure::new(
        ErrorCode::NoLeader,
        "leadership changed while confirming a linearizable read; retry",
    )
    .with_leader(leader.map(|l| l.name))
}

/// On a follower: the read index, from the leader.
async fn ask_leader(node: &Node, leader: NodeId, deadline: Instant) -> Result<u64, WriteFailure> {
    let (member, link) = node.leader_link(leader)?;
    let remaining = deadline.saturating_duration_since(Instant::now());
    match link.call(PeerRequest::ReadIndex, remaining).await {
        Ok(PeerResponse::ReadIndex(answer)) => answer,
        Ok(other) => Err(WriteFailure::new(
            ErrorCode::NoLeader,
            format!("the leader could not give a read index: {other:?}"),
        )
        .with_leader(Some(member.name))),
        Err(e) => Err(WriteFailure::new(
            ErrorCode::NoLeader,
            format!("cannot reach the leader for a read index: {e}"),
        )
        .with_leader(Some(member.name))),
    }
}
