//! Background watcher of one node, every tick:
//! - partition detection (`partitionState`, `quorumAvailable`): [`health::assess`] over the
//!   peer contact times and the leader's quorum acknowledgements;
//! - events (`/v1/events`) from state transitions ([`events`]) and the gauges;
//! - the quiet start: a restarted node stands for election only once its leader reaches it,
//!   or once a detection window passed without hearing from a leader at all;
//! - the split-vote watchdog (openraft 0.9 draws one election timeout per process, so split
//!   votes can repeat): no leader for > 2×max + 2 ticks → sleep U(0, max) → elect;
//! - removed-node detection from the committed membership, or by asking peers after a long
//!   leaderless spell;
//! - the compaction cap (`--max-log-size`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use raft_api::daemon::MemberRole;
use rand::Rng;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::events::{Observation, PreviousTick};
use super::health::{self, Health, LeaderReport, View, millis};
use super::node::{Lifecycle, Node};
use crate::metrics::{PeerLabel, RoleLabel};
use crate::transport::frame::{MembershipView, PeerRequest, PeerResponse};
use crate::types::{NodeId, RaftMetrics};

const TICK: Duration = Duration::from_millis(100);

/// The monitor's memory between ticks, beyond what events are derived from.
#[derive(Default)]
struct Watch {
    previous: PreviousTick,
    leaderless_since: Option<Instant>,
    last_membership_probe: Option<Instant>,
    /// This node has appeared in an applied (hence committed) membership since it started.
    was_member: bool,
    /// When this node became the leader (None while it is not).
    leading_since: Option<Instant>,
    /// Elections are on (off during a quiet start, see [`quiet_start`]).
    electing: bool,
    /// The follower's background question to its leader (see `probe_leader`).
    leader_probe: Option<AbortHandle>,
    last_leader_probe: Option<Instant>,
}

/// Watch `node` until it shuts down; `quiet`: it started with elections off (a restart).
pub async fn run(node: Arc<Node>, quiet: bool) {
    let started = Instant::now();
    let mut watch = Watch {
        leaderless_since: Some(started),
        electing: !quiet,
        ..Watch::default()
    };
    let mut stop = Box::pin(node.shutdown_signal());
    let mut interval = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = interval.tick() => {}
        }
        if node.lifecycle() == Lifecycle::Removed {
            publish_removed(&node);
            continue;
        }
        let m = node.raft_metrics();
        node.sample_log(&m);
        if node.is_leader(&m) {
            watch.leading_since.get_or_insert_with(Instant::now);
        } else {
            watch.leading_since = None;
        }
        node.set_leading_since(watch.leading_since);
        let health = assess(&node, &m, &watch, started.elapsed());
        // Forget links to peers that are no longer members (their sockets close).
        let membership = m.membership_config.membership();
        node.links.retain(|id| membership.get_node(id).is_some());
        emit_transitions(&node, &m, &health, &mut watch.previous);
        update_gauges(&node, &m, &health);
        node.health.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        });
        probe_leader(&node, &m, &mut watch);
        quiet_start(&node, &m, &mut watch, started.elapsed());
        watchdog(&node, &m, &mut watch).await;
        detect_removal(&node, &m, &mut watch).await;
        cap_log(&node, &m).await;
    }
    if let Some(probe) = watch.leader_probe {
        probe.abort();
    }
}

/// [`health::assess`] over this node's metrics and contact times.
fn assess(node: &Node, m: &RaftMetrics, watch: &Watch, uptime: Duration) -> Health {
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let peers: Vec<NodeId> = membership
        .nodes()
        .map(|(id, _)| *id)
        .filter(|id| *id != node.id)
        .collect();
    let contact = node.peer_contact();
    let alive = node.links.last_alive();
    let leading = node.is_leader(m);
    health::assess(&View {
        me: node.id,
        leading,
        current_leader: m.current_leader,
        voters: &voters,
        peers: &peers,
        contact: &contact,
        alive: &alive,
        detection: node.cfg.partition_detection,
        millis_since_quorum_ack: m.millis_since_quorum_ack,
        leading_for: watch.leading_since.map(|t| t.elapsed()),
        uptime,
        leader_verdict: if leading {
            None
        } else {
            node.leader_verdict(m)
        },
    })
}

