//! Leadership handoff: the leader hands over to its most caught-up follower before it stops
//! (SIGTERM) or when asked (`POST /admin/v1/leadership/transfer`), so a planned restart or
//! removal of the leader costs no election timeout. openraft 0.9 has no leader transfer; this
//! builds one from what it has:
//! 1. new proposals wait (`Node::proposals`, held for writing) and those in flight finish, so
//!    the log stops growing;
//! 2. the chosen follower holds the leader's whole log;
//! 3. openraft refuses votes while a voter's leader lease runs (`--election-timeout-max-ms`
//!    since it last heard from the leader; on the leader, since it was elected). The leader's
//!    own lease has run out once it has led that long; when the leader and the chosen follower
//!    alone are no majority, heartbeats stop until the other followers' leases run out too;
//! 4. the chosen follower is asked to stand (`PeerRequest::Campaign`). Its log is as long as
//!    anyone's, so the leader grants its vote (and steps down), and so does every follower
//!    whose lease ran out.
//!
//! The held writes then go to the new leader (`submit::route`). Every step has a deadline. On
//! failure heartbeats resume and this node goes on leading, unless the chosen follower's
//! election deposed it already: then the cluster elects as after any loss of its leader.

use raft_api::admin::TransferResult;
use tokio::time::Instant;

use super::health::millis;
use super::membership::{MembershipError, require_leader};
use super::node::Node;
use crate::transport::frame::{PeerRequest, PeerResponse};
use crate::types::{NodeId, RaftMetrics};

/// Why a handoff is made: a shutdown also keeps the old leader from standing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Asked through the admin API; the node stays a voter that may lead again.
    Transfer,
    /// SIGTERM: the node stops right after.
    Shutdown,
}

/// Hand leadership to `requested` (a voter) or to the most caught-up follower that is up.
pub async fn hand_off(
    node: &Node,
    requested: Option<NodeId>,
    purpose: Purpose,
) -> Result<TransferResult, MembershipError> {
    let started = Instant::now();
    require_leader(node)?;
    // 1. No new proposals; those in flight end within the write timeout.
    let _held = tokio::time::timeout(node.cfg.write_timeout, node.proposals.write())
        .await
        .map_err(|_| {
            MembershipError::Incomplete(format!(
                "writes in flight did not finish within {:?}; leadership stays",
                node.cfg.write_timeout
            ))
        })?;
    let m = require_leader(node)?;
    let membership = m.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        return Err(MembershipError::Refused(
            "a membership change is in progress; hand over once it is complete".into(),
        ));
    }
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let alive = node.peer_contact();
    let target = choose_target(
        node.id,
        &voters,
        &matched_indexes(&m),
        &|id| {
            alive
                .get(&id)
                .is_some_and(|d| *d <= node.cfg.partition_detection)
        },
        requested,
    )
    .map_err(MembershipError::Refused)?;
    let last = m.last_log_index.unwrap_or(0);
    let mut heartbeats = Heartbeats::new(node);
    caught_up(node, target, last).await?;
    // 3. The leases that would refuse the vote.
    let lease = node.cfg.election_timeout_max + node.cfg.heartbeat;
    if !pair_is_majority(voters.len()) {
        heartbeats.stop();
        tokio::time::sleep(lease).await;
    }
    let since = node.leading_since().unwrap_or(started);
    tokio::time::sleep_until(since + lease).await;
    // 4. Stand.
    campaign(node, target, m.current_term, last).await?;
    let leader = new_leader(node).await?;
    drop(heartbeats);
    if purpose == Purpose::Shutdown {
        node.raft.runtime_config().elect(false);
    }
    let term = node.raft_metrics().current_term;
    let name = node
        .member(&node.raft_metrics(), leader)
        .map(|member| member.name)
        .unwrap_or_default();
    let took = started.elapsed();
    tracing::info!(
        to = leader,
        term,
        took_ms = millis(took),
        "leadership handed over"
    );
    node.metrics.leadership_handoffs.inc();
    Ok(TransferResult {
        from_node_id: node.id.to_string(),
        leader_node_id: leader.to_string(),
        leader_id: name,
        term,
        took_ms: millis(took),
    })
}

