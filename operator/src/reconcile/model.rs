//! What the operator knows about one cluster at the start of a reconcile: the desired state
//! from the resource, the step it recorded, and what it observed of the Kubernetes objects and
//! of each sidecar. `observe` fills it; `plan` and `status` are pure functions of it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use raft_api::admin::{ClusterMember, ClusterView, NodeRole, NodeStatus};
use raft_api::daemon::{MemberRole, PartitionState};
use raft_crds::{FromBackupSpec, OperationStatus};

use super::sidecar_metrics::LeaderHealth;
use crate::resources::names::{ClusterNames, SIDECAR_CONTAINER};
use crate::resources::pod_template::AppliedTemplate;

/// A member within this many entries of the leader's log counts as caught up (the sidecar's
/// `PROMOTE_MAX_LAG`)...
pub const CAUGHT_UP_LAG: u64 = 100;
/// ... and so does one that has everything the leader had this long ago (the sidecar's
/// `CAUGHT_UP_WITHIN`): under load a healthy follower lags hundreds of entries, for milliseconds.
pub const CAUGHT_UP_MS: u64 = 1000;

#[derive(Debug, Clone)]
pub struct Observed {
    pub names: ClusterNames,
    pub generation: Option<i64>,
    /// `spec.replicas`.
    pub desired_replicas: u32,
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.bootstrap.fromBackup`: the backup a new cluster starts from.
    pub from_backup: Option<FromBackupSpec>,
    /// The annotation `consensus.unrdf.io/recover-from`, when its value is a request not yet
    /// answered in `status.recovery`.
    pub recovery_request: Option<String>,
    /// `status.commitIndex` as last recorded: the highest commit index seen before a loss.
    pub recorded_commit_index: Option<u64>,
    /// `status.clusterId`: set once the cluster was bootstrapped.
    pub cluster_id: Option<String>,
    /// `status.operation`: the step in flight.
    pub operation: Option<OperationStatus>,
    /// Number of members in the last recorded status (used only when the StatefulSet vanished).
    pub recorded_members: u32,
    pub statefulset: Option<StatefulSetView>,
    /// The cluster's pods by ordinal.
    pub pods: BTreeMap<u32, PodView>,
    /// Ordinals whose volume claim exists (and is not being deleted).
    pub pvcs: BTreeSet<u32>,
    /// The leader and its view of the membership, when one answered.
    pub leader: Option<LeaderView>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatefulSetView {
    pub replicas: u32,
    /// `status.updateRevision`: the revision pods should run.
    pub update_revision: Option<String>,
    /// Its pod template and what it was made from.
    pub applied: AppliedTemplate,
}

impl StatefulSetView {
    /// Image of the sidecar container in the pod template.
    pub fn sidecar_image(&self) -> Option<&str> {
        self.applied
            .template
            .spec
            .as_ref()?
            .containers
            .iter()
            .find(|c| c.name == SIDECAR_CONTAINER)?
            .image
            .as_deref()
    }
}

#[derive(Debug, Clone)]
pub struct PodView {
    pub name: String,
    pub uid: String,
    pub ready: bool,
    pub ip: Option<String>,
    /// Port of the sidecar's admin API (the container port named `admin`).
    pub admin_port: u16,
    /// `controller-revision-hash` label.
    pub revision: Option<String>,
    /// `deletionTimestamp` is set.
    pub terminating: bool,
    /// The sidecar's `/admin/v1/status`, or why it could not be read.
    pub node: Result<NodeStatus, String>,
}

impl PodView {
    pub fn status(&self) -> Option<&NodeStatus> {
        self.node.as_ref().ok()
    }

    pub fn node_id(&self) -> Option<u64> {
        self.status().and_then(|s| s.node_id.parse().ok())
    }

    /// Running, Ready and answering as a fresh node waiting to be added or initialized.
    pub fn is_uninitialized(&self) -> bool {
        self.ready
            && !self.terminating
            && self
                .status()
                .is_some_and(|s| !s.initialized && s.role == NodeRole::Uninitialized)
    }
}

#[derive(Debug, Clone)]
pub struct LeaderView {
    /// Pod name of the leader.
    pub pod: String,
    pub status: NodeStatus,
    pub cluster: ClusterView,
    /// Replication latency and success rate from its `/metrics` (empty when unreadable).
    pub health: LeaderHealth,
}

impl LeaderView {
    pub fn member_by_name(&self, name: &str) -> Option<&ClusterMember> {
        self.cluster.members.iter().find(|m| m.name == name)
    }

    pub fn member_by_id(&self, node_id: u64) -> Option<&ClusterMember> {
        self.cluster
            .members
            .iter()
            .find(|m| m.node_id.parse() == Ok(node_id))
    }

    pub fn voters(&self) -> impl Iterator<Item = &ClusterMember> {
        self.cluster
            .members
            .iter()
            .filter(|m| m.role == MemberRole::Voter)
    }

    /// The leader heard from a quorum recently (it is not on the minority side).
    pub fn has_quorum(&self) -> bool {
        matches!(
            self.status.partition_state,
            PartitionState::Healthy | PartitionState::Degraded
        )
    }
}

/// A member the leader hears from and that is within [`CAUGHT_UP_LAG`] entries or
/// [`CAUGHT_UP_MS`] of its log.
pub fn is_caught_up(m: &ClusterMember) -> bool {
    m.healthy
        && (m.lag.unwrap_or(0) <= CAUGHT_UP_LAG || m.lag_ms.is_some_and(|ms| ms <= CAUGHT_UP_MS))
}

impl Observed {
    /// Ordinal of a member (from its name), when it is one of this cluster's pods.
    pub fn ordinal(&self, m: &ClusterMember) -> Option<u32> {
        self.names.ordinal_of(&m.name)
    }

    /// One past the highest ordinal in the committed membership: the StatefulSet size that
    /// membership calls for.
    pub fn membership_extent(&self) -> Option<u32> {
        let leader = self.leader.as_ref()?;
        Some(
            leader
                .cluster
                .members
                .iter()
                .filter_map(|m| self.ordinal(m))
                .map(|o| o + 1)
                .max()
                .unwrap_or(0),
        )
    }
}

#[cfg(test)]
pub mod fixtures {
    //! Builders for observed states: a healthy bootstrapped cluster of n members, and tweaks.
    use super::*;
    use raft_crds::{OperationKind, OperationPhase};

    pub fn names() -> ClusterNames {
        ClusterNames::new("rc", "ns", "cluster.local")
    }

    pub fn node_id(ordinal: u32) -> u64 {
        1000 + u64::from(ordinal)
    }

    pub fn node_status(ordinal: u32, role: NodeRole, initialized: bool) -> NodeStatus {
        NodeStatus {
            node_id: node_id(ordinal).to_string(),
            name: format!("rc-{ordinal}"),
            cluster_id: "rc-cafe".into(),
            initialized,
            role,
            term: 3,
            leader_id: initialized.then(|| "rc-0".to_owned()),
            leader_node_id: initialized.then(|| node_id(0).to_string()),
            last_log_index: 50,
            last_log_term: 1,
            last_applied_index: 50,
            partition_state: PartitionState::Healthy,
            peer_address: format!("rc-{ordinal}.rc.ns.svc.cluster.local:7070"),
            admin_address: format!("rc-{ordinal}.rc.ns.svc.cluster.local:7090"),
            tls: None,
            restored_from: None,
        }
    }

    pub fn pod(ordinal: u32, node: NodeStatus) -> PodView {
        PodView {
            name: format!("rc-{ordinal}"),
            uid: format!("uid-{ordinal}"),
            ready: true,
            ip: Some(format!("10.0.0.{}", ordinal + 10)),
            admin_port: 7090,
            revision: Some("rev-1".into()),
            terminating: false,
            node: Ok(node),
        }
    }

    pub fn member(ordinal: u32, role: MemberRole) -> ClusterMember {
        ClusterMember {
            node_id: node_id(ordinal).to_string(),
            name: format!("rc-{ordinal}"),
            address: format!("rc-{ordinal}.rc.ns.svc.cluster.local:7070"),
            admin_address: None,
            role,
            healthy: true,
            matched_index: Some(50),
            lag: Some(0),
            lag_ms: None,
            last_contact_ms: Some(10),
        }
    }

    /// A bootstrapped cluster of `n` healthy voters, rc-0 leading, spec.replicas = n.
    pub fn healthy(n: u32) -> Observed {
        let mut pods = BTreeMap::new();
        for i in 0..n {
            let role = if i == 0 {
                NodeRole::Leader
            } else {
                NodeRole::Follower
            };
            pods.insert(i, pod(i, node_status(i, role, true)));
        }
        let members = (0..n).map(|i| member(i, MemberRole::Voter)).collect();
        Observed {
            names: names(),
            generation: Some(1),
            desired_replicas: n,
            paused: false,
            from_backup: None,
            recovery_request: None,
            recorded_commit_index: Some(50),
            cluster_id: Some("rc-cafe".into()),
            operation: None,
            recorded_members: n,
            statefulset: Some(StatefulSetView {
                replicas: n,
                update_revision: Some("rev-1".into()),
                applied: AppliedTemplate::default(),
            }),
            pods,
            pvcs: (0..n).collect(),
            leader: Some(LeaderView {
                pod: "rc-0".into(),
                status: node_status(0, NodeRole::Leader, true),
                cluster: ClusterView {
                    leader_id: Some("rc-0".into()),
                    leader_node_id: Some(node_id(0).to_string()),
                    term: 3,
                    last_log_index: 50,
                    commit_index: 50,
                    joint: false,
                    members,
                },
                health: LeaderHealth::default(),
            }),
            now: Timestamp::UNIX_EPOCH,
        }
    }

    /// A 3-member cluster that lost rc-1 and rc-2 with their volumes (fresh pods, not
    /// members): rc-0 alone and leaderless, its log at `last_log_index`.
    pub fn lost_majority(last_log_index: u64) -> Observed {
        let mut o = healthy(3);
        o.leader = None;
        let mut survivor = node_status(0, NodeRole::Candidate, true);
        survivor.partition_state = PartitionState::Minority;
        survivor.last_log_index = last_log_index;
        o.pods.insert(0, pod(0, survivor));
        for i in [1, 2] {
            o.pods
                .insert(i, pod(i, node_status(i, NodeRole::Uninitialized, false)));
        }
        o
    }

    /// `n` fresh pods that have never been initialized, no StatefulSet status yet.
    pub fn fresh(n: u32) -> Observed {
        let mut o = healthy(n);
        o.cluster_id = None;
        o.leader = None;
        o.recorded_members = 0;
        for i in 0..n {
            o.pods
                .insert(i, pod(i, node_status(i, NodeRole::Uninitialized, false)));
        }
        o
    }

    pub fn op(kind: OperationKind, ordinal: u32, phase: OperationPhase) -> OperationStatus {
        OperationStatus {
            kind,
            name: format!("rc-{ordinal}"),
            node_id: Some(node_id(ordinal).to_string()),
            phase,
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        }
    }

    impl Observed {
        pub fn leader_mut(&mut self) -> &mut LeaderView {
            self.leader.as_mut().unwrap()
        }

        pub fn member_mut(&mut self, ordinal: u32) -> &mut ClusterMember {
            let name = format!("rc-{ordinal}");
            self.leader_mut()
                .cluster
                .members
                .iter_mut()
                .find(|m| m.name == name)
                .unwrap()
        }

        pub fn remove_member(&mut self, ordinal: u32) {
            let name = format!("rc-{ordinal}");
            self.leader_mut().cluster.members.retain(|m| m.name != name);
        }

        pub fn add_member(&mut self, ordinal: u32, role: MemberRole) {
            self.leader_mut()
                .cluster
                .members
                .push(member(ordinal, role));
        }

        /// A new pod at `ordinal` (Ready, uninitialized) with its claim; the StatefulSet grown.
        pub fn add_fresh_pod(&mut self, ordinal: u32) {
            self.pods.insert(
                ordinal,
                pod(
                    ordinal,
                    node_status(ordinal, NodeRole::Uninitialized, false),
                ),
            );
            self.pvcs.insert(ordinal);
            let sts = self.statefulset.as_mut().unwrap();
            sts.replicas = sts.replicas.max(ordinal + 1);
        }
    }
}
