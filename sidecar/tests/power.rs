//! Power cuts, not only `kill -9`, and a full disk: every node's data directory sits on a filesystem that keeps
//! unsynced writes in memory (`raft_testkit::volatile_fs`), and a cut drops them as a power
//! failure drops the page cache. Acknowledged operations must survive a cut of a minority, of
//! the leader and of every node at once, and every node must come back. Needs root and
//! `/dev/fuse` (CI runs as root).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::mount_volatile as mount;
use raft_api::daemon::Operation;
use raft_testkit::local_cluster::{LocalCluster, Ports};
use raft_testkit::volatile_fs::VolatileFs;
use raft_testkit::wait::wait_for;

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;
use common::{WriteLog, read_journal, write_until};

/// The cluster tests of this file run one at a time (a 2-core machine).
static GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NODES: usize = 3;
const WRITERS: usize = 8;
/// Each round cuts the power of a follower, then of the leader, then of every node.
const ROUNDS: usize = 3;

/// What the writers were told: operation id → journal index.
type Acks = Arc<parking_lot::Mutex<HashMap<String, u64>>>;

impl WriteLog for parking_lot::Mutex<HashMap<String, u64>> {
    fn acked(&self, op: &Operation, result: &raft_api::daemon::SubmitResult) {
        self.lock().insert(op.id.clone(), result.log_index);
    }
}

/// Operations `w<w>-<n>` to rotating nodes until `stop` (see [`write_until`]).
async fn writer(
    w: usize,
    c: Arc<Vec<raft_api::client::SidecarClient>>,
    acks: Acks,
    stop: Arc<AtomicBool>,
) {
    let make = |n: u64| Operation {
        id: format!("w{w}-{n}"),
        op_type: "power".into(),
        payload: Some(serde_json::json!({ "w": w, "n": n, "pad": "p".repeat(200) })),
        daemon_id: None,
        timestamp: None,
    };
    write_until(w, c, stop, Duration::from_secs(60), make, acks).await;
}

/// The unsynced bytes a cut dropped, per file (node-prefixed).
type Lost = Vec<(String, u64)>;

/// Drop node `i`'s unsynced writes (kill it first).
fn cut_power(fs: &[VolatileFs], i: usize) -> Lost {
    fs[i]
        .cut_power()
        .into_iter()
        .map(|(path, bytes)| (format!("node-{i}/{}", path.display()), bytes))
        .collect()
}

/// `kill -9` node `i`, drop its unsynced writes, start it again.
async fn cut(c: &mut LocalCluster, fs: &[VolatileFs], i: usize) -> Lost {
    c.kill9(i).await.unwrap();
    let lost = cut_power(fs, i);
    c.start(i).unwrap();
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_operations_survive_power_cuts_of_a_minority_the_leader_and_every_node() {
    let _gate = GATE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let fs: Vec<VolatileFs> = (0..NODES)
        .map(|i| {
            mount(
                &dir.path().join(format!("backing-{i}")),
                &dir.path().join(format!("node-{i}")),
            )
        })
        .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_raft-sidecar"));
    let flags = [
        "--snapshot-interval",
        "500",
        "--log-compaction-threshold",
        "100",
    ];
    let mut c = LocalCluster::new(bin, dir.path(), NODES, Ports::Free, &flags).unwrap();
    c.start_all().unwrap();
    let outcome = run(&mut c, &fs).await;
    stop_and_report(&mut c, outcome).await;
}

/// Stop every node; on `outcome`'s error, fail with it after every node's last log lines.
async fn stop_and_report(c: &mut LocalCluster, outcome: Result<(), String>) {
    c.stop_all(Duration::from_secs(10)).await;
    if let Err(e) = outcome {
        for i in 0..NODES {
            eprintln!(
                "----- node-{i} (last 40 log lines) -----\n{}",
                c.log_tail(i, 40)
            );
        }
        panic!("{e}");
    }
}

async fn run(c: &mut LocalCluster, fs: &[VolatileFs]) -> Result<(), String> {
    c.wait_for_leader(Duration::from_secs(30)).await?;
    let clients = Arc::new((0..NODES).map(|i| c.client(i)).collect::<Vec<_>>());
    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, clients.clone(), acks.clone(), stop.clone())))
        .collect();
    // Between cuts the writers run on for a while: load, not a wait for a condition.
    let pause = || tokio::time::sleep(Duration::from_secs(2));
    let mut lost = Vec::new();
    for _ in 0..ROUNDS {
        pause().await;
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        let follower = (leader + 1) % NODES;
        lost.push(("a follower", cut(c, fs, follower).await));

        pause().await;
        let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
        lost.push(("the leader", cut(c, fs, leader).await));

        pause().await;
        for i in 0..NODES {
            c.kill9(i).await.unwrap();
        }
        let all = (0..NODES).flat_map(|i| cut_power(fs, i)).collect();
        lost.push(("every node", all));
        for i in 0..NODES {
            c.start(i).unwrap();
        }
    }
    pause().await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.map_err(|e| format!("writer failed: {e}"))?;
    }
    let acks = acks.lock().clone();
    println!("power cuts: {} operations acknowledged", acks.len());
    for (what, files) in &lost {
        println!("power cut of {what}: unsynced bytes dropped {files:?}");
    }
    // The cuts must have dropped writes the store made (not only the RocksDB info log), or
    // the test proved nothing.
    let store_lost = lost
        .iter()
        .flat_map(|(_, files)| files)
        .any(|(path, _)| path.contains("/rocksdb/") && !path.contains("/LOG"));
    if !store_lost {
        return Err(format!(
            "no cut dropped an unsynced write of the store: {lost:?}"
        ));
    }
    every_ack_once_where_acknowledged(&clients, &acks, "the cuts").await
}