/// The follower to hand over to: `requested` if it is a voter other than `me`, else the voter
/// that is up (`alive`) with the highest matched index (the lowest id among equals).
fn choose_target(
    me: NodeId,
    voters: &[NodeId],
    matched: &[(NodeId, u64)],
    alive: &dyn Fn(NodeId) -> bool,
    requested: Option<NodeId>,
) -> Result<NodeId, String> {
    if let Some(id) = requested {
        return if id == me {
            Err(format!("node {id} leads already"))
        } else if voters.contains(&id) {
            Ok(id)
        } else {
            Err(format!("node {id} is not a voter"))
        };
    }
    let index_of = |id: NodeId| {
        matched
            .iter()
            .find(|(m, _)| *m == id)
            .map_or(0, |(_, index)| *index)
    };
    voters
        .iter()
        .copied()
        .filter(|id| *id != me && alive(*id))
        .max_by_key(|id| (index_of(*id), std::cmp::Reverse(*id)))
        .ok_or_else(|| "no other voter is up to take over".into())
}

/// Whether the leader and one follower make a majority of `voters` (one, two or three).
fn pair_is_majority(voters: usize) -> bool {
    2 > voters / 2
}

fn matched_indexes(m: &RaftMetrics) -> Vec<(NodeId, u64)> {
    m.replication
        .iter()
        .flatten()
        .map(|(id, log)| (*id, log.map_or(0, |l| l.index)))
        .collect()
}

/// 2. Wait until `target` holds the log through `last`.
async fn caught_up(node: &Node, target: NodeId, last: u64) -> Result<(), MembershipError> {
    let patience = node.cfg.election_timeout_max * 5;
    let mut rx = node.raft.metrics();
    let done = rx.wait_for(|m| {
        m.current_leader != Some(node.id)
            || matched_indexes(m)
                .iter()
                .any(|(id, index)| *id == target && *index >= last)
    });
    match tokio::time::timeout(patience, done).await {
        Ok(Ok(m)) if m.current_leader == Some(node.id) => Ok(()),
        Ok(Ok(_)) => Err(MembershipError::Incomplete(
            "this node stopped leading before the handoff began".into(),
        )),
        Ok(Err(_)) => Err(MembershipError::Internal("Raft has stopped".into())),
        Err(_) => Err(MembershipError::Incomplete(format!(
            "node {target} did not catch up with index {last} within {patience:?}; leadership stays"
        ))),
    }
}

/// 4. Ask `target` to stand for election.
async fn campaign(
    node: &Node,
    target: NodeId,
    term: u64,
    last_log_index: u64,
) -> Result<(), MembershipError> {
    let m = node.raft_metrics();
    let member = node
        .member(&m, target)
        .ok_or_else(|| MembershipError::Refused(format!("node {target} is not a member")))?;
    let link = node.links.get(target, &member.peer_addr);
    let request = PeerRequest::Campaign {
        term,
        last_log_index,
    };
    match link.call(request, node.cfg.election_timeout_max).await {
        Ok(PeerResponse::Ack) => Ok(()),
        Ok(PeerResponse::Refused(why)) => Err(MembershipError::Incomplete(format!(
            "{} would not stand: {why}; leadership stays",
            member.name
        ))),
        Ok(other) => Err(MembershipError::Incomplete(format!(
            "{} answered {other:?} to the handoff; leadership stays",
            member.name
        ))),
        Err(e) => Err(MembershipError::Incomplete(format!(
            "cannot ask {} to stand ({e}); leadership stays",
            member.name
        ))),
    }
}

