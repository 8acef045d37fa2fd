//! A RaftCluster's status as text, in the manner of `kubectl cnpg status`: a summary, then the
//! conditions and the members as tables. Pure: the status and the time in, lines out.

use k8s_openapi::jiff::Timestamp;
use raft_crds::{RaftCluster, RaftClusterStatus};

/// The summary, the conditions and the members.
pub fn render(rc: &RaftCluster, now: Timestamp) -> String {
    let status = rc.status.clone().unwrap_or_default();
    let mut out = summary(rc, &status, now);
    out.push('\n');
    out.push_str("Conditions\n");
    out.push_str(&conditions(&status, now));
    out.push('\n');
    out.push_str("Members\n");
    out.push_str(&members(&status));
    out
}

fn summary(rc: &RaftCluster, s: &RaftClusterStatus, now: Timestamp) -> String {
    let name = rc.metadata.name.as_deref().unwrap_or_default();
    let namespace = rc.metadata.namespace.as_deref().unwrap_or("default");
    let leader = match (&s.leader, s.term, s.commit_index) {
        (Some(l), Some(t), Some(c)) => format!("{l} (term {t}, commit index {c})"),
        (Some(l), _, _) => l.clone(),
        (None, _, _) => "none".to_owned(),
    };
    let step = match &s.operation {
        Some(op) => format!(
            "{} {}, phase {}, for {}",
            word(&op.kind),
            op.name,
            word(&op.phase),
            age(op.started_at.0, now)
        ),
        None => "none".to_owned(),
    };
    let paused = if rc.spec.paused { " (paused)" } else { "" };
    let backup = match (&rc.spec.backup, s.backup.as_ref()) {
        (None, _) => "not configured".to_owned(),
        (Some(_), Some(b)) => match (&b.last_successful, &b.last_failure) {
            (_, Some(f)) => format!("failed {} ago: {}", age(f.at.0, now), f.message),
            (Some(l), None) => format!(
                "{} ({} bytes, log index {}), {} ago",
                l.name,
                l.size_bytes,
                l.last_log_index,
                age(l.started_at.0, now)
            ),
            (None, None) => "none yet".to_owned(),
        },
        (Some(_), None) => "none yet".to_owned(),
    };
    let restored = s.restored_from.as_ref().map(|r| {
        (
            "Restored from",
            format!(
                "{} of cluster {} (log index {})",
                r.backup,
                s.parent_cluster_id.as_deref().unwrap_or("?"),
                r.last_log_index
            ),
        )
    });
    let recovery = s.recovery.as_ref().map(|r| {
        (
            "Recovery",
            format!(
                "{:?} from {}, {} ago: {}",
                r.state,
                r.member,
                age(r.at.0, now),
                r.message
            ),
        )
    });
    let rows = [
        (
            "Cluster",
            format!("{name} in namespace {namespace}{paused}"),
        ),
        (
            "Cluster id",
            s.cluster_id.clone().unwrap_or_else(|| "not yet".into()),
        ),
    ]
    .into_iter()
    .chain(restored)
    .chain([
        ("Phase", word(&s.phase)),
        (
            "Replicas",
            format!("{} desired, {} ready", rc.spec.replicas, s.ready_replicas),
        ),
        (
            "Sidecar image",
            s.sidecar_image
                .clone()
                .unwrap_or_else(|| "not recorded".into()),
        ),
        ("Leader", leader),
        ("Step in flight", step),
        ("Last backup", backup),
    ])
    .chain(recovery);
    rows.map(|(k, v)| format!("{:<16}{v}\n", format!("{k}:")))
        .collect()
}

/// The conditions table (type, status, reason, age, message).
pub fn conditions(s: &RaftClusterStatus, now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = s
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(c.last_transition_time.0, now),
                c.message.clone(),
            ]
        })
        .collect();
    table(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows)
}

/// The members table (name, node id, role, leader, healthy, matched index).
pub fn members(s: &RaftClusterStatus) -> String {
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            let leads = s.leader.as_deref() == Some(m.name.as_str());
            vec![
                m.name.clone(),
                m.node_id.clone(),
                word(&m.role),
                if leads { "yes" } else { "" }.to_owned(),
                if m.healthy { "yes" } else { "NO" }.to_owned(),
                m.matched_index
                    .map_or_else(|| "-".into(), |i| i.to_string()),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "NODE ID",
            "ROLE",
            "LEADER",
            "HEALTHY",
            "MATCHED INDEX",
        ],
        &rows,
    )
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "(none)\n".to_owned();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// An enum of the status as the API spells it (`RestartMember`, `voter`).
fn word<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

