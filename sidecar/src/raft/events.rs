//! Which `/v1/events` follow from a change of state, as a pure function: the monitor takes an
//! [`Observation`] of openraft's metrics and its own [`Health`](super::health::Health) every
//! tick, and [`PreviousTick::advance`] turns the difference from the previous tick into events
//! (leader elected or lost, partition detected or recovered, log compacted, member joined or
//! removed) plus what the metrics must count.

use std::collections::BTreeMap;

use raft_api::daemon::{ConsensusEvent, PartitionState};

use crate::types::NodeId;

/// The facts of one tick that events are derived from.
#[derive(Debug, Clone)]
pub struct Observation {
    pub leader: Option<NodeId>,
    /// The leader's member name, when it is a member this node knows.
    pub leader_name: Option<String>,
    pub term: u64,
    pub partition: PartitionState,
    /// Index of the last purged log entry.
    pub purged: Option<u64>,
    pub snapshot_index: u64,
    /// Members by id with their names (events name members; ids are internal).
    pub members: BTreeMap<NodeId, String>,
    /// The membership comes from a log entry (not the empty one of an uninitialized node).
    pub membership_logged: bool,
    /// This node's name, for `partition:detected`.
    pub my_name: String,
}

/// What the previous tick saw.
#[derive(Debug, Clone, Default)]
pub struct PreviousTick {
    leader: Option<NodeId>,
    term: u64,
    partition: Option<PartitionState>,
    purged: Option<u64>,
    members: BTreeMap<NodeId, String>,
}

/// The events of one tick, in order, and what the metrics count from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transitions {
    pub events: Vec<ConsensusEvent>,
    pub leader_changed: bool,
    pub partition_detected: bool,
    /// Names of members that left the membership (their per-peer gauges go too).
    pub departed: Vec<String>,
}

impl PreviousTick {
    /// The events from the previous tick to `now`; `now` becomes the previous tick.
    pub fn advance(&mut self, now: &Observation) -> Transitions {
        let mut t = Transitions::default();
        if now.leader != self.leader {
            t.events.push(match now.leader {
                Some(leader) => {
                    t.leader_changed = true;
                    ConsensusEvent::LeaderElected {
                        leader_id: now
                            .leader_name
                            .clone()
                            .unwrap_or_else(|| leader.to_string()),
                        term: now.term,
                    }
                }
                None => ConsensusEvent::LeaderLost { term: self.term },
            });
        }
        let bad = |p: Option<PartitionState>| {
            matches!(
                p,
                Some(PartitionState::Minority | PartitionState::Leaderless)
            )
        };
        match (bad(self.partition), bad(Some(now.partition))) {
            (false, true) => {
                t.partition_detected = true;
                t.events.push(ConsensusEvent::PartitionDetected {
                    node_id: now.my_name.clone(),
                    health: now.partition,
                });
            }
            (true, false) => t.events.push(ConsensusEvent::PartitionRecovered {
                new_leader: now.leader_name.clone(),
            }),
            _ => {}
        }
        let removed = match (now.purged, self.purged) {
            (Some(after), Some(before)) if after > before => Some(after - before),
            // Indices start at 0: the first purge up to index n removes n + 1 entries.
            (Some(after), None) => Some(after + 1),
            _ => None,
        };
        if let Some(entries_removed) = removed {
            t.events.push(ConsensusEvent::LogCompacted {
                entries_removed,
                snapshot_index: now.snapshot_index,
            });
        }
        if !self.members.is_empty() || now.membership_logged {
            for (id, name) in &now.members {
                if !self.members.contains_key(id) {
                    t.events.push(ConsensusEvent::MemberJoined {
                        node_id: name.clone(),
                    });
                }
            }
            for (id, name) in &self.members {
                if !now.members.contains_key(id) {
                    t.events.push(ConsensusEvent::MemberRemoved {
                        node_id: name.clone(),
                    });
                    t.departed.push(name.clone());
                }
            }
        }
        *self = PreviousTick {
            leader: now.leader,
            term: now.term,
            partition: Some(now.partition),
            purged: now.purged,
            members: now.members.clone(),
        };
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[(NodeId, &str)]) -> BTreeMap<NodeId, String> {
        names
            .iter()
            .map(|(id, n)| (*id, (*n).to_string()))
            .collect()
    }

    /// A healthy three-member cluster led by node 1 ("a") in term 2.
    fn steady() -> Observation {
        Observation {
            leader: Some(1),
            leader_name: Some("a".into()),
            term: 2,
            partition: PartitionState::Healthy,
            purged: None,
            snapshot_index: 0,
            members: members(&[(1, "a"), (2, "b"), (3, "c")]),
            membership_logged: true,
            my_name: "b".into(),
        }
    }

