//! Crash safety of storage: kill -9 under heavy writes, while a snapshot is being installed and
//! of the leader while it sends one, repeated, always restarts and loses nothing acknowledged; a
//! damaged RocksDB or snapshot file stops the node with an error naming the file instead of
//! being read as "empty". Loopback processes
//! (no network faults needed, no root).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TestCluster, retryable, wait_for};
use raft_api::client::SidecarClient;
use raft_api::daemon::{Operation, SubmitResult};

const SECS_30: Duration = Duration::from_secs(30);

fn op(id: &str, payload_bytes: usize) -> Operation {
    Operation {
        id: id.to_string(),
        op_type: "crash".into(),
        payload: Some(serde_json::json!({ "data": "x".repeat(payload_bytes) })),
        daemon_id: Some("crash-test".into()),
        timestamp: None,
    }
}

/// Submit operations `w<k>-<n>` to random nodes until `stop`, retrying each by id; returns
/// the acknowledgements.
async fn writer(
    k: usize,
    clients: Vec<SidecarClient>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Vec<SubmitResult> {
    let mut acks = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let o = op(&format!("w{k}-{n}"), 100);
        n += 1;
        for attempt in 0.. {
            let i = (k + attempt + n) % clients.len();
            match clients[i].submit(&o).await {
                Ok(r) => {
                    acks.push(r);
                    acked.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if retryable(&e) => {
                    if stop.load(Ordering::Relaxed) && attempt > 200 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{}: {e}", o.id),
            }
        }
    }
    acks
}

/// Every acknowledged id is in `journal` exactly once, at its acknowledged index.
fn assert_each_ack_once(journal: &[(u64, String)], acks: &[SubmitResult]) {
    let mut at: HashMap<&str, Vec<u64>> = HashMap::new();
    for (i, id) in journal {
        at.entry(id.as_str()).or_default().push(*i);
    }
    for (id, where_) in &at {
        assert_eq!(where_.len(), 1, "{id} appears at {where_:?}");
    }
    for a in acks {
        assert_eq!(
            at.get(a.operation_id.as_str()),
            Some(&vec![a.log_index]),
            "acknowledged {} at {} (term {})",
            a.operation_id,
            a.log_index,
            a.term
        );
    }
}

/// Wait until the journals of `nodes` are identical with at least `min_len` entries (clients
/// may have given up on a few writes that still committed).
async fn agree_at_least(
    t: &TestCluster,
    nodes: &[usize],
    min_len: usize,
    within: Duration,
) -> Vec<(u64, String)> {
    let what = format!("journals of {nodes:?} to agree on at least {min_len} entries");
    wait_for(&what, within, || async {
        let first = t.journal(nodes[0]).await.ok()?;
        for i in &nodes[1..] {
            if t.journal(*i).await.ok()? != first {
                return None;
            }
        }
        (first.len() >= min_len).then_some(first)
    })
    .await
}

async fn answers(t: &TestCluster, i: usize) {
    wait_for(
        &format!("node {i} to answer /v1/state after a restart"),
        SECS_30,
        || async { t.client(i).state().await.ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_heavy_writes_repeatedly_always_restarts_and_loses_no_acknowledged_write() {
    let mut t = TestCluster::start(
        3,
        &[
            "--snapshot-interval",
            "300",
            "--log-compaction-threshold",
            "100",
        ],
    )
    .await;
    let clients: Vec<SidecarClient> = (0..3).map(|i| t.client(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|k| tokio::spawn(writer(k, clients.clone(), stop.clone(), acked.clone())))
        .collect();
    for round in 0..8 {
        let before = acked.load(Ordering::Relaxed);
        wait_for(
            &format!("50 more acknowledgements before crash {round}"),
            Duration::from_secs(60),
            || async { (acked.load(Ordering::Relaxed) >= before + 50).then_some(()) },
        )
        .await;
        let victims: Vec<usize> = match round % 4 {
            0 => vec![t.leader(SECS_30).await],
            3 => vec![0, 1, 2],
            _ => vec![(t.leader(SECS_30).await + round) % 3],
        };
        for v in &victims {
            t.c.kill9(*v).await.unwrap();
        }
        for v in &victims {
            t.c.start(*v).unwrap();
        }
        for v in &victims {
            answers(&t, *v).await;
            assert!(t.c.is_running(*v), "node {v} exited after restart {round}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut acks = Vec::new();
    for w in writers {
        acks.extend(w.await.unwrap());
    }
    let total = acks.len();
    assert!(total >= 400, "only {total} writes acknowledged");
    let journal = agree_at_least(&t, &[0, 1, 2], total, SECS_30).await;
    assert_each_ack_once(&journal, &acks);
}

/// Snapshots every 100 entries and a short log, so a node that falls behind needs a snapshot.
const SNAPSHOT_OFTEN: &[&str] = &[
    "--snapshot-interval",
    "100",
    "--log-compaction-threshold",
    "10",
    "--max-log-size",
    "200",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_installing_a_snapshot_repeatedly_then_the_node_catches_up_intact() {
    let mut t = TestCluster::start(3, SNAPSHOT_OFTEN).await;
    let leader = t.leader(SECS_30).await;
    let lagger = (leader + 1) % 3;
    t.c.kill9(lagger).await.unwrap();
    // Enough data that the snapshot takes several 1 MiB chunks to ship.
    let mut acks = Vec::new();
    let online: Vec<usize> = (0..3).filter(|i| *i != lagger).collect();
    for n in 0..1500 {
        let o = op(&format!("big-{n}"), 4000);
        acks.push(t.submit_retrying(&online, &o, SECS_30).await);
    }
    let purged_past_lagger = wait_for(
        "the leader to compact its log past what the stopped node holds",
        SECS_30,
        || async {
            let s = t.client(leader).state().await.ok()?;
            (s.snapshot_index > 1000).then_some(s.snapshot_index)
        },
    )
    .await;
    let mut killed_while_behind = 0;
    for (round, delay_ms) in [50u64, 150, 300, 500, 800, 1200].into_iter().enumerate() {
        t.c.start(lagger).unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        // Only a node that answers and is still short of the snapshot counts as evidence.
        let behind = t
            .client(lagger)
            .state()
            .await
            .is_ok_and(|s| s.applied_index < purged_past_lagger);
        killed_while_behind += usize::from(behind);
        t.c.kill9(lagger).await.unwrap();
        println!("crash {round}: killed {delay_ms} ms after start, still behind: {behind}");
    }
    assert!(
        killed_while_behind > 0,
        "no kill landed before the snapshot was installed"
    );
    let _dump = DumpOnPanic(t.c.nodes[lagger].log_path());
    t.c.start(lagger).unwrap();
    answers(&t, lagger).await;
    let journal = agree_at_least(&t, &[0, 1, 2], acks.len(), Duration::from_secs(60)).await;
    assert_each_ack_once(&journal, &acks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_while_it_sends_a_snapshot_loses_nothing_and_everyone_catches_up() {
    let mut t = TestCluster::start(3, SNAPSHOT_OFTEN).await;
    let mut acks = Vec::new();
    let mut killed_while_sending = 0;
    for round in 0..3 {
        let leader = t.leader(SECS_30).await;
        let lagger = (leader + 1) % 3;
        t.c.kill9(lagger).await.unwrap();
        let online: Vec<usize> = (0..3).filter(|i| *i != lagger).collect();
        for n in 0..400 {
            let o = op(&format!("send-{round}-{n}"), 4000);
            acks.push(t.submit_retrying(&online, &o, SECS_30).await);
        }
        let lagger_applied = t.journal(online[0]).await.unwrap().len() as u64 - 400;
        let target = wait_for(
            "the leader to compact its log past what the stopped node holds",
            SECS_30,
            || async {
                let s = t.client(leader).state().await.ok()?;
                (s.snapshot_index > lagger_applied + 200).then_some(s.snapshot_index)
            },
        )
        .await;
        // The lagger comes back and the leader starts shipping its snapshot: kill the leader
        // as soon as the lagger answers, if it is still short of the snapshot.
        t.c.start(lagger).unwrap();
        let state = wait_for("the lagger to answer", SECS_30, || async {
            t.client(lagger).state().await.ok()
        })
        .await;
        t.c.kill9(leader).await.unwrap();
        let behind = state.applied_index < target;
        killed_while_sending += usize::from(behind);
        println!(
            "round {round}: leader killed with the lagger at applied index {} of snapshot {target}",
            state.applied_index
        );
        // The two others elect a leader and the lagger catches up from it.
        t.submit_retrying(
            &online_after(leader),
            &op(&format!("after-{round}"), 10),
            SECS_30,
        )
        .await;
        t.c.start(leader).unwrap();
        answers(&t, leader).await;
    }
    assert!(
        killed_while_sending > 0,
        "no kill landed before the snapshot reached the lagger"
    );
    let journal = agree_at_least(&t, &[0, 1, 2], acks.len() + 3, Duration::from_secs(60)).await;
    assert_each_ack_once(&journal, &acks);
}

fn online_after(killed: usize) -> Vec<usize> {
    (0..3).filter(|i| *i != killed).collect()
}

/// On a failed assertion, print the lines of a node's log that say why it failed.
struct DumpOnPanic(PathBuf);

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            // The first panic of the node, with what led to it; else how its log ends.
            let at = lines
                .iter()
                .position(|l| l.contains("panicked at"))
                .map_or(lines.len(), |at| (at + 6).min(lines.len()));
            for line in &lines[at.saturating_sub(30)..at] {
                eprintln!("{}: {line}", self.0.display());
            }
        }
    }
}

/// How a file is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut to half its length.
    Truncate,
    /// Overwrite 64 bytes in the middle with garbage.
    Scribble,
    /// Empty it.
    Empty,
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    match how {
        Damage::Truncate => bytes.truncate(bytes.len() / 2),
        Damage::Empty => bytes.clear(),
        Damage::Scribble => {
            let mid = bytes.len() / 2;
            let end = (mid + 64).min(bytes.len());
            for b in &mut bytes[mid..end] {
                *b ^= 0xA5;
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The RocksDB files of a data dir whose name ends with `suffix` (or equals it).
fn rocks_files(dir: &Path, pick: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("rocksdb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| pick(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_rocksdb_file_stops_the_node_with_an_error_naming_the_file() {
    let mut t = TestCluster::start(3, &["--snapshot-interval", "200"]).await;
    let leader = t.leader(SECS_30).await;
    let victim = (leader + 1) % 3;
    for n in 0..600 {
        t.submit_retrying(&[leader], &op(&format!("d-{n}"), 200), SECS_30)
            .await;
    }
    t.journals_agree(&[0, 1, 2], 600, SECS_30).await;
    let node_id = t.client(victim).state().await.unwrap().node_id;
    // A clean stop flushes memtables: the data now lives in SST files.
    assert_eq!(
        t.c.terminate(victim, SECS_30).await.unwrap(),
        Some(0),
        "clean stop"
    );
    let dir = t.c.nodes[victim].dir.clone();
    let pristine = dir.with_extension("pristine");
    copy_dir(&dir, &pristine);
    let sst = rocks_files(&dir, |n| n.ends_with(".sst"));
    let manifest = rocks_files(&dir, |n| n.starts_with("MANIFEST-"));
    assert!(!sst.is_empty(), "no SST file after a clean stop");
    let cases = [
        (sst.last().unwrap().clone(), Damage::Scribble),
        (sst.last().unwrap().clone(), Damage::Truncate),
        (manifest.last().unwrap().clone(), Damage::Truncate),
        (dir.join("rocksdb").join("CURRENT"), Damage::Empty),
        (dir.join("snapshots").join("current.snap"), Damage::Scribble),
        (dir.join("snapshots").join("current.snap"), Damage::Truncate),
    ];
    let mut failures = Vec::new();
    for (file, how) in cases {
        std::fs::remove_dir_all(&dir).unwrap();
        copy_dir(&pristine, &dir);
        damage(&file, how);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let log_before = std::fs::read_to_string(t.c.nodes[victim].log_path())
            .unwrap_or_default()
            .len();
        t.c.start(victim).unwrap();
        // Either the node exits (the expected outcome) or it keeps running; a running node
        // must still hold every entry, never an empty store.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut exited = false;
        while Instant::now() < deadline {
            if !t.c.is_running(victim) {
                exited = true;
                break;
            }
            if let Ok(page) = t.client(victim).journal(None, Some(1)).await
                && page.commit_index >= 600
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(t.c.nodes[victim].log_path()).unwrap();
        let new_output = &log[log_before..];
        let verdict: Result<&str, String> = if exited {
            if new_output.contains(&name) {
                Ok("refused to start, naming the file")
            } else {
                Err(format!(
                    "{how:?} {name}: exited, but the error does not name the file:\n{new_output}"
                ))
            }
        } else {
            // Still running: RocksDB checks an SST block only when it reads it. Reading the
            // whole journal must then either fail naming the file or return everything, on
            // the same node id (a store read as empty would come back as a new node id).
            let state = t.client(victim).state().await;
            let journal = t.journal(victim).await;
            t.c.kill9(victim).await.unwrap();
            match (state, journal) {
                (Ok(s), Ok(j)) if s.node_id == node_id && j.len() == 600 => {
                    Ok("damaged block not read yet; same node id, every entry still served")
                }
                (_, Err(e)) if e.to_string().contains(&name) => Ok("read refused, naming the file"),
                (s, j) => Err(format!(
                    "{how:?} {name}: the node kept running instead of reporting the damage: state {:?}, journal {:?}",
                    s.map(|s| (s.node_id, s.applied_index)),
                    j.map(|j| j.len())
                )),
            }
        };
        match &verdict {
            Ok(note) => println!("{how:?} {name}: {note}"),
            Err(failure) => println!("{failure}"),
        }
        failures.extend(verdict.err());
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
