//! Health figures read from the leader's `/metrics` for the `Degraded` condition: replication
//! (submit-to-commit) p99 and the write success rate. Both are cumulative since the leader
//! started (the sidecar exports counters and a histogram, and the operator keeps no history),
//! so they describe the leader's term so far, not the last minute.

/// Failure codes that count against the success rate: the cluster could not commit (`BUSY`:
/// not in time, overloaded). Client mistakes (`INVALID_OPERATION`, `ID_CONFLICT`, …) say
/// nothing about the cluster's health.
const CLUSTER_FAILURES: [&str; 6] = [
    "TIMEOUT",
    "NO_QUORUM",
    "BUSY",
    "NO_LEADER",
    "INTERNAL",
    "SHUTTING_DOWN",
];

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LeaderHealth {
    /// Upper bound of the histogram bucket holding the 99th percentile commit latency.
    pub commit_p99_seconds: Option<f64>,
    /// Committed / (committed + cluster failures), when anything was submitted.
    pub success_rate: Option<f64>,
}

/// Parse the sidecar's OpenMetrics text. Unknown or malformed lines are ignored: a newer
/// sidecar with more metrics must not break the operator.
pub fn parse(text: &str) -> LeaderHealth {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let mut committed = 0.0;
    let mut failed = 0.0;
    for line in text.lines() {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some(labels) = name_labels.strip_prefix("consensus_commit_latency_seconds_bucket") {
            if let Some(le) = label(labels, "le") {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                if !bound.is_nan() {
                    buckets.push((bound, value));
                }
            }
        } else if name_labels == "consensus_operations_committed_total" {
            committed = value;
        } else if let Some(labels) = name_labels.strip_prefix("consensus_operations_failed_total")
            && label(labels, "code").is_some_and(|c| CLUSTER_FAILURES.contains(&c))
        {
            failed += value;
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    let commit_p99_seconds = (total > 0.0)
        .then(|| {
            buckets
                .iter()
                .find(|(_, count)| *count >= 0.99 * total)
                .map(|b| b.0)
        })
        .flatten();
    let attempts = committed + failed;
    LeaderHealth {
        commit_p99_seconds,
        success_rate: (attempts > 0.0).then(|| committed / attempts),
    }
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let inner = labels.strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE consensus_commit_latency_seconds histogram
consensus_operations_committed_total 990
consensus_operations_failed_total{code="TIMEOUT"} 5
consensus_operations_failed_total{code="INVALID_OPERATION"} 500
consensus_operations_failed_total{code="NO_QUORUM"} 5
consensus_commit_latency_seconds_bucket{le="0.004"} 900
consensus_commit_latency_seconds_bucket{le="0.008"} 980
consensus_commit_latency_seconds_bucket{le="0.016"} 995
consensus_commit_latency_seconds_bucket{le="+Inf"} 1000
consensus_commit_latency_seconds_count 1000
"#;

    #[test]
    fn p99_is_the_bucket_bound_holding_the_99th_percentile() {
        assert_eq!(parse(TEXT).commit_p99_seconds, Some(0.016));
    }

    #[test]
    fn client_mistakes_do_not_count_against_the_success_rate() {
        assert_eq!(parse(TEXT).success_rate, Some(0.99));
    }

    #[test]
    fn an_idle_or_unreadable_leader_reports_nothing() {
        assert_eq!(parse("").commit_p99_seconds, None);
        assert_eq!(
            parse("garbage\nconsensus_operations_committed_total x").success_rate,
            None
        );
    }
}
