//! Reachability verdicts of one node, as pure functions over a plain view of what it knows.
//! The monitor builds a [`View`] every tick and publishes [`assess`]'s [`Health`] (what
//! `partitionState` and `quorumAvailable` report); the write path asks [`quorum_fresh`] and
//! [`forward_refusal`] live, so a write is never judged on a stale tick. Nothing here does I/O
//! or reads a clock except through the `Instant`s it is given (tokio's, so tests pause time).

use std::collections::HashMap;
use std::time::Duration;

use raft_api::ErrorCode;
use raft_api::daemon::PartitionState;
use tokio::time::Instant;

use crate::transport::frame::HealthView;
use crate::types::NodeId;
use crate::write::WriteFailure;

/// Shortest and longest time between two questions of a follower to its leader.
const PROBE_MIN: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(1);

/// What the monitor concluded about reachability; read by the APIs.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub partition: PartitionState,
    pub quorum_available: bool,
    /// Time since each member was last heard from (either direction).
    pub last_contact: HashMap<NodeId, Duration>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            partition: PartitionState::Healthy,
            quorum_available: false,
            last_contact: HashMap::new(),
        }
    }
}

/// Everything [`assess`] judges on, taken from openraft's metrics and the peer contact times.
#[derive(Debug, Clone)]
pub struct View<'a> {
    pub me: NodeId,
    /// This node leads in the current term.
    pub leading: bool,
    pub current_leader: Option<NodeId>,
    pub voters: &'a [NodeId],
    /// Every member but this node (voters and learners).
    pub peers: &'a [NodeId],
    /// Time since each peer was last heard from, members or not.
    pub contact: &'a HashMap<NodeId, Duration>,
    /// Time since each peer last sent anything on our link to it, pongs included.
    pub alive: &'a HashMap<NodeId, Duration>,
    /// `--partition-detection-ms`.
    pub detection: Duration,
    /// openraft's `millis_since_quorum_ack` (leader only).
    pub millis_since_quorum_ack: Option<u64>,
    /// How long this node has led (None when it does not).
    pub leading_for: Option<Duration>,
    /// How long the monitor has run: a node that heard from nobody yet is silent that long.
    pub uptime: Duration,
    /// The leader's own verdict, relayed to this follower ([`leader_verdict`]).
    pub leader_verdict: Option<PartitionState>,
}

/// A leader's quorum is fresh when a majority acknowledged it within `limit` (a single voter is
/// its own majority). The one rule behind the write gate, the in-flight write watch and the
/// partition verdict.
pub fn quorum_fresh(voters: usize, millis_since_quorum_ack: Option<u64>, limit: Duration) -> bool {
    voters <= 1 || millis_since_quorum_ack.is_some_and(|ms| ms <= millis(limit))
}

/// A peer that sent anything on its link (a pong at least) within this is up: three ping
/// intervals, so a missed pong or a slow scheduler does not count as a partition, and never
/// longer than the partition detection window.
pub fn alive_within(detection: Duration) -> Duration {
    crate::transport::link::TICK
        .saturating_mul(3)
        .min(detection)
}

/// What the leader's write gate makes of its quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A majority acknowledged Raft traffic within the limit ([`quorum_fresh`]).
    Open,
    /// It did not, but a majority of voters (this node included) is up on its links: too
    /// busy to acknowledge, not gone. Writes wait, then get `BUSY`.
    Busy,
    /// No majority acknowledges and none is up: `NO_QUORUM`.
    Unreachable,
}

/// The write gate of leader `me`. `alive`: time since each peer last sent anything on its link;
/// within `alive_within` ([`alive_within`]) it is up.
pub fn gate(
    me: NodeId,
    voters: &[NodeId],
    millis_since_quorum_ack: Option<u64>,
    limit: Duration,
    alive: &HashMap<NodeId, Duration>,
    alive_within: Duration,
) -> Gate {
    if quorum_fresh(voters.len(), millis_since_quorum_ack, limit) {
        return Gate::Open;
    }
    let up = voters
        .iter()
        .filter(|id| **id == me || alive.get(id).is_some_and(|d| *d <= alive_within))
        .count();
    if up > voters.len() / 2 {
        Gate::Busy
    } else {
        Gate::Unreachable
    }
}