/// How long ago, kubectl style: 45s, 3m, 2h, 4d.
fn age(then: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn cluster() -> RaftCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "consensus.unrdf.io/v1alpha1",
            "kind": "RaftCluster",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {"replicas": 3, "backup": {
                "schedule": "0 * * * *",
                "s3": {"bucket": "b", "credentialsSecret": "s3"}
            }},
            "status": {
                "backup": {"lastSuccessful": {
                    "name": "20261205T090000.120Z.rsnp", "location": "s3://b/shop/orders",
                    "startedAt": "2026-12-05T09:00:00Z", "durationMs": 800, "sizeBytes": 52311,
                    "lastLogIndex": 1150, "journalLastIndex": 1003, "sha256": "ab"
                }},
                "phase": "Updating",
                "replicas": 3,
                "readyReplicas": 2,
                "clusterId": "rc-0123456789abcdef",
                "sidecarImage": "raft-sidecar:0.1.0",
                "leader": "orders-0",
                "term": 4,
                "commitIndex": 1200,
                "members": [
                    {"name": "orders-0", "nodeId": "11", "role": "voter", "healthy": true, "matchedIndex": 1200},
                    {"name": "orders-1", "nodeId": "22", "role": "voter", "healthy": true, "matchedIndex": 1199},
                    {"name": "orders-2", "nodeId": "33", "role": "voter", "healthy": false}
                ],
                "operation": {
                    "kind": "RestartMember", "name": "orders-2", "nodeId": "33",
                    "phase": "AwaitingRejoin", "startedAt": "2026-12-05T10:00:00Z"
                },
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "QuorumHealthy",
                     "message": "2 of 3 voters healthy", "lastTransitionTime": "2026-12-05T09:00:00Z"}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_status_shows_the_leader_the_step_the_conditions_and_every_member() {
        let now: Timestamp = "2026-12-05T10:02:30Z".parse().unwrap();
        let text = render(&cluster(), now);
        let expected = "\
Cluster:        orders in namespace shop
Cluster id:     rc-0123456789abcdef
Phase:          Updating
Replicas:       3 desired, 2 ready
Sidecar image:  raft-sidecar:0.1.0
Leader:         orders-0 (term 4, commit index 1200)
Step in flight: RestartMember orders-2, phase AwaitingRejoin, for 2m
Last backup:    20261205T090000.120Z.rsnp (52311 bytes, log index 1150), 62m ago

Conditions
TYPE       STATUS  REASON         AGE  MESSAGE
Available  True    QuorumHealthy  62m  2 of 3 voters healthy

Members
NAME      NODE ID  ROLE   LEADER  HEALTHY  MATCHED INDEX
orders-0  11       voter  yes     yes      1200
orders-1  22       voter          yes      1199
orders-2  33       voter          NO       -
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn a_restored_cluster_names_its_backup_and_parent() {
        let mut rc = cluster();
        let s = rc.status.as_mut().unwrap();
        s.parent_cluster_id = Some("rc-old".into());
        s.restored_from = Some(raft_crds::RestoredFromStatus {
            backup: "s3://backups/shop/orders/20261205T090000.120Z.rsnp".into(),
            snapshot_id: "3-1150-2".into(),
            last_log_index: 1150,
            last_log_term: 3,
            sha256: "ab".into(),
        });
        let text = render(&rc, "2026-12-05T10:02:30Z".parse().unwrap());
        assert!(
            text.contains(
                "Cluster id:     rc-0123456789abcdef\nRestored from:  \
                 s3://backups/shop/orders/20261205T090000.120Z.rsnp of cluster rc-old (log index \
                 1150)\nPhase:"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_cluster_without_status_says_so_instead_of_failing() {
        let mut rc = cluster();
        rc.status = None;
        let text = render(&rc, Timestamp::now());
        assert!(text.contains("Cluster id:     not yet"), "{text}");
        assert!(text.contains("Leader:         none"), "{text}");
        assert!(text.ends_with("Members\n(none)\n"), "{text}");
    }
}
