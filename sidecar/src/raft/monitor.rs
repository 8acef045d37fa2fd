//! Background watcher of one node, every tick:
//! - partition detection (`partitionState`, `quorumAvailable`) from peer contact times and the
//!   leader's quorum acknowledgements;
//! - the split-vote watchdog (openraft 0.9 draws one election timeout per process, so split
//!   votes can repeat): no leader for > 2×max + 2 ticks → sleep U(0, max) → elect;
//! - removed-node detection from the committed membership, or by asking peers after a long
//!   leaderless spell;
//! - the compaction cap (`--max-log-size`);
//! - events (`/v1/events`) and gauges from state transitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use raft_api::daemon::{ConsensusEvent, MemberRole, PartitionState};
use rand::Rng;

use super::node::{Health, Lifecycle, Node};
use super::types::{NodeId, RaftMetrics};
use crate::metrics::{PeerLabel, RoleLabel};
use crate::transport::frame::{PeerRequest, PeerResponse};

const TICK: Duration = Duration::from_millis(100);

/// What the previous tick saw, to turn state into transitions.
#[derive(Default)]
struct Seen {
    leader: Option<NodeId>,
    term: u64,
    partition: Option<PartitionState>,
    purged: Option<u64>,
    members: BTreeMap<NodeId, String>,
    leaderless_since: Option<Instant>,
    last_membership_probe: Option<Instant>,
    /// This node has appeared in an applied (hence committed) membership since it started.
    was_member: bool,
    /// When this node became the leader (None while it is not).
    leading_since: Option<Instant>,
    /// The follower's background question to its leader (see `probe_leader`).
    leader_probe: Option<tokio::task::JoinHandle<()>>,
    last_leader_probe: Option<Instant>,
}

pub async fn run(node: Arc<Node>) {
    let started = Instant::now();
    let mut seen = Seen {
        leaderless_since: Some(started),
        ..Seen::default()
    };
    let mut stop = Box::pin(node.shutdown_signal());
    let mut interval = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = interval.tick() => {}
        }
        if node.lifecycle() == Lifecycle::Removed {
            publish_removed(&node);
            continue;
        }
        let m = node.raft_metrics();
        if node.is_leader(&m) {
            seen.leading_since.get_or_insert_with(Instant::now);
        } else {
            seen.leading_since = None;
        }
        let health = assess(
            &node,
            &m,
            seen.leading_since.map(|t| t.elapsed()),
            started.elapsed(),
        );
        // Forget links to peers that are no longer members (their sockets close).
        let membership = m.membership_config.membership();
        node.links.retain(|id| membership.get_node(id).is_some());
        emit_transitions(&node, &m, &health, &mut seen);
        update_gauges(&node, &m, &health);
        node.health.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
        probe_leader(&node, &m, &mut seen);
        watchdog(&node, &m, &mut seen).await;
        detect_removal(&node, &m, &mut seen).await;
        cap_log(&node, &m).await;
    }
}

/// `leading_for`: how long this node has been the leader (None when it is not); `uptime`: how
/// long this monitor has run (a node that has heard from nobody yet is silent only that long).
fn assess(node: &Node, m: &RaftMetrics, leading_for: Option<Duration>, uptime: Duration) -> Health {
    let detection = node.cfg.partition_detection;
    let contact = node.peer_contact();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let peers: Vec<NodeId> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| *id != node.id)
        .collect();
    let last_contact: HashMap<NodeId, Duration> = contact
        .iter()
        .filter(|(id, _)| peers.contains(id))
        .map(|(id, d)| (*id, *d))
        .collect();
    let heard = |id: &NodeId| contact.get(id).is_some_and(|d| *d <= detection);
    if voters.is_empty() {
        return Health {
            partition: PartitionState::Healthy,
            quorum_available: false,
            last_contact,
        };
    }
    let majority = voters.len() / 2 + 1;
    let reachable_voters = voters.iter().filter(|v| **v == node.id || heard(v)).count();
    let all_heard = peers.iter().all(heard);
    let (partition, quorum) = if node.is_leader(m) {
        // Right after an election no acknowledgement has arrived yet: not a partition.
        let acked = voters.len() <= 1
            || match m.millis_since_quorum_ack {
                Some(ms) => ms <= super::node::millis(detection),
                None => leading_for.is_none_or(|d| d <= detection),
            };
        match (acked, all_heard) {
            (false, _) => (PartitionState::Minority, false),
            (true, true) => (PartitionState::Healthy, true),
            (true, false) => (PartitionState::Degraded, true),
        }
    } else {
        let leader_fresh = m.current_leader.is_some_and(|l| heard(&l));
        if leader_fresh {
            // The leader's own verdict: its followers share its minority.
            match leader_verdict(node, m) {
                Some(PartitionState::Minority) => return minority_by_leader(last_contact),
                Some(PartitionState::Degraded) => (PartitionState::Degraded, true),
                _ => (PartitionState::Healthy, true),
            }
        } else if reachable_voters < majority {
            (PartitionState::Minority, false)
        } else {
            (PartitionState::Leaderless, false)
        }
    };
    // A node that just started or just saw an election is not "partitioned" yet.
    let partition = match partition {
        PartitionState::Leaderless | PartitionState::Minority
            if !silent_long_enough(node, m, detection, uptime) =>
        {
            PartitionState::Healthy
        }
        p => p,
    };
    Health {
        partition,
        quorum_available: quorum,
        last_contact,
    }
}