/// The partition state and quorum availability of this node.
pub fn assess(v: &View<'_>) -> Health {
    let heard = |id: &NodeId| v.contact.get(id).is_some_and(|d| *d <= v.detection);
    let last_contact: HashMap<NodeId, Duration> = v
        .contact
        .iter()
        .filter(|(id, _)| v.peers.contains(id))
        .map(|(id, d)| (*id, *d))
        .collect();
    let verdict = |partition, quorum_available| Health {
        partition,
        quorum_available,
        last_contact: last_contact.clone(),
    };
    if v.voters.is_empty() {
        return verdict(PartitionState::Healthy, false);
    }
    let majority = v.voters.len() / 2 + 1;
    let reachable_voters = v
        .voters
        .iter()
        .filter(|id| **id == v.me || heard(id))
        .count();
    let all_heard = v.peers.iter().all(heard);
    let (partition, quorum) = if v.leading {
        // Right after an election no acknowledgement has arrived yet: not a partition. Nor
        // is a majority that is up on its links but too busy to acknowledge (the write gate's
        // `Busy`).
        let acked = quorum_fresh(v.voters.len(), v.millis_since_quorum_ack, v.detection)
            || (v.millis_since_quorum_ack.is_none()
                && v.leading_for.is_none_or(|d| d <= v.detection))
            || gate(
                v.me,
                v.voters,
                v.millis_since_quorum_ack,
                v.detection,
                v.alive,
                alive_within(v.detection),
            ) == Gate::Busy;
        match (acked, all_heard) {
            (false, _) => (PartitionState::Minority, false),
            (true, true) => (PartitionState::Healthy, true),
            (true, false) => (PartitionState::Degraded, true),
        }
    } else if v.current_leader.is_some_and(|l| heard(&l)) {
        // The leader's own verdict: its followers share its minority.
        match v.leader_verdict {
            Some(PartitionState::Minority) => return verdict(PartitionState::Minority, false),
            Some(PartitionState::Degraded) => (PartitionState::Degraded, true),
            _ => (PartitionState::Healthy, true),
        }
    } else if reachable_voters < majority {
        (PartitionState::Minority, false)
    } else {
        (PartitionState::Leaderless, false)
    };
    // A node that just started or just saw an election is not "partitioned" yet.
    let partition = match partition {
        PartitionState::Leaderless | PartitionState::Minority if !silent_long_enough(v) => {
            PartitionState::Healthy
        }
        p => p,
    };
    verdict(partition, quorum)
}

/// True when the leader (or, with none known, every peer) has been silent longer than the
/// detection window; a node that never heard anyone counts its uptime.
fn silent_long_enough(v: &View<'_>) -> bool {
    if v.leading {
        return true;
    }
    let since_leader = v.current_leader.and_then(|l| v.contact.get(&l).copied());
    let since_any = v.contact.values().min().copied();
    since_leader.or(since_any).unwrap_or(v.uptime) > v.detection
}

/// A follower's latest answer from its leader to `PeerRequest::Health`.
#[derive(Debug, Clone, Copy)]
pub struct LeaderReport {
    pub from: NodeId,
    pub view: HealthView,
    pub at: Instant,
}

/// How often a follower asks its leader for its verdict: four times per detection window.
pub fn probe_every(detection: Duration) -> Duration {
    (detection / 4).clamp(PROBE_MIN, PROBE_MAX)
}

/// What the leader (as this node knows it) last said about itself, if it said so within two
/// probe periods and still leads in the current term.
pub fn leader_verdict(
    report: Option<&LeaderReport>,
    current_leader: Option<NodeId>,
    current_term: u64,
    detection: Duration,
) -> Option<PartitionState> {
    let r = report?;
    (Some(r.from) == current_leader
        && r.view.leading
        && r.view.term == current_term
        && r.at.elapsed() <= probe_every(detection) * 2)
        .then_some(r.view.partition)
}

