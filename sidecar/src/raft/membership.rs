//! Membership changes for the admin API: initialize, add learner, promote, graceful remove.
//! Every blocking openraft call is wrapped in a deadline; removals that would leave fewer than
//! a quorum of healthy, caught-up voters (in the old or the new configuration, since joint
//! consensus needs both) are refused before anything is proposed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use raft_api::admin::{MemberSpec, MembershipResult};

use super::node::Node;
use crate::transport::frame::PeerRequest;
use crate::types::{LogId, Member, NodeId, RaftMetrics};

/// A member within this many entries of the leader is caught up, whatever the time.
pub const PROMOTE_MAX_LAG: u64 = 100;
/// A member that has every entry the leader had this long ago is caught up, however many
/// entries are in flight: at thousands of writes a second a healthy follower is hundreds of
/// entries behind for a few milliseconds.
pub const CAUGHT_UP_WITHIN: Duration = Duration::from_secs(1);

/// Caught up: `matched` within [`PROMOTE_MAX_LAG`] entries of `last`, or behind the leader's log
/// by at most [`CAUGHT_UP_WITHIN`] (`behind`, from the leader's timeline; `None` when unknown).
pub fn caught_up(last: u64, matched: u64, behind: Option<Duration>) -> bool {
    last.saturating_sub(matched) <= PROMOTE_MAX_LAG || behind.is_some_and(|d| d <= CAUGHT_UP_WITHIN)
}
/// Deadline of every membership call.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<Member> },
    #[error("{0}")]
    Refused(String),
    #[error(
        "the change did not complete within {MEMBERSHIP_TIMEOUT:?}; it may still complete, repeat the call"
    )]
    Timeout,
    #[error("no leader is known")]
    NoLeader,
    /// A leadership handoff that did not happen (see its message for who leads now).
    #[error("{0}")]
    Incomplete(String),
    #[error("{0}")]
    Internal(String),
}

/// The facts a removal is judged on; built from metrics, judged by [`removal_is_safe`].
#[derive(Debug, Clone)]
pub struct VoterHealth {
    pub id: NodeId,
    /// Reachable recently and [`caught_up`].
    pub healthy: bool,
}

/// Removing `target` is safe when both the current voters and the voters after removal keep
/// a majority of healthy, caught-up members (joint consensus needs both majorities).
pub fn removal_is_safe(voters: &[VoterHealth], target: NodeId) -> Result<(), String> {
    let healthy_old = voters.iter().filter(|v| v.healthy).count();
    let old_quorum = voters.len() / 2 + 1;
    let remaining: Vec<&VoterHealth> = voters.iter().filter(|v| v.id != target).collect();
    if remaining.is_empty() {
        return Err("refusing to remove the last voter".into());
    }
    let healthy_new = remaining.iter().filter(|v| v.healthy).count();
    let new_quorum = remaining.len() / 2 + 1;
    if healthy_old < old_quorum {
        return Err(format!(
            "only {healthy_old} of {} voters are healthy and caught up; the current configuration has no safe quorum",
            voters.len()
        ));
    }
    if healthy_new < new_quorum {
        return Err(format!(
            "after removal only {healthy_new} of {} voters would be healthy and caught up (quorum {new_quorum})",
            remaining.len()
        ));
    }
    Ok(())
}

/// Health of each voter as the leader sees it: itself, and every voter heard within
/// `detection` and [`caught_up`] with `last` (the leader's last index; `behind` says how long
/// the leader's log has held entries past a matched index).
pub fn voter_health(
    me: NodeId,
    voters: impl Iterator<Item = NodeId>,
    contact: &HashMap<NodeId, Duration>,
    matched: &BTreeMap<NodeId, Option<LogId>>,
    last: u64,
    detection: Duration,
    behind: impl Fn(u64) -> Option<Duration>,
) -> Vec<VoterHealth> {
    voters
        .map(|id| {
            let healthy = id == me || {
                let fresh = contact.get(&id).is_some_and(|d| *d <= detection);
                let replicated = matched.get(&id).copied().flatten().map(|l| l.index);
                let index = replicated.unwrap_or(0);
                fresh && caught_up(last, index, replicated.and_then(&behind))
            };
            VoterHealth { id, healthy }
        })
        .collect()
}

