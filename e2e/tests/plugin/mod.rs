//! `kubectl raft` (the `kubectl-raft` binary) against the real API server: what a user sees.

use std::path::PathBuf;
use std::process::Output;

use crate::support::{scenario, target_dir};

fn plugin() -> PathBuf {
    std::env::var("KUBECTL_RAFT_BIN")
        .map_or_else(|_| target_dir().join("debug/kubectl-raft"), PathBuf::from)
}

async fn kubectl_raft(args: &[&str]) -> Output {
    let bin = plugin();
    assert!(
        bin.exists(),
        "{} not found: build it (cargo build -p kubectl-raft) or set KUBECTL_RAFT_BIN",
        bin.display()
    );
    tokio::process::Command::new(&bin)
        .args(args)
        .output()
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kubectl-raft failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test]
async fn kubectl_raft_shows_status_members_and_interleaved_logs() {
    scenario("plugin", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        let settled = env.wait_settled("c", 3).await;
        let leader = settled.leader.clone().unwrap();
        let ns = env.ns.as_str();

        let status = stdout(&kubectl_raft(&["-n", ns, "status", "c"]).await);
        eprintln!("--- kubectl raft status c ---\n{status}");
        assert!(
            status.contains(&format!("Cluster:        c in namespace {ns}")),
            "{status}"
        );
        assert!(
            status.contains(&format!("Leader:         {leader} (term ")),
            "{status}"
        );
        assert!(status.contains("Step in flight: none"), "{status}");
        let available = status.lines().find(|l| l.starts_with("Available "));
        assert!(available.is_some_and(|l| l.contains(" True ")), "{status}");

        let members = stdout(&kubectl_raft(&["-n", ns, "members", "c"]).await);
        let rows: Vec<&str> = members.lines().skip(1).collect();
        assert_eq!(rows.len(), 3, "{members}");
        for m in &settled.members {
            let row = rows.iter().find(|r| r.starts_with(&format!("{} ", m.name)));
            let row = row.unwrap_or_else(|| panic!("{} missing:\n{members}", m.name));
            assert!(row.contains(&m.node_id) && row.contains(" voter "), "{row}");
        }

        let logs = stdout(&kubectl_raft(&["-n", ns, "logs", "c", "--tail", "20"]).await);
        for pod in ["c-0", "c-1", "c-2"] {
            assert!(
                logs.lines().any(|l| l.starts_with(&format!("{pod} | "))),
                "{pod}: {logs}"
            );
        }

        let missing = kubectl_raft(&["-n", ns, "status", "nope"]).await;
        assert!(!missing.status.success());
        let err = String::from_utf8_lossy(&missing.stderr);
        assert!(err.contains("raftcluster \"nope\" not found"), "{err}");
        env
    })
    .await;
}