/// What the leader (as this node knows it) last said about itself, if it said so within two
/// probe periods and still leads in the current term.
pub(super) fn leader_verdict(node: &Node, m: &RaftMetrics) -> Option<PartitionState> {
    let report = *node
        .leader_report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (from, view, at) = report?;
    (Some(from) == m.current_leader
        && view.leading
        && view.term == m.current_term
        && at.elapsed() <= probe_every(node) * 2)
        .then_some(view.partition)
}

/// How often a follower asks its leader for its verdict: four times per detection window.
fn probe_every(node: &Node) -> Duration {
    (node.cfg.partition_detection / 4).clamp(TICK, Duration::from_secs(1))
}

/// A follower whose leader reports no quorum: writes through it would be refused anyway.
fn minority_by_leader(last_contact: HashMap<NodeId, Duration>) -> Health {
    Health {
        partition: PartitionState::Minority,
        quorum_available: false,
        last_contact,
    }
}

/// On a follower, ask the leader for its verdict (`PeerRequest::Health`) a few times per
/// detection window, in the background so an unresponsive leader never stalls the monitor.
fn probe_leader(node: &Arc<Node>, m: &RaftMetrics, seen: &mut Seen) {
    let Some(leader) = m.current_leader.filter(|l| *l != node.id) else {
        return;
    };
    let due = seen
        .last_leader_probe
        .is_none_or(|t| t.elapsed() >= probe_every(node));
    let busy = seen.leader_probe.as_ref().is_some_and(|h| !h.is_finished());
    let Some(member) = node.member(m, leader).filter(|_| due && !busy) else {
        return;
    };
    seen.last_leader_probe = Some(Instant::now());
    let link = node.links.get(leader, &member.peer_addr);
    let node = node.clone();
    seen.leader_probe = Some(tokio::spawn(async move {
        if let Ok(PeerResponse::Health(view)) = link
            .call(PeerRequest::Health, node.cfg.partition_detection)
            .await
        {
            *node
                .leader_report
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((leader, view, Instant::now()));
        }
    }));
}

/// True when the leader has been missing (or quorum unacknowledged) longer than the detection
/// window: either no contact with the leader for that long, or no leader at all.
fn silent_long_enough(node: &Node, m: &RaftMetrics, detection: Duration, uptime: Duration) -> bool {
    if node.is_leader(m) {
        return true;
    }
    let contact = node.peer_contact();
    let since_leader = m.current_leader.and_then(|l| contact.get(&l).copied());
    let since_any = contact.values().min().copied();
    since_leader.or(since_any).unwrap_or(uptime) > detection
}