/// Every node back, with the same journal, holding every acknowledged operation exactly once
/// where it was acknowledged (`after`: what the wait follows, for its message).
async fn every_ack_once_where_acknowledged(
    clients: &Arc<Vec<raft_api::client::SidecarClient>>,
    acks: &HashMap<String, u64>,
    after: &str,
) -> Result<(), String> {
    let journals = wait_for(
        &format!("every node's journal to agree after {after}"),
        Duration::from_secs(60),
        || {
            let clients = clients.clone();
            async move {
                let mut seen = Vec::new();
                for client in clients.iter() {
                    seen.push(read_journal(client).await.ok()?);
                }
                seen.windows(2)
                    .all(|w| w[0] == w[1])
                    .then(|| seen.remove(0))
            }
        },
    )
    .await;
    let mut at: HashMap<&str, u64> = HashMap::new();
    for (index, id) in &journals {
        if let Some(first) = at.insert(id, *index) {
            return Err(format!(
                "{id} is in the journal twice, at {first} and {index}"
            ));
        }
    }
    for (id, index) in acks {
        match at.get(id.as_str()) {
            Some(found) if found == index => {}
            Some(found) => return Err(format!("{id} acknowledged at {index}, found at {found}")),
            None => return Err(format!("{id} acknowledged at {index}, lost")),
        }
    }
    Ok(())
}

/// A tmpfs of `size` mounted at `at` (created), unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount a tmpfs at {} (needs root)",
            at.display()
        );
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fill the filesystem of `dir` with one file, up to the last byte it takes.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    let mut small = [0u8; 512];
    small.fill(1);
    while f.write_all(&block).is_ok() {}
    while f.write_all(&small[..1]).is_ok() {}
    path
}

/// A full disk under a member: RocksDB refuses its writes, Raft stops on the storage error,
/// and the node exits 1 instead of answering from a journal that no longer moves (its APIs
/// would otherwise stay up, serving reads that never advance). With space again it starts,
/// catches up, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_fills_exits_and_catches_up_after_a_restart() {
    let _gate = GATE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_raft-sidecar"));
    let mut c = LocalCluster::new(bin, dir.path(), NODES, Ports::Free, &[]).unwrap();
    let full = NODES - 1;
    let tmpfs = Tmpfs::mount(&c.nodes[full].dir, "64m");
    c.start_all().unwrap();
    let outcome = disk_full(&mut c, &tmpfs.0, full).await;
    // The tmpfs is unmounted after the nodes stopped (also when this fails).
    stop_and_report(&mut c, outcome).await;
    drop(tmpfs);
}