/// Why a journal watch on this node must end, if it must: a removed node's journal stops
/// for good, and one cut off from the majority may be behind without knowing it. Both are
/// said in an `error` event, so a watcher moves to another node instead of waiting in silence.
/// A leaderless node (majority heard, election under way) keeps its watches.
pub fn watch_ending(removed: bool, partition: PartitionState) -> Option<WriteFailure> {
    if removed {
        return Some(WriteFailure::new(
            ErrorCode::NotInitialized,
            "this node was removed from the cluster: its journal ends here; watch a member",
        ));
    }
    (partition == PartitionState::Minority).then(|| {
        WriteFailure::new(
            ErrorCode::NoQuorum,
            "this node is cut off from the majority: its journal may be behind; watch a node of \
             the majority or retry later",
        )
    })
}

/// On a follower, before forwarding a write to `leader`: a refusal when the write cannot
/// succeed, so the daemon gets a quick and certain answer instead of a forward that hangs and
/// ends with an unknown outcome. `leader_heard`: the leader was heard within the detection
/// window (checked live, so a leader just heard from is never refused).
pub fn forward_refusal(
    verdict: Option<PartitionState>,
    leader_heard: bool,
    partition: PartitionState,
) -> Option<WriteFailure> {
    if verdict == Some(PartitionState::Minority) {
        return Some(WriteFailure::no_quorum());
    }
    match partition {
        _ if leader_heard => None,
        PartitionState::Minority => Some(WriteFailure::no_quorum()),
        PartitionState::Leaderless => Some(WriteFailure::new(
            ErrorCode::NoLeader,
            "the leader has not been heard from within the partition-detection window",
        )),
        PartitionState::Healthy | PartitionState::Degraded => None,
    }
}

