#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
//! Three example daemons beside a real three-node sidecar cluster (one daemon per node, each
//! talking only to its own node, as in a pod): they all end with the same applied index and
//! digest, every submitted operation is in the journal exactly once, and daemons restarted
//! with their state dir (after kill -9, and after SIGTERM) resume without executing anything
//! twice.
//!
//! Needs the sidecar binary: `cargo build -p raft-sidecar` first, or set `RAFT_SIDECAR_BIN`.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raft_api::client::SidecarClient;
use raft_api::daemon::{JournalEntry, Operation};
use raft_example_daemon::digest::ApplyState;
use raft_example_daemon::state::DigestReport;
use raft_testkit::local_cluster::{LocalCluster, Ports};
use raft_testkit::wait::wait_for;

/// Operations each daemon submits.
const OPS: u64 = 40;
const RATE: &str = "25";
const DAEMONS: usize = 3;

/// The sidecar binary: `RAFT_SIDECAR_BIN`, else `raft-sidecar` beside this package's binaries
/// (`$CARGO_TARGET_DIR/debug`). `CARGO_BIN_EXE_raft-sidecar` exists only inside the sidecar's
/// own package.
fn sidecar_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RAFT_SIDECAR_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "RAFT_SIDECAR_BIN={} does not exist",
            p.display()
        );
        return p;
    }
    let own = Path::new(env!("CARGO_BIN_EXE_raft-example-daemon"));
    let candidate = own.with_file_name("raft-sidecar");
    assert!(
        candidate.is_file(),
        "the raft-sidecar binary is missing at {}: build it first with \
         `cargo build -p raft-sidecar` (same CARGO_TARGET_DIR), or set RAFT_SIDECAR_BIN",
        candidate.display()
    );
    candidate
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One daemon process beside node `node`.
struct DaemonProc {
    id: String,
    api: SocketAddr,
    state_dir: PathBuf,
    log: PathBuf,
    listen: SocketAddr,
    child: Option<Child>,
}

impl DaemonProc {
    fn new(i: usize, api: SocketAddr, root: &Path) -> Self {
        Self {
            id: format!("daemon-{i}"),
            api,
            state_dir: root.join(format!("daemon-{i}-state")),
            log: root.join(format!("daemon-{i}.log")),
            listen: free_addr(),
            child: None,
        }
    }

