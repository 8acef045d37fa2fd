//! Prometheus metrics (prometheus-client, OpenMetrics text on the admin `/metrics`), listed in
//! docs/sidecar.md "Metrics". Label values come from enums or bounded sets (error codes, roles,
//! partition states, member names), never from request payloads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use raft_api::ErrorCode;
use raft_api::daemon::{MemberRole, PartitionState};
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: &'static str,
}

impl From<MemberRole> for RoleLabel {
    fn from(r: MemberRole) -> Self {
        let role = match r {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        };
        RoleLabel { role }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

/// What the TLS watcher reports.
#[derive(Clone, Default)]
pub struct TlsMetrics {
    /// `consensus_tls_reloads_total`, by result.
    pub reloads: Family<ReasonLabel, Counter>,
    /// `consensus_tls_certificate_expiry_timestamp_seconds`.
    pub expiry: Gauge,
}

/// Every metric the sidecar exports.
pub struct Metrics {
    registry: Registry,
    pub replicated: Counter,
    pub committed: Counter,
    pub failed: Family<CodeLabel, Counter>,
    pub duplicate: Counter,
    pub log_size: Gauge,
    pub current_term: Gauge,
    pub is_leader: Gauge,
    pub leader_changes: Counter,
    pub leadership_handoffs: Counter,
    pub partition_state: Family<StateLabel, Gauge>,
    pub partitions_detected: Counter,
    pub quorum_available: Gauge,
    pub members: Family<RoleLabel, Gauge>,
    pub peer_last_contact: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    pub replication_lag: Family<PeerLabel, Gauge>,
    pub commit_latency: Histogram,
    pub snapshot_index: Gauge,
    pub snapshot_build: Histogram,
    pub journal_first_index: Gauge,
    pub resident_memory: Gauge,
    pub peer_handshakes_refused: Family<ReasonLabel, Counter>,
    pub tls_reloads: Family<ReasonLabel, Counter>,
    pub tls_expiry: Gauge,
    pub connections_refused: Family<ListenerLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The TLS watcher's share.
    pub fn tls(&self) -> TlsMetrics {
        TlsMetrics {
            reloads: self.tls_reloads.clone(),
            expiry: self.tls_expiry.clone(),
        }
    }

    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            replicated: Counter::default(),
            committed: Counter::default(),
            failed: Family::default(),
            duplicate: Counter::default(),
            log_size: Gauge::default(),
            current_term: Gauge::default(),
            is_leader: Gauge::default(),
            leader_changes: Counter::default(),
            leadership_handoffs: Counter::default(),
            partition_state: Family::default(),
            partitions_detected: Counter::default(),
            quorum_available: Gauge::default(),
            members: Family::default(),
            peer_last_contact: Family::default(),
            replication_lag: Family::default(),
            commit_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            snapshot_index: Gauge::default(),
            // 10 ms .. ~80 s: an image holds the whole state, so builds grow with it.
            snapshot_build: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            journal_first_index: Gauge::default(),
            resident_memory: Gauge::default(),
            peer_handshakes_refused: Family::default(),
            tls_reloads: Family::default(),
            tls_expiry: Gauge::default(),
            connections_refused: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "process_resident_memory_bytes",
            "Resident set size of this process",
            m.resident_memory.clone(),
        );
        let sub = r.sub_registry_with_prefix("consensus");
        sub.register(
            "operations_replicated",
            "Operations that reached a majority",
            m.replicated.clone(),
        );
        sub.register(
            "operations_committed",
            "Operations committed and applied",
            m.committed.clone(),
        );
        sub.register(
            "operations_failed",
            "Operations answered with an error, by code",
            m.failed.clone(),
        );
        sub.register(
            "operations_duplicate",
            "Submissions answered as duplicates",
            m.duplicate.clone(),
        );
        sub.register("log_size", "Raft log entries retained", m.log_size.clone());
        sub.register("current_term", "Current Raft term", m.current_term.clone());
        sub.register("is_leader", "1 when this node leads", m.is_leader.clone());
        sub.register(
            "leader_changes",
            "Leader changes seen by this node",
            m.leader_changes.clone(),
        );
        sub.register(
            "leadership_handoffs",
            "Leadership handed over by this node (SIGTERM or the admin API)",
            m.leadership_handoffs.clone(),
        );
        sub.register(
            "partition_state",
            "1 for the current partition state",
            m.partition_state.clone(),
        );
        sub.register(
            "partitions_detected",
            "Partitions detected",
            m.partitions_detected.clone(),
        );
        sub.register(
            "quorum_available",
            "1 when a quorum is reachable",
            m.quorum_available.clone(),
        );
        sub.register("members", "Members by role", m.members.clone());
        sub.register(
            "peer_last_contact_seconds",
            "Seconds since each peer was last heard",
            m.peer_last_contact.clone(),
        );
        sub.register(
            "replication_lag",
            "Entries each follower is behind (leader only)",
            m.replication_lag.clone(),
        );
        sub.register(
            "commit_latency_seconds",
            "Submit-to-commit latency",
            m.commit_latency.clone(),
        );
        sub.register(
            "snapshot_index",
            "Raft index of the current snapshot",
            m.snapshot_index.clone(),
        );
        sub.register(
            "snapshot_build_seconds",
            "Time to build a snapshot image (the wait for its turn excluded)",
            m.snapshot_build.clone(),
        );
        sub.register(
            "peer_handshakes_refused",
            "Peer connections refused at the handshake, by reason (bad_token, other_cluster, other_node, unknown_path)",
            m.peer_handshakes_refused.clone(),
        );
        sub.register(
            "tls_reloads",
            "Certificate files read again after a change, by result (loaded, refused)",
            m.tls_reloads.clone(),
        );
        sub.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When this member's certificate expires (Unix time; 0 without TLS)",
            m.tls_expiry.clone(),
        );
        sub.register(
            "connections_refused",
            "Connections closed before a request was served, by listener and reason",
            m.connections_refused.clone(),
        );
        sub.register(
            "journal_first_index",
            "Oldest retained journal index",
            m.journal_first_index.clone(),
        );
        m
    }

    pub fn count_failure(&self, code: ErrorCode) {
        self.failed
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    pub fn set_partition_state(&self, current: PartitionState) {
        for state in PartitionState::ALL {
            let v = i64::from(state == current);
            self.partition_state
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(v);
        }
    }

    /// OpenMetrics text of every metric, RSS refreshed first.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_set_bytes() {
            self.resident_memory
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Resident set size from `/proc/self/statm` (Linux).
pub fn resident_set_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_the_spec_names() {
        let m = Metrics::new();
        m.committed.inc();
        m.count_failure(ErrorCode::NoQuorum);
        m.set_partition_state(PartitionState::Minority);
        m.members.get_or_create(&MemberRole::Voter.into()).set(3);
        let text = m.render();
        for name in [
            "consensus_operations_committed_total 1",
            "consensus_operations_failed_total{code=\"NO_QUORUM\"} 1",
            "consensus_partition_state{state=\"minority\"} 1",
            "consensus_partition_state{state=\"healthy\"} 0",
            "consensus_members{role=\"voter\"} 3",
            "consensus_commit_latency_seconds_bucket",
            "consensus_snapshot_build_seconds_bucket",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