fn emit_transitions(node: &Node, m: &RaftMetrics, health: &Health, seen: &mut Seen) {
    let send = |ev: ConsensusEvent| {
        let _ = node.events.send(ev);
    };
    if m.current_leader != seen.leader {
        match m.current_leader {
            Some(leader) => {
                node.metrics.leader_changes.inc();
                let leader_id = node
                    .member(m, leader)
                    .map_or_else(|| leader.to_string(), |mem| mem.name);
                send(ConsensusEvent::LeaderElected {
                    leader_id,
                    term: m.current_term,
                });
            }
            None => send(ConsensusEvent::LeaderLost { term: seen.term }),
        }
        seen.leader = m.current_leader;
    }
    seen.term = m.current_term;
    let was_bad = matches!(
        seen.partition,
        Some(PartitionState::Minority | PartitionState::Leaderless)
    );
    let is_bad = matches!(
        health.partition,
        PartitionState::Minority | PartitionState::Leaderless
    );
    if is_bad && !was_bad {
        node.metrics.partitions_detected.inc();
        send(ConsensusEvent::PartitionDetected {
            node_id: node.cfg.name.clone(),
            health: health.partition,
        });
    } else if was_bad && !is_bad {
        send(ConsensusEvent::PartitionRecovered {
            new_leader: node.leader_name(m),
        });
    }
    seen.partition = Some(health.partition);
    let purged = m.purged.map(|p| p.index);
    if let (Some(now), Some(before)) = (purged, seen.purged)
        && now > before
    {
        let snapshot_index = m.snapshot.map_or(0, |s| s.index);
        send(ConsensusEvent::LogCompacted {
            entries_removed: now - before,
            snapshot_index,
        });
    } else if let (Some(now), None) = (purged, seen.purged) {
        send(ConsensusEvent::LogCompacted {
            entries_removed: now + 1,
            snapshot_index: m.snapshot.map_or(0, |s| s.index),
        });
    }
    seen.purged = purged;
    // Members by id with their names (events name members; ids are internal).
    let members: BTreeMap<NodeId, String> = m
        .membership_config
        .membership()
        .nodes()
        .map(|(id, member)| (*id, member.name.clone()))
        .collect();
    if !seen.members.is_empty() || m.membership_config.log_id().is_some() {
        for (id, name) in &members {
            if !seen.members.contains_key(id) {
                send(ConsensusEvent::MemberJoined {
                    node_id: name.clone(),
                });
            }
        }
        for (id, name) in &seen.members {
            if !members.contains_key(id) {
                send(ConsensusEvent::MemberRemoved {
                    node_id: name.clone(),
                });
                let label = PeerLabel { peer: name.clone() };
                node.metrics.peer_last_contact.remove(&label);
                node.metrics.replication_lag.remove(&label);
            }
        }
    }
    seen.members = members;
}

fn update_gauges(node: &Node, m: &RaftMetrics, health: &Health) {
    let metrics = &node.metrics;
    let last = m.last_log_index.unwrap_or(0);
    let purged = m.purged.map_or(0, |p| p.index + 1);
    metrics.log_size.set(
        i64::try_from(last.saturating_sub(purged) + u64::from(m.last_log_index.is_some()))
            .unwrap_or(0),
    );
    metrics
        .current_term
        .set(i64::try_from(m.current_term).unwrap_or(i64::MAX));
    metrics.is_leader.set(i64::from(node.is_leader(m)));
    metrics.set_partition_state(health.partition);
    metrics
        .quorum_available
        .set(i64::from(health.quorum_available));
    let membership = m.membership_config.membership();
    let voters = i64::try_from(membership.voter_ids().count()).unwrap_or(0);
    let learners = i64::try_from(membership.learner_ids().count()).unwrap_or(0);
    metrics
        .members
        .get_or_create(&RoleLabel::from(MemberRole::Voter))
        .set(voters);
    metrics
        .members
        .get_or_create(&RoleLabel::from(MemberRole::Learner))
        .set(learners);
    metrics
        .snapshot_index
        .set(i64::try_from(m.snapshot.map_or(0, |s| s.index)).unwrap_or(0));
    let first = node.journal.applied().journal.first_index;
    metrics
        .journal_first_index
        .set(i64::try_from(first).unwrap_or(0));
    for (id, member) in membership.nodes() {
        if *id == node.id {
            continue;
        }
        let label = PeerLabel {
            peer: member.name.clone(),
        };
        if let Some(d) = health.last_contact.get(id) {
            metrics
                .peer_last_contact
                .get_or_create(&label)
                .set(d.as_secs_f64());
        }
        if let Some(matched) = m.replication.as_ref().and_then(|r| r.get(id)) {
            let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
            metrics
                .replication_lag
                .get_or_create(&label)
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
    }
}

fn publish_removed(node: &Node) {
    node.metrics.is_leader.set(0);
    node.metrics.quorum_available.set(0);
}

/// openraft 0.9 draws one election timeout per process, so two nodes can split the vote
/// again and again. If nobody has led for > 2×max + 2 ticks, sleep a fresh random time in
/// [0, max) and start an election ourselves.
async fn watchdog(node: &Node, m: &RaftMetrics, seen: &mut Seen) {
    let is_voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == node.id);
    if m.current_leader.is_some() || !is_voter {
        seen.leaderless_since = None;
        return;
    }
    let since = *seen.leaderless_since.get_or_insert_with(Instant::now);
    let max = node.cfg.election_timeout_max;
    let tick = node.cfg.heartbeat * 3 / 2;
    if since.elapsed() < max * 2 + tick * 2 {
        return;
    }
    let pause = Duration::from_millis(rand::rng().random_range(0..super::node::millis(max).max(1)));
    tokio::time::sleep(pause).await;
    let still_leaderless = node.raft_metrics().current_leader.is_none();
    if still_leaderless && node.lifecycle() == Lifecycle::Running {
        tracing::info!(
            leaderless_ms = since.elapsed().as_millis() as u64,
            "split-vote watchdog: starting an election"
        );
        let _ = node.raft.trigger().elect().await;
    }
    seen.leaderless_since = Some(Instant::now());
}