async fn disk_full(c: &mut LocalCluster, data: &Path, full: usize) -> Result<(), String> {
    c.wait_for_leader(Duration::from_secs(30)).await?;
    let clients = Arc::new((0..NODES).map(|i| c.client(i)).collect::<Vec<_>>());
    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, clients.clone(), acks.clone(), stop.clone())))
        .collect();
    wait_for(
        "writes before the disk fills",
        Duration::from_secs(30),
        || {
            let n = acks.lock().len();
            async move { (n >= 200).then_some(()) }
        },
    )
    .await;
    let filler = fill(data);
    let exited = Instant::now();
    let code = c
        .wait_exit(full, Duration::from_secs(60))
        .await
        .map_err(|e| format!("the member with a full disk: {e}"))?;
    let log = std::fs::read_to_string(c.nodes[full].log_path()).unwrap_or_default();
    println!(
        "disk full: node-{full} exited with {code:?} {:?} after the disk filled, {} operations acknowledged",
        exited.elapsed(),
        acks.lock().len()
    );
    if code != Some(1) {
        return Err(format!("node-{full} exited with {code:?}, not 1"));
    }
    if !log.contains("Raft stopped on its own") {
        return Err(format!("node-{full}'s log does not say why it stopped"));
    }
    std::fs::remove_file(&filler).map_err(|e| format!("remove the filler: {e}"))?;
    c.start(full).unwrap();
    // The others wrote on meanwhile; the restarted member catches up under load.
    let written = acks.lock().len();
    wait_for("writes after the restart", Duration::from_secs(30), || {
        let n = acks.lock().len();
        async move { (n >= written + 200).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.map_err(|e| format!("writer failed: {e}"))?;
    }
    let acks = acks.lock().clone();
    every_ack_once_where_acknowledged(&clients, &acks, "the restart").await
}

/// The filesystem under the test: synced writes stay, unsynced ones go at a cut.
#[test]
fn the_volatile_filesystem_keeps_synced_writes_and_loses_the_rest_at_a_cut() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let fs = mount(&dir.path().join("backing"), &dir.path().join("mnt"));
    let mnt = fs.mountpoint().to_path_buf();
    let mut synced = std::fs::File::create(mnt.join("synced")).unwrap();
    synced.write_all(b"kept").unwrap();
    synced.sync_data().unwrap();
    synced.write_all(b" and lost").unwrap();
    let mut unsynced = std::fs::File::create(mnt.join("unsynced")).unwrap();
    unsynced.write_all(b"lost").unwrap();
    std::fs::create_dir(mnt.join("dir")).unwrap();
    std::fs::rename(mnt.join("synced"), mnt.join("dir/renamed")).unwrap();
    assert_eq!(
        std::fs::read(mnt.join("dir/renamed")).unwrap(),
        b"kept and lost"
    );
    assert_eq!(std::fs::read(mnt.join("unsynced")).unwrap(), b"lost");
    drop((synced, unsynced));
    assert_eq!(
        fs.cut_power(),
        vec![("dir/renamed".into(), 9), ("unsynced".into(), 4)]
    );
    assert_eq!(std::fs::read(mnt.join("dir/renamed")).unwrap(), b"kept");
    assert_eq!(std::fs::read(mnt.join("unsynced")).unwrap(), b"");

    // A file renamed over or unlinked while open stays readable through its handle, unsynced
    // writes included (snapshots are sent from such handles).
    use std::io::{Read, Seek};
    let mut open = std::fs::File::options()
        .read(true)
        .write(true)
        .open(mnt.join("dir/renamed"))
        .unwrap();
    open.write_all(b"!").unwrap();
    std::fs::write(mnt.join("newer"), b"newer").unwrap();
    std::fs::rename(mnt.join("newer"), mnt.join("dir/renamed")).unwrap();
    let mut seen = String::new();
    open.rewind().unwrap();
    open.read_to_string(&mut seen).unwrap();
    assert_eq!(seen, "!ept");
    assert_eq!(std::fs::read(mnt.join("dir/renamed")).unwrap(), b"newer");
}
