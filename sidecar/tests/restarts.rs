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
    stop_node(t, i).await;
    start_and_catch_up(t, i, leader).await;
}

async fn stop_node(t: &mut TestCluster, i: usize) {
    let code = t.c.terminate(i, Duration::from_secs(15)).await.unwrap();
    assert_eq!(code, Some(0), "node-{i} exits cleanly on SIGTERM");
}

async fn start_and_catch_up(t: &mut TestCluster, i: usize, leader: usize) {
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

/// 8 writers over the first `n` nodes until the flag is set, each write retried to success.
fn writers(
    t: &TestCluster,
    n: usize,
) -> (Arc<AtomicBool>, Arc<Seen>, Vec<tokio::task::JoinHandle<()>>) {
    let clients = Arc::new((0..n).map(|i| t.client(i)).collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Seen> = Arc::default();
    let writers = (0..8)
        .map(|w| {
            let make = move |i: u64| op(&format!("w{w}-{i}"));
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
    (stop, seen, writers)
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
/// restarts leave the leader and its term alone; the leader hands over on SIGTERM, so a new
/// leader is known before it has exited, and the whole roll costs one election. Prints the
/// longest write gap and the retried answers (debug build: figures of this machine's test run,
/// not a benchmark).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_elects_only_when_the_leader_hands_over() {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(Duration::from_secs(30)).await;
    let before = t.client(leader).state().await.unwrap();

    let (stop, seen, writers) = writers(&t, 3);
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
    stop_node(&mut t, leader).await;
    // Asked the moment the old leader has exited: a follower left to notice a silent leader
    // would have none for a lease and an election timeout (0.6–0.8 s) yet.
    let successor = t.client(followers[0]).state().await.unwrap();
    let leader_name = before.node_name.clone();
    assert!(
        successor
            .leader_id
            .as_ref()
            .is_some_and(|l| *l != leader_name),
        "the leader handed over before it exited: {successor:?}"
    );
    let successor_index = followers
        .iter()
        .copied()
        .find(|f| format!("node-{f}") == successor.leader_id.clone().unwrap_or_default())
        .unwrap();
    start_and_catch_up(&mut t, leader, successor_index).await;
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
    assert_eq!(
        after.current_term,
        before.current_term + 1,
        "one election in the whole roll: the handoff's"
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
    let rest: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // The leader last: stopped before its followers, it would hand leadership to one of them.
    for &i in rest.iter().chain([&leader]) {
        stop_node(&mut t, i).await;
    }
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

/// `POST /admin/v1/leadership/transfer` under 8 writers, on 3 nodes (the leader and its chosen
/// follower are a majority: no lease to wait out) and on 5 (heartbeats stop until the other
/// followers' leases run out): the chosen follower leads in the next term, every write is
/// acknowledged (held writes go to the new leader), and a second call moves it back by name.
/// Prints how long writes were held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leadership_transfer_moves_the_leader_in_one_term_and_loses_no_write() {
    for n in [3, 5] {
        let mut t = TestCluster::start(n, &[]).await;
        let leader = t.leader(Duration::from_secs(30)).await;
        let (stop, seen, writers) = writers(&t, n);
        let acked = |at: usize| {
            let seen = seen.clone();
            async move {
                wait_for("writes", Duration::from_secs(30), || {
                    let n = seen.acks.lock().len();
                    async move { (n >= at).then_some(()) }
                })
                .await;
            }
        };
        acked(100).await;
        // Not a synchronisation: the handoff succeeds either way. A leader elected less than a
        // lease (0.45 s) ago first waits out its own, so the printed hold time is the steady
        // state's only once the leader has been in office longer than that.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = t.client(leader).status().await.unwrap();
        let moved = t.client(leader).transfer_leadership(None).await.unwrap();
        let to: usize = moved.leader_id.trim_start_matches("node-").parse().unwrap();
        assert_ne!(to, leader, "{moved:?}");
        assert_eq!(moved.term, before.term + 1, "one election: {moved:?}");
        let now = t.client(to).status().await.unwrap();
        assert_eq!(now.role, raft_api::admin::NodeRole::Leader, "{now:?}");
        let written = seen.acks.lock().len();
        acked(written + 100).await;
        // Back to the first leader, by node id (after a lease in office, as above).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first_id: u64 = before.node_id.parse().unwrap();
        let back = t
            .client(to)
            .transfer_leadership(Some(first_id))
            .await
            .unwrap();
        assert_eq!(back.leader_node_id, before.node_id, "{back:?}");
        assert_eq!(back.term, before.term + 2);
        let written = seen.acks.lock().len();
        acked(written + 100).await;
        // Not the leader: refused with the leader named.
        let refused = t.client(to).transfer_leadership(None).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Some(raft_api::ErrorCode::NotLeader),
            "{refused}"
        );
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        let retried = seen.retried.lock().clone();
        println!(
            "handoff on {n} nodes: writes held {} ms to {}, {} ms back; {} writes acknowledged; retried answers {retried:?}",
            moved.took_ms,
            moved.leader_id,
            back.took_ms,
            seen.acks.lock().len()
        );
        let total = seen.acks.lock().len();
        t.journals_agree(&(0..n).collect::<Vec<_>>(), total, Duration::from_secs(30))
            .await;
    }
}