/// A node learns it was removed from the committed membership it applied, from the leader's
/// notice (see `PeerRequest::Removed`), or — when it has been leaderless for long — by asking
/// its peers for their committed membership.
async fn detect_removal(node: &Node, m: &RaftMetrics, seen: &mut Seen) {
    // Only the applied membership is known to be committed; the effective one in the metrics
    // may come from an entry a later leader truncates.
    let applied = node.journal.applied().membership;
    let listed = applied.membership().get_node(&node.id).is_some();
    if listed {
        seen.was_member = true;
    } else if seen.was_member && applied.log_id().is_some() && m.state != ServerState::Leader {
        node.become_removed("the committed membership no longer lists this node")
            .await;
        return;
    }
    let membership = &m.membership_config;
    let leaderless_for = seen
        .leaderless_since
        .map(|s| s.elapsed())
        .unwrap_or_default();
    let probe_due = seen
        .last_membership_probe
        .is_none_or(|t| t.elapsed() > node.cfg.partition_detection);
    if m.current_leader.is_some() || leaderless_for < node.cfg.partition_detection * 2 || !probe_due
    {
        return;
    }
    seen.last_membership_probe = Some(Instant::now());
    let our_index = membership.log_id().map_or(0, |l| l.index);
    for (id, member) in membership.membership().nodes() {
        if *id == node.id {
            continue;
        }
        let link = node.links.get(*id, &member.peer_addr);
        let Ok(PeerResponse::Membership(view)) = link
            .call(PeerRequest::Membership, Duration::from_secs(1))
            .await
        else {
            continue;
        };
        let newer = view
            .membership
            .log_id()
            .is_some_and(|l| l.index > our_index);
        if newer
            && view.leader.is_some()
            && view.membership.membership().get_node(&node.id).is_none()
        {
            node.become_removed("a peer's newer committed membership no longer lists this node")
                .await;
            return;
        }
    }
}

/// Enforce `--max-log-size`: snapshot and purge when the log outgrows it.
async fn cap_log(node: &Node, m: &RaftMetrics) {
    let last = m.last_log_index.unwrap_or(0);
    let purged = m.purged.map_or(0, |p| p.index);
    if last.saturating_sub(purged) <= node.cfg.max_log_size {
        return;
    }
    let snapshot = m.snapshot.map_or(0, |s| s.index);
    let applied = m.last_applied.map_or(0, |a| a.index);
    if snapshot < applied {
        let _ = node.raft.trigger().snapshot().await;
    } else if snapshot > purged {
        let _ = node.raft.trigger().purge_log(snapshot).await;
    }
}
