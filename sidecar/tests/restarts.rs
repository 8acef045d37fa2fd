//! Routine restarts cost no election: a member restarting with its store stands for election
//! only once it has heard from the leader since it started, or once a whole detection window
//! passed without one. openraft 0.9 has no pre-vote, so an election a restarted follower
//! started (its timer runs out while the leader is still re-dialing it) would raise the term and
//! depose a healthy leader, once per pod in every rolling update. Real processes on loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestCluster, WriteLog, op, wait_for, write_until};
use parking_lot::Mutex;
use raft_api::client::ClientError;
use raft_api::daemon::{Operation, SubmitResult};

/// What the writers saw: when each write was acknowledged, and the codes of retried answers.
#[derive(Default)]
struct Seen {
    acks: Mutex<Vec<Instant>>,
    retried: Mutex<BTreeMap<String, usize>>,
}

impl WriteLog for Seen {
    fn acked(&self, _: &Operation, _: &SubmitResult) {
        self.acks.lock().push(Instant::now());
    }

    fn retried(&self, e: &ClientError) {
        let code = e.code().map_or("connection".into(), |c| c.to_string());
        *self.retried.lock().entry(code).or_default() += 1;
    }
}

/// SIGTERM node `i`, start it again, and wait until it follows `leader_id` with everything
/// the leader had committed when it came back.
async fn restart(t: &mut TestCluster, i: usize, leader: usize) {
    let code = t.c.terminate(i, Duration::from_secs(15)).await.unwrap();
    assert_eq!(code, Some(0), "node-{i} exits cleanly on SIGTERM");
    // Down for a while, as a pod being replaced is: the leader's link to it has failed and
    // backed off by the time it returns.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.c.start(i).unwrap();
    let target = t.client(leader).state().await.unwrap().commit_index;
    let back = t.client(i);
    wait_for(
        &format!("node-{i} back and caught up"),
        Duration::from_secs(30),
        || {
            let back = back.clone();
            async move {
                let s = back.state().await.ok()?;
                (s.commit_index >= target && s.leader_id.is_some()).then_some(())
            }
        },
    )
    .await;
}

/// The longest time between two consecutive acknowledgements (all writers together).
fn longest_gap(acks: &mut [Instant]) -> Duration {
    acks.sort_unstable();
    acks.windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// A rolling restart, followers first and the leader last, under 8 writers: the followers'
/// restarts leave the leader and its term alone; the leader's costs the one election that
/// replaces it. Prints the longest write gap and the retried answers (debug build: figures of
/// this machine's test run, not a benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_elects_only_when_the_leader_restarts() {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(Duration::from_secs(30)).await;
    let before = t.client(leader).state().await.unwrap();

    let clients = Arc::new((0..3).map(|i| t.client(i)).collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Seen> = Arc::default();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let make = move |n: u64| op(&format!("w{w}-{n}"));
            tokio::spawn(write_until(
                w,
                clients.clone(),
                stop.clone(),
                Duration::from_secs(30),
                make,
                seen.clone(),
            ))
        })
        .collect();
    wait_for(
        "writes before the restarts",
        Duration::from_secs(30),
        || {
            let n = seen.acks.lock().len();
            async move { (n >= 100).then_some(()) }
        },
    )
    .await;

    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let started = Instant::now();
    for &f in &followers {
        restart(&mut t, f, leader).await;
    }
    let followers_done = t.client(leader).state().await.unwrap();
    let followers_gap = longest_gap(&mut seen.acks.lock().clone());
    restart(&mut t, leader, followers[0]).await;
    let rolled = started.elapsed();
    let written = seen.acks.lock().len();
    wait_for(
        "writes after the leader's restart",
        Duration::from_secs(30),
        || {
            let n = seen.acks.lock().len();
            async move { (n >= written + 100).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let after = t.client(followers[0]).state().await.unwrap();
    let acknowledged = seen.acks.lock().len();
    let overall_gap = longest_gap(&mut seen.acks.lock().clone());
    let retried = seen.retried.lock().clone();
    println!(
        "rolling restart of 3 members under 8 writers in {rolled:?}: {acknowledged} writes acknowledged; term {} -> {} after the followers, {} after the leader; longest write gap {followers_gap:?} while the followers restarted, {overall_gap:?} overall; retried answers {retried:?}",
        before.current_term, followers_done.current_term, after.current_term,
    );
    assert!(
        followers_done.is_leader,
        "node-{leader} still leads after the followers' restarts"
    );
    assert_eq!(
        followers_done.current_term, before.current_term,
        "a follower's restart started an election"
    );
    assert!(
        after.leader_id.is_some(),
        "a leader after the leader's restart"
    );
}

/// The other side of the quiet start: when the leader stays down and the others restart, nobody
/// hears a leader, and they elect one once the detection window has passed. (A leader that
/// restarts takes up its term again by itself: openraft resumes a committed vote for itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_followers_whose_leader_stays_down_elect_one_after_the_quiet_window() {
    let mut t = TestCluster::start(3, &["--partition-detection-ms", "1500"]).await;
    let leader = t.leader(Duration::from_secs(30)).await;
    let written = t
        .submit_retrying(&[leader], &op("before"), Duration::from_secs(30))
        .await;
    for i in 0..3 {
        let code = t.c.terminate(i, Duration::from_secs(15)).await.unwrap();
        assert_eq!(code, Some(0), "node-{i} exits cleanly on SIGTERM");
    }
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let started = Instant::now();
    for &i in &rest {
        t.c.start(i).unwrap();
    }
    let clients: Vec<_> = rest.iter().map(|i| t.client(*i)).collect();
    wait_for(
        "a leader among the restarted followers",
        Duration::from_secs(30),
        || {
            let clients = clients.clone();
            async move {
                for c in &clients {
                    if c.state().await.ok()?.is_leader {
                        return Some(());
                    }
                }
                None
            }
        },
    )
    .await;
    println!(
        "restarts: the followers restarted without their leader; a new one after {:?} (quiet window 1.5 s)",
        started.elapsed()
    );
    let again = t
        .submit_retrying(&rest, &op("before"), Duration::from_secs(30))
        .await;
    assert_eq!(
        again.log_index, written.log_index,
        "the write before the restart is still there, once"
    );
    assert!(
        again.duplicate,
        "the resubmission is answered as a duplicate"
    );
}