/// On a follower, ask the leader for its verdict (`PeerRequest::Health`) a few times per
/// detection window, in the background so an unresponsive leader never stalls the monitor.
fn probe_leader(node: &Arc<Node>, m: &RaftMetrics, watch: &mut Watch) {
    let Some(leader) = m.current_leader.filter(|l| *l != node.id) else {
        return;
    };
    let detection = node.cfg.partition_detection;
    let due = watch
        .last_leader_probe
        .is_none_or(|t| t.elapsed() >= health::probe_every(detection));
    let busy = watch
        .leader_probe
        .as_ref()
        .is_some_and(|h| !h.is_finished());
    let Some(member) = node.member(m, leader).filter(|_| due && !busy) else {
        return;
    };
    watch.last_leader_probe = Some(Instant::now());
    let link = node.links.get(leader, &member.peer_addr);
    let asker = node.clone();
    watch.leader_probe = Some(node.spawn_errand(async move {
        if let Ok(PeerResponse::Health(view)) = link.call(PeerRequest::Health, detection).await {
            asker.record_leader_report(LeaderReport {
                from: leader,
                view,
                at: Instant::now(),
            });
        }
    }));
}

/// Events from what changed since the previous tick, and the counters that follow them.
fn emit_transitions(node: &Node, m: &RaftMetrics, health: &Health, previous: &mut PreviousTick) {
    let membership = m.membership_config.membership();
    let now = Observation {
        leader: m.current_leader,
        leader_name: node.leader_name(m),
        term: m.current_term,
        partition: health.partition,
        purged: m.purged.map(|p| p.index),
        snapshot_index: m.snapshot.map_or(0, |s| s.index),
        members: membership
            .nodes()
            .map(|(id, member)| (*id, member.name.clone()))
            .collect::<BTreeMap<_, _>>(),
        membership_logged: m.membership_config.log_id().is_some(),
        my_name: node.cfg.name.clone(),
    };
    let t = previous.advance(&now);
    if t.leader_changed {
        node.metrics.leader_changes.inc();
    }
    if t.partition_detected {
        node.metrics.partitions_detected.inc();
    }
    for name in t.departed {
        let label = PeerLabel { peer: name };
        node.metrics.peer_last_contact.remove(&label);
        node.metrics.replication_lag.remove(&label);
    }
    for event in t.events {
        let _ = node.events.send(event);
    }
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

/// End a quiet start: turn elections on at once when this node is the only voter, once the
/// leader reaches this node (its heartbeats arrive), or once a whole detection window passed
/// without hearing from a leader at all (it
/// is gone: the followers then stand one window later than they otherwise would). A leader that
/// only answers this node's own calls is up but cannot reach it yet (a restarted pod has a new
/// address, and the leader's dial to the old one must time out first): standing then would
/// depose a healthy leader, so the node stays quiet until the leader's heartbeats arrive or it
/// falls silent. A leader that restarts needs no election: openraft takes up its committed
/// vote for itself again.
fn quiet_start(node: &Node, m: &RaftMetrics, watch: &mut Watch, uptime: Duration) {
    if watch.electing {
        return;
    }
    // The only voter (a restored or recovered store, a one-member cluster) deposes no one.
    if m.membership_config
        .membership()
        .voter_ids()
        .eq(std::iter::once(node.id))
    {
        node.raft.runtime_config().elect(true);
        watch.electing = true;
        tracing::info!(
            uptime_ms = millis(uptime),
            why = "this node is the only voter",
            "elections on"
        );
        return;
    }
    let leader = m.current_leader.filter(|l| *l != node.id);
    let reaches_us = leader.and_then(|l| node.inbound_from(l));
    let heard = leader.and_then(|l| node.peer_contact().get(&l).copied());
    if let Some(why) = quiet_start_ends(reaches_us, heard, uptime, node.cfg.partition_detection) {
        node.raft.runtime_config().elect(true);
        watch.electing = true;
        tracing::info!(uptime_ms = millis(uptime), why, "elections on");
    }
}

/// Why a quiet start ends now, if it does: `reaches_us` is how long ago the leader last sent
/// this node a request, `heard` how long ago it last sent or answered anything (None: no
/// leader known, or not since the start).
fn quiet_start_ends(
    reaches_us: Option<Duration>,
    heard: Option<Duration>,
    uptime: Duration,
    detection: Duration,
) -> Option<&'static str> {
    if reaches_us.is_some_and(|d| d <= detection) {
        Some("the leader reaches this node")
    } else if heard.is_some_and(|d| d <= detection) {
        None
    } else if uptime >= detection {
        Some("no leader heard within the detection window")
    } else {
        None
    }
}