/// [`voter_health`] of `node`'s voters from its metrics and peer contact times.
pub fn node_voter_health(node: &Node, m: &RaftMetrics) -> Vec<VoterHealth> {
    voter_health(
        node.id,
        m.membership_config.membership().voter_ids(),
        &node.peer_contact(),
        &m.replication.clone().unwrap_or_default(),
        m.last_log_index.unwrap_or(0),
        node.cfg.partition_detection,
        |matched| node.behind(matched),
    )
}

pub(super) fn require_leader(node: &Node) -> Result<RaftMetrics, MembershipError> {
    let m = node.raft_metrics();
    if node.is_leader(&m) {
        Ok(m)
    } else if m.current_leader.is_none() {
        Err(MembershipError::NoLeader)
    } else {
        Err(MembershipError::NotLeader {
            leader: m.current_leader.and_then(|l| node.member(&m, l)),
        })
    }
}

/// `POST /admin/v1/initialize`: bootstrap once; the same call again is a no-op.
pub async fn initialize(node: &Node, members: &[MemberSpec]) -> Result<bool, MembershipError> {
    if !members.iter().any(|m| m.node_id == node.id) {
        return Err(MembershipError::Refused(format!(
            "the member list must include this node (node id {})",
            node.id
        )));
    }
    let wanted: BTreeMap<NodeId, Member> =
        members.iter().map(|s| (s.node_id, member_of(s))).collect();
    if wanted.len() != members.len() {
        return Err(MembershipError::Refused(
            "the member list names a node id twice".into(),
        ));
    }
    let m = node.raft_metrics();
    if m.membership_config.log_id().is_some() {
        return same_initial_membership(&m, &wanted);
    }
    match deadline(node.raft.initialize(wanted.clone())).await? {
        Ok(()) => Ok(true),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            same_initial_membership(&node.raft_metrics(), &wanted)
        }
        Err(e) => Err(MembershipError::Internal(e.to_string())),
    }
}

fn same_initial_membership(
    m: &RaftMetrics,
    wanted: &BTreeMap<NodeId, Member>,
) -> Result<bool, MembershipError> {
    let current: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
    let asked: BTreeSet<NodeId> = wanted.keys().copied().collect();
    if current == asked {
        Ok(false)
    } else {
        Err(MembershipError::Refused(format!(
            "already initialized with voters {current:?}; refusing a different initialization {asked:?}"
        )))
    }
}

/// `POST /admin/v1/members`: add a learner (idempotent). Returns (added, log index).
pub async fn add_learner(
    node: &Node,
    spec: &MemberSpec,
) -> Result<MembershipResult, MembershipError> {
    let _turn = deadline(node.proposals.read()).await?;
    let m = require_leader(node)?;
    let membership = m.membership_config.membership();
    if let Some(existing) = membership.get_node(&spec.node_id) {
        if existing.peer_addr == spec.address {
            return Ok(result_added(
                false,
                m.membership_config.log_id().map_or(0, |l| l.index),
            ));
        }
        return Err(MembershipError::Refused(format!(
            "node {} is already a member at {}, not {}",
            spec.node_id, existing.peer_addr, spec.address
        )));
    }
    let resp = deadline(node.raft.add_learner(spec.node_id, member_of(spec), false))
        .await?
        .map_err(write_error)?;
    Ok(result_added(true, resp.log_id.index))
}