/// Whole milliseconds of `d`, saturating (openraft counts in `u64` milliseconds).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_that_is_up_but_slow_to_acknowledge_is_busy_not_lost() {
        let voters = [1, 2, 3];
        let limit = Duration::from_millis(400);
        let up = alive_within(Duration::from_secs(3));
        assert_eq!(up, Duration::from_millis(1500));
        assert_eq!(alive_within(Duration::from_secs(1)), Duration::from_secs(1));
        let ponged: HashMap<NodeId, Duration> =
            [(2, Duration::from_millis(300)), (3, Duration::from_secs(9))].into();
        assert_eq!(gate(1, &voters, Some(100), limit, &ponged, up), Gate::Open);
        // No acknowledgement for 2 s, but node 2 answers pings: with the leader, a majority.
        assert_eq!(gate(1, &voters, Some(2000), limit, &ponged, up), Gate::Busy);
        assert_eq!(gate(1, &voters, None, limit, &ponged, up), Gate::Busy);
        // Node 2 silent too: the leader is alone.
        let silent: HashMap<NodeId, Duration> = [(2, Duration::from_secs(2))].into();
        assert_eq!(
            gate(1, &voters, Some(2000), limit, &silent, up),
            Gate::Unreachable
        );
        assert_eq!(gate(1, &[1], None, limit, &silent, up), Gate::Open);
    }

    #[test]
    fn watches_end_on_a_removed_or_cut_off_node_only() {
        use PartitionState::*;
        let code = |removed, p| watch_ending(removed, p).map(|f| f.code);
        assert_eq!(code(true, Healthy), Some(ErrorCode::NotInitialized));
        assert_eq!(code(false, Minority), Some(ErrorCode::NoQuorum));
        for p in [Healthy, Degraded, Leaderless] {
            assert_eq!(code(false, p), None, "{p:?}");
        }
    }

    const DETECTION: Duration = Duration::from_millis(1000);

    /// Three voters 1, 2, 3 seen from node 1; contact times in milliseconds.
    struct Fixture {
        voters: Vec<NodeId>,
        peers: Vec<NodeId>,
        contact: HashMap<NodeId, Duration>,
    }

    impl Fixture {
        fn three(contact_ms: &[(NodeId, u64)]) -> Self {
            Self {
                voters: vec![1, 2, 3],
                peers: vec![2, 3],
                contact: contact_ms
                    .iter()
                    .map(|(id, ms)| (*id, Duration::from_millis(*ms)))
                    .collect(),
            }
        }

        fn follower(&self, leader: Option<NodeId>) -> View<'_> {
            View {
                me: 1,
                leading: false,
                current_leader: leader,
                voters: &self.voters,
                peers: &self.peers,
                contact: &self.contact,
                alive: &self.contact,
                detection: DETECTION,
                millis_since_quorum_ack: None,
                leading_for: None,
                uptime: Duration::from_secs(60),
                leader_verdict: None,
            }
        }

        fn leader(&self, ack_ms: Option<u64>, leading_for: Duration) -> View<'_> {
            View {
                leading: true,
                current_leader: Some(1),
                millis_since_quorum_ack: ack_ms,
                leading_for: Some(leading_for),
                ..self.follower(Some(1))
            }
        }
    }

    #[test]
    fn a_single_voter_is_its_own_quorum() {
        assert!(quorum_fresh(1, None, DETECTION));
        assert!(!quorum_fresh(3, None, DETECTION));
        assert!(quorum_fresh(3, Some(1000), DETECTION));
        assert!(!quorum_fresh(3, Some(1001), DETECTION));
    }

    #[test]
    fn a_leader_acknowledged_by_everyone_is_healthy() {
        let f = Fixture::three(&[(2, 50), (3, 50)]);
        let h = assess(&f.leader(Some(40), Duration::from_secs(5)));
        assert_eq!(h.partition, PartitionState::Healthy);
        assert!(h.quorum_available);
        assert_eq!(h.last_contact.len(), 2);
    }

    #[test]
    fn a_leader_whose_majority_answers_pings_but_not_appends_is_busy_not_a_minority() {
        // No answer to Raft traffic for 5 s, but follower 2 sent a pong 300 ms ago.
        let f = Fixture::three(&[(2, 5000), (3, 5000)]);
        let ponged: HashMap<NodeId, Duration> = [(2, Duration::from_millis(300))].into();
        let busy = View {
            alive: &ponged,
            ..f.leader(Some(5000), Duration::from_secs(60))
        };
        let h = assess(&busy);
        assert_eq!(h.partition, PartitionState::Degraded);
        assert!(h.quorum_available);
        // Nothing at all from either follower: the minority side.
        let gone = HashMap::new();
        let cut = View {
            alive: &gone,
            ..f.leader(Some(5000), Duration::from_secs(60))
        };
        assert_eq!(assess(&cut).partition, PartitionState::Minority);
    }

    #[test]
    fn a_leader_that_lost_one_follower_is_degraded_but_keeps_its_quorum() {
        let f = Fixture::three(&[(2, 50), (3, 5000)]);
        let h = assess(&f.leader(Some(40), Duration::from_secs(5)));
        assert_eq!(h.partition, PartitionState::Degraded);
        assert!(h.quorum_available);
    }

    #[test]
    fn a_leader_without_acknowledgements_is_in_the_minority() {
        let f = Fixture::three(&[(2, 5000), (3, 5000)]);
        let h = assess(&f.leader(Some(3000), Duration::from_secs(5)));
        assert_eq!(h.partition, PartitionState::Minority);
        assert!(!h.quorum_available);
    }

    #[test]
    fn a_leader_just_elected_is_not_a_minority_before_the_first_acknowledgement() {
        let f = Fixture::three(&[]);
        let fresh = assess(&f.leader(None, Duration::from_millis(200)));
        assert_eq!(fresh.partition, PartitionState::Degraded);
        assert!(fresh.quorum_available);
        let stale = assess(&f.leader(None, Duration::from_millis(1500)));
        assert_eq!(stale.partition, PartitionState::Minority);
    }

    #[test]
    fn a_follower_that_hears_its_leader_is_healthy() {
        let f = Fixture::three(&[(2, 30), (3, 30)]);
        let h = assess(&f.follower(Some(2)));
        assert_eq!(h.partition, PartitionState::Healthy);
        assert!(h.quorum_available);
    }

    #[test]
    fn a_follower_shares_its_leaders_minority() {
        let f = Fixture::three(&[(2, 30), (3, 30)]);
        let v = View {
            leader_verdict: Some(PartitionState::Minority),
            ..f.follower(Some(2))
        };
        let h = assess(&v);
        assert_eq!(h.partition, PartitionState::Minority);
        assert!(!h.quorum_available);
    }

    #[test]
    fn a_follower_cut_off_from_everyone_is_in_the_minority_once_the_window_passed() {
        let f = Fixture::three(&[(2, 1500), (3, 1500)]);
        assert_eq!(
            assess(&f.follower(Some(2))).partition,
            PartitionState::Minority
        );
        let recent = Fixture::three(&[(2, 900), (3, 5000)]);
        // The leader was heard 900 ms ago: still within the window, still healthy.
        assert_eq!(
            assess(&recent.follower(Some(2))).partition,
            PartitionState::Healthy
        );
    }

    #[test]
    fn a_follower_with_a_majority_but_no_leader_is_leaderless() {
        let f = Fixture::three(&[(3, 100)]);
        let mut v = f.follower(None);
        // Heard a peer 100 ms ago: not silent long enough to call it a partition.
        assert_eq!(assess(&v).partition, PartitionState::Healthy);
        let quiet = Fixture::three(&[(3, 100), (2, 2000)]);
        v.contact = &quiet.contact;
        v.current_leader = Some(2);
        assert_eq!(assess(&v).partition, PartitionState::Leaderless);
        assert!(!assess(&v).quorum_available);
    }

    #[test]
    fn a_node_that_never_heard_anyone_waits_one_window_of_uptime() {
        let f = Fixture::three(&[]);
        let young = View {
            uptime: Duration::from_millis(500),
            ..f.follower(None)
        };
        assert_eq!(assess(&young).partition, PartitionState::Healthy);
        let old = View {
            uptime: Duration::from_millis(1500),
            ..f.follower(None)
        };
        assert_eq!(assess(&old).partition, PartitionState::Minority);
    }

    #[test]
    fn a_node_outside_any_membership_is_healthy_without_quorum() {
        let contact = HashMap::new();
        let v = View {
            me: 1,
            leading: false,
            current_leader: None,
            voters: &[],
            peers: &[],
            contact: &contact,
            alive: &contact,
            detection: DETECTION,
            millis_since_quorum_ack: None,
            leading_for: None,
            uptime: Duration::from_secs(60),
            leader_verdict: None,
        };
        assert_eq!(assess(&v), Health::default());
    }

    fn report(from: NodeId, term: u64, partition: PartitionState) -> LeaderReport {
        LeaderReport {
            from,
            view: HealthView {
                leading: true,
                term,
                partition,
            },
            at: Instant::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_leaders_verdict_counts_for_two_probe_periods_then_expires() {
        let r = report(2, 7, PartitionState::Minority);
        let probe = probe_every(DETECTION);
        assert_eq!(probe, Duration::from_millis(250));
        assert_eq!(
            leader_verdict(Some(&r), Some(2), 7, DETECTION),
            Some(PartitionState::Minority)
        );
        tokio::time::advance(probe * 2).await;
        assert_eq!(
            leader_verdict(Some(&r), Some(2), 7, DETECTION),
            Some(PartitionState::Minority)
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(leader_verdict(Some(&r), Some(2), 7, DETECTION), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_verdict_from_another_leader_or_term_is_ignored() {
        let r = report(2, 7, PartitionState::Minority);
        assert_eq!(leader_verdict(Some(&r), Some(3), 7, DETECTION), None);
        assert_eq!(leader_verdict(Some(&r), Some(2), 8, DETECTION), None);
        assert_eq!(leader_verdict(None, Some(2), 7, DETECTION), None);
    }

    #[test]
    fn probes_stay_between_a_tenth_of_a_second_and_a_second() {
        assert_eq!(probe_every(Duration::from_millis(100)), PROBE_MIN);
        assert_eq!(probe_every(Duration::from_secs(60)), PROBE_MAX);
    }

    #[test]
    fn a_follower_forwards_only_when_the_write_can_succeed() {
        use PartitionState::*;
        let refused = |v, heard, p| forward_refusal(v, heard, p).map(|f| f.code);
        // The leader itself says it is cut off: refused even though we hear it.
        assert_eq!(
            refused(Some(Minority), true, Healthy),
            Some(ErrorCode::NoQuorum)
        );
        assert_eq!(refused(None, true, Minority), None);
        assert_eq!(refused(None, false, Minority), Some(ErrorCode::NoQuorum));
        assert_eq!(refused(None, false, Leaderless), Some(ErrorCode::NoLeader));
        assert_eq!(refused(None, false, Degraded), None);
        assert_eq!(refused(Some(Degraded), false, Healthy), None);
    }
}