/// openraft 0.9 draws one election timeout per process, so two nodes can split the vote
/// again and again. If nobody has led for > 2×max + 2 ticks, sleep a fresh random time in
/// [0, max) and start an election ourselves.
/// Not during a quiet start.
async fn watchdog(node: &Node, m: &RaftMetrics, watch: &mut Watch) {
    if !watch.electing {
        return;
    }
    let is_voter = m
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == node.id);
    if m.current_leader.is_some() || !is_voter {
        watch.leaderless_since = None;
        return;
    }
    let since = *watch.leaderless_since.get_or_insert_with(Instant::now);
    let max = node.cfg.election_timeout_max;
    if !election_overdue(since.elapsed(), max, node.cfg.heartbeat) {
        return;
    }
    let pause = Duration::from_millis(rand::rng().random_range(0..millis(max).max(1)));
    tokio::time::sleep(pause).await;
    let still_leaderless = node.raft_metrics().current_leader.is_none();
    if still_leaderless && node.lifecycle() == Lifecycle::Running {
        tracing::info!(
            leaderless_ms = since.elapsed().as_millis() as u64,
            "split-vote watchdog: starting an election"
        );
        let _ = node.raft.trigger().elect().await;
    }
    watch.leaderless_since = Some(Instant::now());
}

/// Whether a voter leaderless for `leaderless_for` should start an election itself: longer
/// than two maximal election timeouts plus two heartbeat ticks (1.5 heartbeats each), which
/// every healthy election finishes within.
fn election_overdue(
    leaderless_for: Duration,
    election_timeout_max: Duration,
    heartbeat: Duration,
) -> bool {
    let tick = heartbeat * 3 / 2;
    leaderless_for >= election_timeout_max * 2 + tick * 2
}

/// A node learns it was removed from the committed membership it applied, from the leader's
/// notice (see `PeerRequest::Removed`), or — when it has been leaderless for long — by asking
/// its peers for their committed membership.
async fn detect_removal(node: &Node, m: &RaftMetrics, watch: &mut Watch) {
    // Only the applied membership is known to be committed; the effective one in the metrics
    // may come from an entry a later leader truncates.
    let applied = node.journal.applied().membership;
    let listed = applied.membership().get_node(&node.id).is_some();
    if listed {
        watch.was_member = true;
    } else if watch.was_member && applied.log_id().is_some() && m.state != ServerState::Leader {
        node.become_removed("the committed membership no longer lists this node")
            .await;
        return;
    }
    let membership = &m.membership_config;
    let leaderless_for = watch
        .leaderless_since
        .map(|s| s.elapsed())
        .unwrap_or_default();
    let probe_due = watch
        .last_membership_probe
        .is_none_or(|t| t.elapsed() > node.cfg.partition_detection);
    if m.current_leader.is_some() || leaderless_for < node.cfg.partition_detection * 2 || !probe_due
    {
        return;
    }
    watch.last_membership_probe = Some(Instant::now());
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
        if view.leader.is_some() && proves_removal(&view, our_index, node.id) {
            node.become_removed("a peer's newer committed membership no longer lists this node")
                .await;
            return;
        }
    }
}