/// Wait until a leader other than this node is known.
async fn new_leader(node: &Node) -> Result<NodeId, MembershipError> {
    let patience = node.cfg.election_timeout_max * 3;
    let mut rx = node.raft.metrics();
    let elected = rx.wait_for(|m| m.current_leader.is_some_and(|l| l != node.id));
    match tokio::time::timeout(patience, elected).await {
        Ok(Ok(m)) => m
            .current_leader
            .ok_or_else(|| MembershipError::Internal("leader vanished".into())),
        Ok(Err(_)) => Err(MembershipError::Internal("Raft has stopped".into())),
        Err(_) => {
            let still = node.is_leader(&node.raft_metrics());
            Err(MembershipError::Incomplete(format!(
                "no other leader within {patience:?}; {}",
                if still {
                    "this node still leads"
                } else {
                    "the cluster elects a leader as after any leader loss"
                }
            )))
        }
    }
}

/// On a follower: the leader of `term` asks it to stand. Honoured only from that leader, in
/// that term, with the whole log it gave.
pub async fn stand(
    node: &Node,
    from: Option<NodeId>,
    term: u64,
    last_log_index: u64,
) -> PeerResponse {
    // The leader counts an entry matched once this node acknowledged it; this node's own
    // metrics may show it a moment later.
    let mut rx = node.raft.metrics();
    let holds = async {
        rx.wait_for(|m| m.last_log_index.unwrap_or(0) >= last_log_index)
            .await
            .is_ok()
    };
    let _ = tokio::time::timeout(node.cfg.election_timeout_min, holds).await;
    let m = node.raft_metrics();
    let refusal = if from.is_some_and(|f| Some(f) != m.current_leader) || m.current_leader.is_none()
    {
        Some(format!(
            "the request does not come from the leader ({:?})",
            m.current_leader
        ))
    } else if m.current_term != term {
        Some(format!(
            "term {term} is not the current term {}",
            m.current_term
        ))
    } else if m.last_log_index.unwrap_or(0) < last_log_index {
        Some(format!(
            "its log ends at {} before {last_log_index}",
            m.last_log_index.unwrap_or(0)
        ))
    } else if !m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == node.id)
    {
        Some("it is not a voter".into())
    } else {
        None
    };
    if let Some(why) = refusal {
        return PeerResponse::Refused(why);
    }
    tracing::info!(term, "the leader hands over: standing for election");
    match node.raft.trigger().elect().await {
        Ok(()) => PeerResponse::Ack,
        Err(e) => PeerResponse::Refused(format!("Raft has stopped: {e}")),
    }
}

/// Heartbeats off while a handoff waits for leases; back on when dropped (also on failure).
struct Heartbeats<'a> {
    node: &'a Node,
    stopped: bool,
}

impl<'a> Heartbeats<'a> {
    fn new(node: &'a Node) -> Self {
        Heartbeats {
            node,
            stopped: false,
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.node.raft.runtime_config().heartbeat(false);
    }
}

impl Drop for Heartbeats<'_> {
    fn drop(&mut self) {
        if self.stopped {
            self.node.raft.runtime_config().heartbeat(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_caught_up_follower_that_is_up_is_chosen() {
        let up = |id: NodeId| id != 4;
        let matched = [(2, 90), (3, 100), (4, 120)];
        assert_eq!(choose_target(1, &[1, 2, 3, 4], &matched, &up, None), Ok(3));
        let equal = [(2, 100), (3, 100)];
        assert_eq!(choose_target(1, &[1, 2, 3], &equal, &up, None), Ok(2));
    }

    #[test]
    fn a_requested_target_must_be_another_voter() {
        let up = |_| true;
        assert_eq!(choose_target(1, &[1, 2, 3], &[], &up, Some(3)), Ok(3));
        assert!(choose_target(1, &[1, 2, 3], &[], &up, Some(1)).is_err());
        assert!(choose_target(1, &[1, 2, 3], &[], &up, Some(9)).is_err());
        assert!(choose_target(1, &[1], &[], &up, None).is_err());
    }

    #[test]
    fn leader_and_one_follower_are_a_majority_of_at_most_three() {
        assert!(pair_is_majority(2));
        assert!(pair_is_majority(3));
        assert!(!pair_is_majority(4));
        assert!(!pair_is_majority(5));
    }
}