/// `POST /admin/v1/members/{id}/promote`: make a caught-up learner a voter.
pub async fn promote(node: &Node, id: NodeId) -> Result<MembershipResult, MembershipError> {
    let _turn = deadline(node.proposals.read()).await?;
    let m = require_leader(node)?;
    let membership = m.membership_config.membership();
    if membership.voter_ids().any(|v| v == id) {
        let index = m.membership_config.log_id().map_or(0, |l| l.index);
        return Ok(MembershipResult {
            added: None,
            promoted: Some(false),
            removed: None,
            log_index: index,
        });
    }
    if membership.get_node(&id).is_none() {
        return Err(MembershipError::Refused(format!(
            "node {id} is not a learner; add it first"
        )));
    }
    let last = m.last_log_index.unwrap_or(0);
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&id).copied().flatten())
        .map_or(0, |l| l.index);
    let lag = last.saturating_sub(matched);
    if !caught_up(last, matched, node.behind(matched)) {
        return Err(MembershipError::Refused(format!(
            "learner {id} lags {lag} entries behind the leader (limit {PROMOTE_MAX_LAG}, or everything the leader had {CAUGHT_UP_WITHIN:?} ago); wait for it to catch up"
        )));
    }
    let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
    let resp = deadline(node.raft.change_membership(change, false))
        .await?
        .map_err(write_error)?;
    Ok(MembershipResult {
        added: None,
        promoted: Some(true),
        removed: None,
        log_index: resp.log_id.index,
    })
}