    /// Start (again), on a fresh OS-picked port; output appended to the log file.
    fn start(&mut self) {
        self.listen = free_addr();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_raft-example-daemon"))
            .env("RAFT_API", format!("http://{}", self.api))
            .env("DAEMON_ID", &self.id)
            .env("DAEMON_LISTEN", self.listen.to_string())
            .env("DAEMON_STATE_DIR", &self.state_dir)
            .env("DAEMON_OPERATIONS", OPS.to_string())
            .env("DAEMON_RATE", RATE)
            .env("DAEMON_OP_DEADLINE", "30s")
            .env("DAEMON_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    async fn digest(&self) -> Option<DigestReport> {
        let url = format!("http://{}/digest", self.listen);
        let resp = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait for the exit code.
    async fn terminate(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        // `kill(1)` rather than a signal crate: one dependency less for a test.
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let status = wait_for(
            &format!("{} to exit after SIGTERM", self.id),
            within,
            || {
                let polled = child.try_wait().unwrap();
                async move { polled }
            },
        )
        .await;
        self.child = None;
        status.code()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Processes and a report of their logs if the test fails.
struct Fixture {
    cluster: LocalCluster,
    daemons: Vec<DaemonProc>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            if let Some(mut c) = d.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Set EXAMPLE_DAEMON_TEST_LOGS=1 (with --nocapture) to read the logs of a passing run.
        if std::thread::panicking() || std::env::var_os("EXAMPLE_DAEMON_TEST_LOGS").is_some() {
            for d in &self.daemons {
                let text = d.log_text();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "----- {} (last 40 log lines) -----\n{}",
                    d.id,
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
            for i in 0..self.cluster.nodes.len() {
                eprintln!(
                    "----- {} (last 20 log lines) -----\n{}",
                    self.cluster.nodes[i].name,
                    self.cluster.log_tail(i, 20)
                );
            }
        }
    }
}

impl Fixture {
    /// Every daemon's report, once all answer.
    async fn reports(&self) -> Option<Vec<DigestReport>> {
        let mut out = Vec::new();
        for d in &self.daemons {
            out.push(d.digest().await?);
        }
        Some(out)
    }

    /// Wait until every daemon reports `applied` executed entries and the same digest.
    async fn converged(&self, applied: u64, within: Duration) -> Vec<DigestReport> {
        wait_for(
            &format!("all daemons to apply index {applied} with equal digests"),
            within,
            || async {
                let r = self.reports().await?;
                let same = r
                    .iter()
                    .all(|x| x.applied_index == applied && x.digest == r[0].digest);
                same.then_some(r)
            },
        )
        .await
    }

    /// The whole journal of node `i`.
    async fn journal(&self, i: usize) -> Vec<JournalEntry> {
        let client: SidecarClient = self.cluster.client(i);
        let mut out = Vec::new();
        let mut from = None;
        loop {
            let page = client.journal(from, Some(1000)).await.unwrap();
            if page.entries.is_empty() {
                return out;
            }
            from = Some(page.next_index);
            out.extend(page.entries);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_agree_and_resume_from_their_checkpoints() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::new(
        &sidecar_bin(),
        &dir.path().join("cluster"),
        DAEMONS,
        Ports::Free,
        &[],
    )
    .unwrap();
    let daemons = (0..DAEMONS)
        .map(|i| DaemonProc::new(i, cluster.nodes[i].api, dir.path()))
        .collect();
    let mut f = Fixture {
        cluster,
        daemons,
        _dir: dir,
    };

    // Daemons first: their sidecars are not even listening yet, which they must sit out.
    for d in &mut f.daemons {
        d.start();
    }
    wait_for(
        "every daemon to serve /digest",
        Duration::from_secs(10),
        || f.reports(),
    )
    .await;
    f.cluster.start_all().unwrap();
    f.cluster
        .wait_for_leader(Duration::from_secs(20))
        .await
        .unwrap();

    // kill -9 daemon 0 in the middle of its submissions, then restart it on its state dir.
    wait_for(
        "daemon-0 to have a quarter of its operations acknowledged",
        Duration::from_secs(30),
        || async {
            let r = f.daemons[0].digest().await?;
            (r.acknowledged >= OPS / 4).then_some(())
        },
    )
    .await;
    f.daemons[0].kill9();
    f.daemons[0].start();

    let total = OPS * DAEMONS as u64;
    let reports = f.converged(total, Duration::from_secs(40)).await;
    for r in &reports {
        assert_eq!(r.executed, total, "{r:?}");
        assert_eq!(r.counter, i64::try_from(total).unwrap(), "{r:?}");
        assert_eq!(
            (r.acknowledged, r.failed, r.submitted),
            (OPS, 0, OPS),
            "{r:?}"
        );
        assert_eq!(r.resyncs, 0, "{r:?}");
    }
    assert!(
        f.daemons[0].log_text().contains("resuming from checkpoint"),
        "daemon-0 restarted from its checkpoint"
    );

    // Every submitted operation is in the journal exactly once, on every node, and executing
    // that journal gives the digest the daemons report.
    let expected_ids: BTreeSet<String> = (0..DAEMONS)
        .flat_map(|i| (1..=OPS).map(move |n| format!("daemon-{i}-{n}")))
        .collect();
    let journal = f.journal(0).await;
    let ids: Vec<String> = journal.iter().map(|e| e.operation.id.clone()).collect();
    assert_eq!(ids.len() as u64, total, "journal length");
    assert_eq!(
        ids.iter().cloned().collect::<BTreeSet<_>>(),
        expected_ids,
        "journal ids"
    );
    for i in 1..DAEMONS {
        let other: Vec<String> = f
            .journal(i)
            .await
            .into_iter()
            .map(|e| e.operation.id)
            .collect();
        assert_eq!(other, ids, "journal of node {i}");
    }
    let mut replay = ApplyState::default();
    for e in &journal {
        replay.execute(e);
    }
    assert_eq!(replay.digest_hex(), reports[0].digest);

    // Graceful restart of daemon 1: SIGTERM exits 0 with its checkpoint written; the new
    // process reports the restored state from its first answer and submits nothing again.
    assert_eq!(
        f.daemons[1].terminate(Duration::from_secs(15)).await,
        Some(0)
    );
    let cp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.daemons[1].state_dir.join("checkpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cp["appliedIndex"], total);
    assert_eq!(cp["digest"], reports[0].digest.as_str());
    f.daemons[1].start();
    let first = wait_for(
        "restarted daemon-1 to serve /digest",
        Duration::from_secs(10),
        || f.daemons[1].digest(),
    )
    .await;
    assert_eq!(
        (first.applied_index, first.executed, first.digest.as_str()),
        (total, total, reports[0].digest.as_str()),
        "daemon-1 starts from its checkpoint, not from index 0"
    );

    // One more operation from outside: every daemon, both restarted ones included, executes
    // exactly that one more.
    let extra = Operation {
        id: "external-1".into(),
        op_type: "example.increment".into(),
        payload: Some(serde_json::json!({ "by": 5 })),
        daemon_id: None,
        timestamp: None,
    };
    wait_for(
        "the external operation to be acknowledged",
        Duration::from_secs(20),
        || async { f.cluster.client(2).submit(&extra).await.ok() },
    )
    .await;
    let reports = f.converged(total + 1, Duration::from_secs(20)).await;
    for r in &reports {
        assert_eq!(r.executed, total + 1, "{r:?}");
        assert_eq!(r.counter, i64::try_from(total).unwrap() + 5, "{r:?}");
        assert_eq!((r.acknowledged, r.submitted), (OPS, OPS), "{r:?}");
    }

    for d in &mut f.daemons {
        assert_eq!(
            d.terminate(Duration::from_secs(15)).await,
            Some(0),
            "{}",
            d.id
        );
    }
    f.cluster.stop_all(Duration::from_secs(10)).await;
    eprintln!("took {:?}", started.elapsed());
}
