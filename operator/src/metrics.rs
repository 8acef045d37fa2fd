//! The operator's Prometheus metrics: `raftcluster_*` gauges per cluster (what the last
//! reconcile observed) and reconcile counters and durations. Label values are bounded: cluster
//! namespace/name, condition types and error categories from fixed sets.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use raft_crds::RaftClusterStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConditionLabels {
    pub namespace: String,
    pub name: String,
    pub condition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub category: &'static str,
}

pub struct Metrics {
    registry: Registry,
    desired_replicas: Family<ClusterLabels, Gauge>,
    ready_replicas: Family<ClusterLabels, Gauge>,
    voters: Family<ClusterLabels, Gauge>,
    learners: Family<ClusterLabels, Gauge>,
    term: Family<ClusterLabels, Gauge>,
    commit_index: Family<ClusterLabels, Gauge>,
    operation_in_flight: Family<ClusterLabels, Gauge>,
    operation_started: Family<ClusterLabels, Gauge>,
    condition: Family<ConditionLabels, Gauge>,
    backup_success: Family<ClusterLabels, Gauge>,
    backup_size: Family<ClusterLabels, Gauge>,
    backup_duration: Family<ClusterLabels, Gauge>,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            desired_replicas: Family::default(),
            ready_replicas: Family::default(),
            voters: Family::default(),
            learners: Family::default(),
            term: Family::default(),
            commit_index: Family::default(),
            operation_in_flight: Family::default(),
            operation_started: Family::default(),
            condition: Family::default(),
            backup_success: Family::default(),
            backup_size: Family::default(),
            backup_duration: Family::default(),
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            leader: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "raftcluster_desired_replicas",
            "spec.replicas",
            m.desired_replicas.clone(),
        );
        registry.register(
            "raftcluster_ready_replicas",
            "Pods that are Ready",
            m.ready_replicas.clone(),
        );
        registry.register(
            "raftcluster_voters",
            "Voters in the leader's committed membership",
            m.voters.clone(),
        );
        registry.register(
            "raftcluster_learners",
            "Learners in the leader's committed membership",
            m.learners.clone(),
        );
        registry.register(
            "raftcluster_term",
            "Raft term of the current leader",
            m.term.clone(),
        );
        registry.register(
            "raftcluster_commit_index",
            "Leader's commit index",
            m.commit_index.clone(),
        );
        registry.register(
            "raftcluster_operation_in_flight",
            "1 while a membership step is recorded in status.operation",
            m.operation_in_flight.clone(),
        );
        registry.register(
            "raftcluster_operation_started_timestamp_seconds",
            "When the step in status.operation was recorded (Unix seconds), 0 without one",
            m.operation_started.clone(),
        );
        registry.register(
            "raftcluster_condition",
            "1 when the status condition is True, 0 when False, -1 when Unknown",
            m.condition.clone(),
        );
        registry.register(
            "raftcluster_backup_last_success_timestamp_seconds",
            "When the newest successful backup started (Unix seconds)",
            m.backup_success.clone(),
        );
        registry.register(
            "raftcluster_backup_last_size_bytes",
            "Size of the newest successful backup's image",
            m.backup_size.clone(),
        );
        registry.register(
            "raftcluster_backup_last_duration_milliseconds",
            "How long the newest successful backup took",
            m.backup_duration.clone(),
        );
        registry.register(
            "raft_operator_reconciles",
            "Reconciles by result",
            m.reconciles.clone(),
        );
        registry.register(
            "raft_operator_reconcile_errors",
            "Failed reconciles by error category",
            m.errors.clone(),
        );
        registry.register(
            "raft_operator_reconcile_duration_seconds",
            "Duration of one reconcile",
            m.duration.clone(),
        );
        registry.register(
            "raft_operator_leader",
            "1 while this replica runs the controllers (holds the leader Lease, or runs without leader election), 0 while it waits as a standby",
            m.leader.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Record what a reconcile wrote into a cluster's status.
    pub fn observe_cluster(
        &self,
        namespace: &str,
        name: &str,
        desired: i32,
        status: &RaftClusterStatus,
    ) {
        let l = ClusterLabels {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let count = |role| status.members.iter().filter(|m| m.role == role).count() as i64;
        self.desired_replicas
            .get_or_create(&l)
            .set(i64::from(desired));
        self.ready_replicas
            .get_or_create(&l)
            .set(i64::from(status.ready_replicas));
        self.voters
            .get_or_create(&l)
            .set(count(raft_crds::MemberRole::Voter));
        self.learners
            .get_or_create(&l)
            .set(count(raft_crds::MemberRole::Learner));
        self.term.get_or_create(&l).set(status.term.unwrap_or(0));
        self.commit_index
            .get_or_create(&l)
            .set(status.commit_index.unwrap_or(0));
        self.operation_in_flight
            .get_or_create(&l)
            .set(i64::from(status.operation.is_some()));
        self.operation_started.get_or_create(&l).set(
            status
                .operation
                .as_ref()
                .map_or(0, |op| op.started_at.0.as_second()),
        );
        for c in &status.conditions {
            self.condition
                .get_or_create(&ConditionLabels {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    condition: c.type_.clone(),
                })
                .set(match c.status.as_str() {
                    "True" => 1,
                    "False" => 0,
                    _ => -1,
                });
        }
        if let Some(b) = status
            .backup
            .as_ref()
            .and_then(|b| b.last_successful.as_ref())
        {
            self.backup_success
                .get_or_create(&l)
                .set(b.started_at.0.as_second());
            self.backup_size.get_or_create(&l).set(b.size_bytes);
            self.backup_duration.get_or_create(&l).set(b.duration_ms);
        }
    }

    pub fn reconciled(&self, seconds: f64, error: Option<&'static str>) {
        self.duration.observe(seconds);
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Some(category) = error {
            self.errors.get_or_create(&ErrorLabels { category }).inc();
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_gauges_and_reconcile_counters_are_exported() {
        let m = Metrics::new();
        let status = RaftClusterStatus {
            term: Some(7),
            ..Default::default()
        };
        m.observe_cluster("ns", "prod", 3, &status);
        m.reconciled(0.01, Some("Sidecar"));
        let text = m.encode().unwrap();
        assert!(
            text.contains(r#"raftcluster_term{namespace="ns",name="prod"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"raft_operator_reconcile_errors_total{category="Sidecar"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("raft_operator_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn the_leader_gauge_says_whether_this_replica_runs_the_controllers() {
        let m = Metrics::new();
        assert!(m.encode().unwrap().contains("raft_operator_leader 0\n"));
        m.set_leader(true);
        assert!(m.encode().unwrap().contains("raft_operator_leader 1\n"));
        m.set_leader(false);
        assert!(m.encode().unwrap().contains("raft_operator_leader 0\n"));
    }
}