/// `DELETE /admin/v1/members/{id}`: graceful removal. Answers once the new configuration is
/// committed and uniform (openraft's `change_membership` returns then).
pub async fn remove_member(node: &Node, id: NodeId) -> Result<MembershipResult, MembershipError> {
    let _turn = deadline(node.proposals.read()).await?;
    let m = require_leader(node)?;
    let membership = m.membership_config.membership();
    let index = m.membership_config.log_id().map_or(0, |l| l.index);
    let Some(member) = membership.get_node(&id).cloned() else {
        return Ok(MembershipResult {
            added: None,
            promoted: None,
            removed: Some(false),
            log_index: index,
        });
    };
    let is_voter = membership.voter_ids().any(|v| v == id);
    let change = if is_voter {
        removal_is_safe(&node_voter_health(node, &m), id).map_err(MembershipError::Refused)?;
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    let resp = deadline(node.raft.change_membership(change, false))
        .await?
        .map_err(write_error)?;
    if id != node.id {
        // Tell the removed node so it stops at once (best effort; it also learns it by itself).
        let link = node.links.get(id, &member.peer_addr);
        let term = m.current_term;
        node.spawn_errand(async move {
            let _ = link
                .call(
                    PeerRequest::Removed { term, target: id },
                    Duration::from_secs(2),
                )
                .await;
        });
        node.links.retain(|peer| *peer != id);
    }
    Ok(MembershipResult {
        added: None,
        promoted: None,
        removed: Some(true),
        log_index: resp.log_id.index,
    })
}

fn member_of(spec: &MemberSpec) -> Member {
    Member {
        name: spec.name.clone(),
        peer_addr: spec.address.clone(),
        admin_addr: spec.admin_address.clone().unwrap_or_default(),
    }
}

fn result_added(added: bool, log_index: u64) -> MembershipResult {
    MembershipResult {
        added: Some(added),
        promoted: None,
        removed: None,
        log_index,
    }
}

pub(super) async fn deadline<T>(fut: impl Future<Output = T>) -> Result<T, MembershipError> {
    tokio::time::timeout(MEMBERSHIP_TIMEOUT, fut)
        .await
        .map_err(|_| MembershipError::Timeout)
}

pub(super) fn write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, Member>>,
) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_node,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            MembershipError::Refused(c.to_string())
        }
        RaftError::Fatal(f) => MembershipError::Internal(f.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(health: &[(NodeId, bool)]) -> Vec<VoterHealth> {
        health
            .iter()
            .map(|(id, healthy)| VoterHealth {
                id: *id,
                healthy: *healthy,
            })
            .collect()
    }

    #[test]
    fn removing_a_healthy_member_of_a_healthy_three_is_safe() {
        assert!(removal_is_safe(&voters(&[(1, true), (2, true), (3, true)]), 3).is_ok());
    }

    #[test]
    fn removing_a_healthy_member_when_another_is_down_is_refused() {
        // {1,2} would remain with 2 down: quorum of 2 needs both.
        let err = removal_is_safe(&voters(&[(1, true), (2, false), (3, true)]), 3).unwrap_err();
        assert!(err.contains("after removal"), "{err}");
    }

    #[test]
    fn removing_the_unhealthy_member_is_allowed() {
        assert!(removal_is_safe(&voters(&[(1, true), (2, false), (3, true)]), 2).is_ok());
    }

    #[test]
    fn removal_without_a_current_quorum_is_refused() {
        let err = removal_is_safe(&voters(&[(1, true), (2, false), (3, false)]), 3).unwrap_err();
        assert!(err.contains("no safe quorum"), "{err}");
    }

    #[test]
    fn the_last_voter_is_never_removed() {
        assert!(removal_is_safe(&voters(&[(1, true)]), 1).is_err());
    }

    fn contact(ms: &[(NodeId, u64)]) -> HashMap<NodeId, Duration> {
        ms.iter()
            .map(|(id, ms)| (*id, Duration::from_millis(*ms)))
            .collect()
    }

    fn matched(indices: &[(NodeId, u64)]) -> BTreeMap<NodeId, Option<LogId>> {
        indices
            .iter()
            .map(|(id, i)| {
                (
                    *id,
                    Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), *i)),
                )
            })
            .collect()
    }

    #[test]
    fn a_voter_is_healthy_when_heard_lately_and_caught_up() {
        let detection = Duration::from_secs(1);
        let health = voter_health(
            1,
            [1, 2, 3, 4].into_iter(),
            &contact(&[(2, 100), (3, 5000), (4, 100)]),
            &matched(&[(2, 1000), (3, 1000), (4, 1000 - PROMOTE_MAX_LAG - 1)]),
            1000,
            detection,
            |_| None,
        );
        let healthy: Vec<(NodeId, bool)> = health.iter().map(|v| (v.id, v.healthy)).collect();
        // 1 is the leader itself; 3 is silent; 4 lags one entry too many.
        assert_eq!(healthy, vec![(1, true), (2, true), (3, false), (4, false)]);
    }

    #[test]
    fn a_voter_hundreds_of_entries_behind_for_milliseconds_is_healthy() {
        let behind = |index: u64| Some(Duration::from_millis(if index >= 700 { 30 } else { 1500 }));
        let health = voter_health(
            1,
            [1, 2, 3].into_iter(),
            &contact(&[(2, 10), (3, 10)]),
            &matched(&[(2, 760), (3, 600)]),
            1000,
            Duration::from_secs(1),
            behind,
        );
        let healthy: Vec<(NodeId, bool)> = health.iter().map(|v| (v.id, v.healthy)).collect();
        // 2 lacks 240 entries the leader got 30 ms ago; 3 lacks entries 1.5 s old.
        assert_eq!(healthy, vec![(1, true), (2, true), (3, false)]);
    }

    #[test]
    fn a_voter_never_replicated_to_is_not_healthy() {
        let health = voter_health(
            1,
            [1, 2].into_iter(),
            &contact(&[(2, 10)]),
            &BTreeMap::from([(2, None)]),
            500,
            Duration::from_secs(1),
            |_| Some(Duration::ZERO),
        );
        assert!(!health[1].healthy);
    }

    #[test]
    fn five_to_four_with_one_down_is_safe() {
        let v = voters(&[(1, true), (2, true), (3, true), (4, true), (5, false)]);
        assert!(removal_is_safe(&v, 4).is_ok());
        assert!(removal_is_safe(&v, 5).is_ok());
    }
}
