//! A busy majority is not a lost one: with both followers on disks whose every `fsync` takes a
//! second (a FUSE layer that delays syncs; the processes stay up and answer on their links),
//! the leader's quorum acknowledgements arrive seconds apart. Writers are slowed down, or told
//! `BUSY` (retryable, with `Retry-After`), never `NO_QUORUM`: a majority answers. Every answer
//! of every writer is counted; no timing is asserted.
//!
//! `cargo test -p raft-sidecar --test overload -- --nocapture` prints the answers by code.
//! Needs root and `/dev/fuse`, as the power-cut tests do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{mount_volatile, op};
use raft_api::client::{ClientError, SidecarClient};
use raft_testkit::local_cluster::{LocalCluster, Ports};
use raft_testkit::volatile_fs::VolatileFs;

const NODES: usize = 3;
const WRITERS: usize = 64;
const LOAD: Duration = Duration::from_secs(15);
/// Longer than two `--election-timeout-max-ms` (400 ms): the gate's limit and its patience.
const SLOW_SYNC: Duration = Duration::from_secs(1);

type Answers = Arc<Mutex<BTreeMap<String, u64>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_on_slow_disks_slow_writes_down_and_never_get_no_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Vec<VolatileFs> = (0..NODES)
        .map(|i| {
            let (backing, at) = (
                dir.path().join(format!("backing-{i}")),
                dir.path().join(format!("node-{i}")),
            );
            mount_volatile(&backing, &at)
        })
        .collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_raft-sidecar"));
    let mut c = LocalCluster::new(bin, dir.path(), NODES, Ports::Free, &[]).unwrap();
    c.start_all().unwrap();
    let outcome = load_with_slow_followers(&mut c, &fs).await;
    for f in &fs {
        f.set_sync_delay(Duration::ZERO);
    }
    c.stop_all(Duration::from_secs(10)).await;
    let answers = match outcome {
        Ok(answers) => answers,
        Err(e) => {
            for i in 0..NODES {
                eprintln!("----- node-{i} -----\n{}", c.log_tail(i, 40));
            }
            panic!("{e}");
        }
    };
    println!(
        "answers of {WRITERS} writers over {LOAD:?}, followers' fsync +{SLOW_SYNC:?}: {answers:?}"
    );
    assert!(
        answers.get("committed").is_some_and(|n| *n > 0),
        "nothing committed: {answers:?}"
    );
    assert_eq!(
        answers.get("NO_QUORUM"),
        None,
        "NO_QUORUM while every member was up: {answers:?}"
    );
}

async fn load_with_slow_followers(
    c: &mut LocalCluster,
    fs: &[VolatileFs],
) -> Result<BTreeMap<String, u64>, String> {
    let leader = c.wait_for_leader(Duration::from_secs(30)).await?;
    for (i, f) in fs.iter().enumerate() {
        if i != leader {
            f.set_sync_delay(SLOW_SYNC);
        }
    }
    let clients: Arc<Vec<SidecarClient>> = Arc::new((0..NODES).map(|i| c.client(i)).collect());
    let answers: Answers = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, clients.clone(), answers.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(LOAD).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.map_err(|e| format!("writer: {e}"))?;
    }
    let answers = answers.lock().unwrap().clone();
    Ok(answers)
}

/// Submit new operations one after another, each to the next node (followers forward), and
/// count each answer by its code.
async fn writer(
    w: usize,
    clients: Arc<Vec<SidecarClient>>,
    answers: Answers,
    stop: Arc<AtomicBool>,
) {
    for n in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let op = op(&format!("w{w}-{n}"));
        let node = (w + usize::try_from(n).unwrap()) % clients.len();
        let answer = match clients[node].submit(&op).await {
            Ok(_) => "committed".to_owned(),
            Err(ClientError::Api { code, .. }) => code.as_str().to_owned(),
            Err(e) => format!("no answer: {e}"),
        };
        *answers.lock().unwrap().entry(answer).or_default() += 1;
    }
}