/// Whether a peer's committed membership proves this node removed: committed after the one we
/// know (`our_index`), and not listing us.
fn proves_removal(view: &MembershipView, our_index: u64, us: NodeId) -> bool {
    let newer = view
        .membership
        .log_id()
        .is_some_and(|l| l.index > our_index);
    newer && view.membership.membership().get_node(&us).is_none()
}

/// A peer says it removed us (`PeerRequest::Removed`): believe it only if the member it claims
/// to be, called at the address our membership gives for it, leads and has committed a
/// membership newer than the one we applied that does not list us.
pub(super) async fn verify_removal_notice(node: &Node, sender: NodeId) {
    let m = node.raft_metrics();
    let Some(member) = m.membership_config.membership().get_node(&sender).cloned() else {
        tracing::warn!(
            sender,
            "ignored a removal notice from a node that is not a member"
        );
        return;
    };
    let link = node.links.get(sender, &member.peer_addr);
    // A removed learner has no other way to learn it (it never starts an election, so the
    // leaderless probe never runs): a failed call is tried again, a few times.
    let mut view = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if let Ok(PeerResponse::Membership(v)) = link
            .call(PeerRequest::Membership, Duration::from_secs(2))
            .await
        {
            view = Some(v);
            break;
        }
    }
    let Some(view) = view else {
        tracing::warn!(
            sender,
            "a removal notice could not be confirmed with its sender; ignored"
        );
        return;
    };
    let applied = node.journal.applied().membership;
    let our_index = applied.log_id().map_or(0, |l| l.index);
    if view.leader == Some(sender) && proves_removal(&view, our_index, node.id) {
        node.become_removed("the leader's committed membership no longer lists this node")
            .await;
    } else {
        tracing::warn!(
            sender,
            "ignored a removal notice that the sender's committed membership does not confirm"
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_stands_only_after_two_election_timeouts_and_two_ticks() {
        let max = Duration::from_millis(600);
        let heartbeat = Duration::from_millis(100);
        let since = Instant::now();
        // 2 × 600 ms + 2 × 150 ms = 1500 ms.
        tokio::time::advance(Duration::from_millis(1499)).await;
        assert!(!election_overdue(since.elapsed(), max, heartbeat));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(election_overdue(since.elapsed(), max, heartbeat));
    }

    #[test]
    fn a_quiet_start_ends_when_the_leader_reaches_us_or_falls_silent_for_a_window() {
        let detection = Duration::from_secs(3);
        let ms = Duration::from_millis;
        // Restarted 200 ms ago, nothing heard yet: stay quiet (an election now would depose).
        assert_eq!(quiet_start_ends(None, None, ms(200), detection), None);
        // The leader's requests arrive: elections on at once.
        assert_eq!(
            quiet_start_ends(Some(ms(40)), Some(ms(40)), ms(300), detection),
            Some("the leader reaches this node")
        );
        // The leader answers our calls but cannot reach us (it still dials our old address):
        // quiet, even past the window, as long as it keeps answering.
        assert_eq!(
            quiet_start_ends(None, Some(ms(100)), ms(5000), detection),
            None
        );
        // Nobody for a whole window: the leader is gone (or every node restarted).
        assert_eq!(
            quiet_start_ends(None, None, ms(3000), detection),
            Some("no leader heard within the detection window")
        );
        assert_eq!(
            quiet_start_ends(None, Some(ms(3500)), ms(4000), detection),
            Some("no leader heard within the detection window")
        );
    }
}
