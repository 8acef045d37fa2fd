//! The health gate (rule 3 of docs/operator.md, "How a reconcile works"): no membership change
//! and no restart without a leader with a recent quorum, no joint configuration, and every voter
//! healthy and caught up.
//!
//! Used by the choice of the next change (`plan/mod.rs`) and by the step files before each
//! action that changes the cluster; it depends only on the shared types in `step`.

use super::step::{Blocked, WaitReason};
use crate::reconcile::model::{LeaderView, Observed, is_caught_up};

/// The cluster may change: a leader with a recent quorum, no joint configuration, and every
/// voter except `except` (the member about to be removed) healthy and caught up.
pub(super) fn gate(o: &Observed, except: Option<u64>) -> Result<&LeaderView, Blocked> {
    let leader = o
        .leader
        .as_ref()
        .ok_or_else(|| Blocked::new(WaitReason::WaitingForLeader, "no leader answers"))?;
    if !leader.has_quorum() {
        return Err(Blocked::new(
            WaitReason::WaitingForQuorum,
            format!(
                "leader {} has no recent quorum acknowledgement ({:?})",
                leader.pod, leader.status.partition_state
            ),
        ));
    }
    if leader.cluster.joint {
        return Err(Blocked::new(
            WaitReason::JointConfiguration,
            "the membership is in a joint configuration",
        ));
    }
    let lagging: Vec<&str> = leader
        .voters()
        .filter(|m| except.is_none_or(|id| m.node_id.parse() != Ok(id)))
        .filter(|m| !is_caught_up(m))
        .map(|m| m.name.as_str())
        .collect();
    if !lagging.is_empty() {
        return Err(Blocked::new(
            WaitReason::MemberUnhealthy,
            format!("voters not healthy and caught up: {}", lagging.join(", ")),
        ));
    }
    Ok(leader)
}

#[cfg(test)]
mod tests {
    //! The gate as seen through `plan`: a change the spec asks for waits on an unhealthy or
    //! lagging voter and on a leader without quorum.

    use raft_api::daemon::PartitionState;

    use crate::reconcile::plan::fixtures::*;

    #[test]
    fn scale_up_waits_while_a_voter_is_unhealthy_or_lagging() {
        let mut o = healthy(3);
        o.desired_replicas = 5;
        o.member_mut(1).healthy = false;
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
        o.member_mut(1).healthy = true;
        o.member_mut(2).lag = Some(1000);
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    }

    #[test]
    fn a_voter_hundreds_of_entries_but_milliseconds_behind_does_not_block_a_change() {
        // Under load: 240 entries in flight, 30 ms old.
        let mut o = healthy(3);
        o.desired_replicas = 5;
        o.member_mut(2).lag = Some(240);
        o.member_mut(2).lag_ms = Some(30);
        assert_eq!(recorded(&plan(&o)).name, "rc-3");
        // Seconds behind is lagging, whatever the entry count.
        o.member_mut(2).lag_ms = Some(2500);
        assert_eq!(waiting(&plan(&o)), WaitReason::MemberUnhealthy);
    }

    #[test]
    fn scale_up_waits_while_the_leader_has_no_quorum() {
        let mut o = healthy(3);
        o.desired_replicas = 5;
        o.leader_mut().status.partition_state = PartitionState::Minority;
        assert_eq!(waiting(&plan(&o)), WaitReason::WaitingForQuorum);
    }
}