    #[test]
    fn the_first_tick_of_a_member_reports_the_leader_and_every_member() {
        let t = PreviousTick::default().advance(&steady());
        assert!(t.leader_changed);
        assert_eq!(
            t.events,
            vec![
                ConsensusEvent::LeaderElected {
                    leader_id: "a".into(),
                    term: 2
                },
                ConsensusEvent::MemberJoined {
                    node_id: "a".into()
                },
                ConsensusEvent::MemberJoined {
                    node_id: "b".into()
                },
                ConsensusEvent::MemberJoined {
                    node_id: "c".into()
                },
            ]
        );
    }

    #[test]
    fn nothing_changed_means_no_events() {
        let mut prev = PreviousTick::default();
        prev.advance(&steady());
        assert_eq!(prev.advance(&steady()), Transitions::default());
    }

    #[test]
    fn a_lost_leader_is_reported_with_the_term_it_led() {
        let mut prev = PreviousTick::default();
        prev.advance(&steady());
        let lost = Observation {
            leader: None,
            leader_name: None,
            term: 3,
            ..steady()
        };
        let t = prev.advance(&lost);
        assert_eq!(t.events, vec![ConsensusEvent::LeaderLost { term: 2 }]);
        assert!(!t.leader_changed);
    }

    #[test]
    fn a_leader_unknown_to_the_membership_is_named_by_its_id() {
        let t = PreviousTick::default().advance(&Observation {
            leader: Some(9),
            leader_name: None,
            membership_logged: false,
            members: BTreeMap::new(),
            ..steady()
        });
        assert_eq!(
            t.events,
            vec![ConsensusEvent::LeaderElected {
                leader_id: "9".into(),
                term: 2
            }]
        );
    }

    #[test]
    fn a_partition_is_detected_once_and_recovered_once() {
        let mut prev = PreviousTick::default();
        prev.advance(&steady());
        let cut = Observation {
            partition: PartitionState::Minority,
            ..steady()
        };
        let t = prev.advance(&cut);
        assert!(t.partition_detected);
        assert_eq!(
            t.events,
            vec![ConsensusEvent::PartitionDetected {
                node_id: "b".into(),
                health: PartitionState::Minority
            }]
        );
        // Minority → Leaderless is the same partition.
        let still = Observation {
            partition: PartitionState::Leaderless,
            ..steady()
        };
        assert_eq!(prev.advance(&still), Transitions::default());
        let t = prev.advance(&steady());
        assert_eq!(
            t.events,
            vec![ConsensusEvent::PartitionRecovered {
                new_leader: Some("a".into())
            }]
        );
    }

    #[test]
    fn a_degraded_leader_is_not_a_partition() {
        let mut prev = PreviousTick::default();
        prev.advance(&steady());
        let degraded = Observation {
            partition: PartitionState::Degraded,
            ..steady()
        };
        assert_eq!(prev.advance(&degraded), Transitions::default());
    }

    #[test]
    fn compaction_counts_the_entries_removed_since_the_previous_tick() {
        let mut prev = PreviousTick::default();
        prev.advance(&steady());
        let first = Observation {
            purged: Some(99),
            snapshot_index: 120,
            ..steady()
        };
        assert_eq!(
            prev.advance(&first).events,
            vec![ConsensusEvent::LogCompacted {
                entries_removed: 100,
                snapshot_index: 120
            }]
        );
        let second = Observation {
            purged: Some(149),
            snapshot_index: 170,
            ..steady()
        };
        assert_eq!(
            prev.advance(&second).events,
            vec![ConsensusEvent::LogCompacted {
                entries_removed: 50,
                snapshot_index: 170
            }]
        );
        assert_eq!(prev.advance(&second), Transitions::default());
    }

    #[test]
    fn members_joining_and_leaving_are_reported_and_leavers_listed() {
        let mut prev = PreviousTick::default();
        prev.advance(&steady());
        let changed = Observation {
            members: members(&[(1, "a"), (2, "b"), (4, "d")]),
            ..steady()
        };
        let t = prev.advance(&changed);
        assert_eq!(
            t.events,
            vec![
                ConsensusEvent::MemberJoined {
                    node_id: "d".into()
                },
                ConsensusEvent::MemberRemoved {
                    node_id: "c".into()
                },
            ]
        );
        assert_eq!(t.departed, vec!["c".to_string()]);
    }

    #[test]
    fn an_uninitialized_node_reports_no_members() {
        let t = PreviousTick::default().advance(&Observation {
            leader: None,
            leader_name: None,
            membership_logged: false,
            members: members(&[(1, "a")]),
            ..steady()
        });
        assert_eq!(t, Transitions::default());
    }
}
