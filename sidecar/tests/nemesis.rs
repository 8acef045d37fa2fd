//! The nemesis: concurrent clients submit uniquely identified operations (retrying by id, and
//! now and then submitting an acknowledged one again) while a seeded random schedule of real
//! faults runs (partitions one- and two-way, a bridge node, packet loss, slow links, kill -9,
//! SIGSTOP, kill -9 of every node, SIGTERM of the leader, a rolling restart, the leader
//! removing itself, a lost disk replaced as the operator replaces it, a node restarted with its
//! clocks hours ahead or behind, power cuts of one node or all that lose every unsynced
//! write), and on every node a live watcher and a paginating reader follow the journal
//! (recording how stale each local read was); then a checker verifies, from
//! every node's journal, every reader's record and every client's log, that every
//! acknowledged operation is present exactly once where it was acknowledged, that journals
//! agree, that nothing appears that no client sent, that no operation answered only with
//! certain refusals was committed, that every reader was given every index in order (or an
//! explicit `COMPACTED`), and that no two nodes led the same term.
//!
//! `NEMESIS_SEED=S NEMESIS_SECONDS=D cargo test --release -p raft-sidecar --test nemesis -- --nocapture`
//! (random seed when unset, 60 s by default; also `NEMESIS_NODES` (5), `NEMESIS_CLIENTS` (4),
//! `NEMESIS_SUBNET` (40; another value lets a second run share the machine),
//! `NEMESIS_RETENTION` (200; `all` keeps whole journals), `NEMESIS_POWER` (1; 0: no volatile
//! filesystems, no power cuts)).
//! It always prints `acknowledged=N lost=0 duplicated=0 divergent=0 readers=R gaps=0
//! definite_violations=0 faults=K seed=S`; replay a failure with its seed (the schedule is the
//! same; timing, and so the interleaving, is not).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[path = "common/checker.rs"]
mod checker;
#[path = "common/journal_readers.rs"]
mod journal_readers;
#[path = "common/netns.rs"]
mod netns;
#[path = "common/sse.rs"]
mod sse;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checker::{Ack, Entry, History, check};
use netns::NetCluster;
use raft_api::ErrorCode;
use raft_api::admin::MemberSpec;
use raft_api::client::{ClientError, SidecarClient};
use raft_api::daemon::Operation;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

struct Config {
    seed: u64,
    seconds: u64,
    nodes: usize,
    clients: usize,
    /// Network 10.213.<subnet>.0/24 (and the cluster's name): two runs at once need two.
    subnet: u8,
    /// `--journal-retention` of every node; None keeps every operation readable.
    retention: Option<u64>,
    /// Data directories on volatile filesystems, and power cuts among the faults.
    power: bool,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Config {
        Config {
            seed: env_or("NEMESIS_SEED", rand::random::<u64>() % 1_000_000),
            seconds: env_or("NEMESIS_SECONDS", 60),
            nodes: env_or("NEMESIS_NODES", 5),
            clients: env_or("NEMESIS_CLIENTS", 4),
            subnet: env_or("NEMESIS_SUBNET", 40),
            retention: match std::env::var("NEMESIS_RETENTION").as_deref() {
                Ok("all") => None,
                Ok(_) => Some(env_or("NEMESIS_RETENTION", 0)),
                Err(_) => Some(200),
            },
            power: env_or("NEMESIS_POWER", 1) == 1,
        }
    }
}

/// The nodes' dedupe window: records expire during a long run, and no client retries one
/// operation for anywhere near this long, so a second copy is always a violation.
const DEDUPE_WINDOW_SECS: i64 = 600;
/// Acknowledged operations submitted again (by id) after up to this long: within the
/// window, each must be answered with its first result, never appended again.
const RESUBMIT_WITHIN: Duration = Duration::from_secs(60);

/// Node flags: quick partition detection, frequent snapshots and log purges so restarted
/// nodes catch up by snapshot install, a short write timeout so TIMEOUT retries happen.
/// By default a journal retention of 200 and a snapshot every 100 entries, so readers meet
/// trims and snapshot installs all the time, and the readers' observations stand in for the
/// trimmed part of the journals; with `NEMESIS_RETENTION=all`, a retention no run reaches
/// (a long run sends more than the default 100,000) and the checker reads every journal
/// whole.
fn node_flags(cfg: &Config) -> Vec<String> {
    let (snapshot_interval, retention) = match cfg.retention {
        None => (300, 100_000_000),
        Some(r) => (100, r),
    };
    [
        "--partition-detection-ms",
        "1000",
        "--snapshot-interval",
        &snapshot_interval.to_string(),
        "--log-compaction-threshold",
        "100",
        "--max-log-size",
        "1000",
        "--write-timeout-ms",
        "3000",
        "--dedupe-window",
        &format!("{DEDUPE_WINDOW_SECS}s"),
        "--journal-retention",
        &retention.to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    sent: Vec<String>,
    acks: Vec<Ack>,
    /// Sent, never acknowledged (given up after the run): may or may not be in the journal.
    indeterminate: usize,
    /// Abandoned after answers that were all certain refusals: must not be in the journal.
    refused: Vec<String>,
    /// Answers no correct sidecar gives to a well-formed, unique operation.
    unexpected: Vec<String>,
    /// Acknowledged operations submitted again and acknowledged again.
    resubmitted: usize,
    errors: BTreeMap<String, usize>,
}

/// Answers documented as certain: the operation was not and will not be committed.
fn certain_refusal(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Api {
            code: ErrorCode::NoLeader
                | ErrorCode::NoQuorum
                | ErrorCode::Busy
                | ErrorCode::ShuttingDown
                | ErrorCode::NotInitialized,
            ..
        }
    )
}

fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Api { code, .. } => code.to_string(),
        ClientError::Http { source, .. } if source.is_timeout() => "client-timeout".into(),
        ClientError::Http { .. } => "connection".into(),
        ClientError::Unexpected { status, .. } => format!("unexpected-{status}"),
        ClientError::NoAddress(_) => "no-address".into(),
        ClientError::Tls(_) => "tls-config".into(),
        ClientError::TooLarge { .. } => "too-large".into(),
        ClientError::Backup { .. } => "backup".into(),
    }
}

/// Submit operations `c<k>-<n>` one after another, each retried with the same id on random
/// nodes until acknowledged (sometimes sent to two nodes at once). Stops starting new ones when the run ends (`end` turns Some), and
/// gives up on the last one at the deadline it carries.
async fn client(
    k: usize,
    seed: u64,
    nodes: Arc<Vec<SidecarClient>>,
    end: watch::Receiver<Option<Instant>>,
) -> ClientLog {
    let mut rng = StdRng::seed_from_u64(seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9));
    let mut log = ClientLog::default();
    // Acknowledged operations to submit again, and when.
    let mut again: Vec<(Operation, Instant)> = Vec::new();
    for n in 0.. {
        if end.borrow().is_some() {
            break;
        }
        resubmit_due(&mut again, &nodes, &mut rng, &mut log).await;
        let op = Operation {
            id: format!("c{k}-{n}"),
            op_type: "nemesis".into(),
            payload: Some(serde_json::json!({ "client": k, "seq": n })),
            daemon_id: Some(format!("client-{k}")),
            timestamp: None,
        };
        log.sent.push(op.id.clone());
        // Whether any answer so far left the outcome open (TIMEOUT, a lost connection).
        let mut uncertain = false;
        loop {
            // Now and then the same operation goes to two nodes at once: two copies in flight,
            // possibly on two leaders; every answer that acknowledges it must agree.
            let i = rng.random_range(0..nodes.len());
            let hedge = rng
                .random_bool(0.15)
                .then(|| (i + rng.random_range(1..nodes.len())) % nodes.len());
            let answers = match hedge {
                None => vec![(i, nodes[i].submit(&op).await)],
                Some(j) => {
                    let (a, b) = tokio::join!(nodes[i].submit(&op), nodes[j].submit(&op));
                    vec![(i, a), (j, b)]
                }
            };
            let mut done = false;
            for (i, answer) in answers {
                match answer {
                    Ok(r) => {
                        log.acks.push(Ack {
                            id: r.operation_id,
                            index: r.log_index,
                            term: r.term,
                        });
                        done = true;
                    }
                    Err(e) => {
                        *log.errors.entry(error_kind(&e)).or_default() += 1;
                        uncertain |= !certain_refusal(&e);
                        let retry = match &e {
                            ClientError::Api { code, .. } => code.is_retryable(),
                            ClientError::Http { .. } => true,
                            _ => false,
                        };
                        if !retry {
                            log.unexpected.push(format!("{} on node {i}: {e}", op.id));
                            done |= !matches!(e, ClientError::Unexpected { .. });
                        }
                    }
                }
            }
            if done {
                if rng.random_bool(0.05) {
                    let delay = rng.random_range(Duration::ZERO..RESUBMIT_WITHIN);
                    again.push((op.clone(), Instant::now() + delay));
                }
                break;
            }
            // Every answer so far was a certain refusal: now and then take it at its word and
            // drop the operation; the checker then proves it was never committed.
            if !uncertain && rng.random_bool(0.3) {
                log.refused.push(op.id.clone());
                break;
            }
            if let Some(give_up) = *end.borrow()
                && Instant::now() > give_up
            {
                log.indeterminate += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
        }
    }
    log
}

/// Submit each acknowledged operation that is due once more to a random node. A success
/// must carry the first acknowledgement's index and term (the checker holds it to that);
/// an error leaves it due for the next round.
async fn resubmit_due(
    again: &mut Vec<(Operation, Instant)>,
    nodes: &[SidecarClient],
    rng: &mut StdRng,
    log: &mut ClientLog,
) {
    let now = Instant::now();
    let mut pending = Vec::new();
    for (op, due) in again.drain(..) {
        if due > now {
            pending.push((op, due));
            continue;
        }
        match nodes[rng.random_range(0..nodes.len())].submit(&op).await {
            Ok(r) => {
                log.resubmitted += 1;
                log.acks.push(Ack {
                    id: r.operation_id,
                    index: r.log_index,
                    term: r.term,
                });
            }
            Err(e) => {
                *log.errors.entry(error_kind(&e)).or_default() += 1;
                pending.push((op, due));
            }
        }
    }
    *again = pending;
}

/// Poll every node's `/v1/state` and record who claims to lead each term.
async fn watch_leaders(
    nodes: Arc<Vec<SidecarClient>>,
    stop: watch::Receiver<bool>,
) -> BTreeMap<u64, BTreeSet<String>> {
    let mut leaders: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    while !*stop.borrow() {
        let states = futures_util::future::join_all(nodes.iter().map(|c| c.state())).await;
        for s in states.into_iter().flatten() {
            if s.is_leader {
                leaders
                    .entry(s.current_term)
                    .or_default()
                    .insert(s.node_name);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    leaders
}

/// One fault of the schedule; `Display` is the line printed for replay.
#[derive(Debug)]
enum Fault {
    Kill(usize),
    KillLeader,
    KillAll,
    Pause(usize),
    IsolateLeader,
    Partition(Vec<usize>, Vec<usize>),
    OneWay(usize, usize),
    Bridge(usize),
    Loss(Vec<(usize, usize)>, u8),
    Slow(usize),
    Flap(usize, usize),
    /// kill -9, wipe the data dir, restart (a new node id), then replace the member as the
    /// operator does: remove the old id, add the new one as a learner, promote it.
    Replace(usize),
    /// SIGTERM to the leader (one step of a rolling restart): it must exit cleanly, having
    /// answered truly every write it took, local or forwarded; restarted after the hold.
    TermLeader,
    /// kill -9, then restart with the node's monotonic and boot-time clocks shifted by this
    /// many seconds (more than the dedupe window plus an hour, ahead or behind), as a node
    /// whose clock jumped across a restart; it keeps that clock from then on.
    Clock(usize, i64),
    /// The leader removes itself through its own admin API, keeps running removed for the
    /// hold (clients still call it), then is replaced like a lost disk.
    RemoveLeader,
    /// A rolling restart as the operator runs one: SIGTERM each node in turn, the leader
    /// last, each restarted and answering before the next.
    Rolling,
    /// Power cut: kill -9 and every write the node had not synced is lost (its data directory
    /// is a volatile filesystem); restarted after the hold.
    PowerCut(usize),
    /// Power cut of every node at once; restarted at once.
    PowerCutAll,
}

fn pick_fault(rng: &mut StdRng, n: usize, power: bool) -> Fault {
    let node = |rng: &mut StdRng| rng.random_range(0..n);
    let pair = |rng: &mut StdRng| {
        let a = rng.random_range(0..n);
        let b = (a + rng.random_range(1..n)) % n;
        (a, b)
    };
    match rng.random_range(0..18) {
        0 => Fault::Kill(node(rng)),
        1 => Fault::KillLeader,
        2 => Fault::KillAll,
        3 => Fault::Pause(node(rng)),
        4 => Fault::IsolateLeader,
        5 => {
            let mut all: Vec<usize> = (0..n).collect();
            all.shuffle(rng);
            let minority = rng.random_range(1..=n / 2);
            let majority = all.split_off(minority);
            Fault::Partition(all, majority)
        }
        6 => {
            let (a, b) = pair(rng);
            Fault::OneWay(a, b)
        }
        7 => Fault::Bridge(node(rng)),
        8 => {
            let links = (0..rng.random_range(1..=n)).map(|_| pair(rng)).collect();
            Fault::Loss(links, rng.random_range(20..=60))
        }
        9 => Fault::Slow(node(rng)),
        10 => Fault::Replace(node(rng)),
        11 => Fault::TermLeader,
        12 => {
            let secs = DEDUPE_WINDOW_SECS + 3600 + rng.random_range(0..3600);
            Fault::Clock(node(rng), if rng.random_bool(0.5) { secs } else { -secs })
        }
        13 => Fault::RemoveLeader,
        14 => Fault::Rolling,
        15 if power => Fault::PowerCut(node(rng)),
        16 if power => Fault::PowerCutAll,
        15 | 16 => Fault::Kill(node(rng)),
        _ => {
            let (a, b) = pair(rng);
            Fault::Flap(a, b)
        }
    }
}

async fn leader_or_random(c: &NetCluster, rng: &mut StdRng) -> usize {
    for i in 0..c.nodes.len() {
        if let Ok(s) = c.state(i).await
            && let Some(l) = s.leader_id.as_deref().and_then(|l| c.index_of(l))
        {
            return l;
        }
    }
    rng.random_range(0..c.nodes.len())
}

impl Fault {
    /// The kind, for the count per kind in the summary.
    fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::KillAll => "kill-all",
            Fault::Pause(_) => "pause",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Partition(..) => "partition",
            Fault::OneWay(..) => "one-way",
            Fault::Bridge(_) => "bridge",
            Fault::Loss(..) => "loss",
            Fault::Slow(_) => "slow",
            Fault::Flap(..) => "flap",
            Fault::Replace(_) => "replace",
            Fault::TermLeader => "term-leader",
            Fault::Clock(..) => "clock",
            Fault::RemoveLeader => "remove-leader",
            Fault::Rolling => "rolling-restart",
            Fault::PowerCut(_) => "power-cut",
            Fault::PowerCutAll => "power-cut-all",
        }
    }
}

/// Inject `fault`, hold it for `hold`, then undo it (heal, resume, restart). An error is a
/// fault that could not be undone (a replacement that did not complete).
async fn inflict(
    c: &mut NetCluster,
    rng: &mut StdRng,
    fault: &Fault,
    hold: Duration,
) -> Result<(), String> {
    let n = c.nodes.len();
    let mut killed = Vec::new();
    match fault {
        Fault::Kill(i) => {
            c.kill9(*i).await;
            killed.push(*i);
        }
        Fault::KillLeader => {
            let l = leader_or_random(c, rng).await;
            println!("nemesis:   leader is node-{l}");
            c.kill9(l).await;
            killed.push(l);
        }
        Fault::KillAll => {
            for i in 0..n {
                c.kill9(i).await;
                killed.push(i);
            }
            // Restart them at once: no hold for a power cut.
        }
        Fault::Pause(i) => c.pause(*i),
        Fault::IsolateLeader => {
            let l = leader_or_random(c, rng).await;
            println!("nemesis:   leader is node-{l}");
            c.isolate(l);
        }
        Fault::Partition(a, b) => c.partition(a, b),
        Fault::OneWay(a, b) => c.cut(*a, *b),
        Fault::Bridge(center) => {
            let mut rest: Vec<usize> = (0..n).filter(|i| i != center).collect();
            rest.shuffle(rng);
            let other = rest.split_off(rest.len() / 2);
            c.partition(&rest, &other);
        }
        Fault::Loss(links, pct) => {
            for (a, b) in links {
                c.lose(*a, *b, *pct);
            }
        }
        Fault::Slow(i) => c.slow(*i),
        Fault::Replace(i) => return replace(c, *i, None).await,
        Fault::RemoveLeader => {
            let l = leader_or_random(c, rng).await;
            println!("nemesis:   leader is node-{l}");
            return replace(c, l, Some(hold)).await;
        }
        Fault::Rolling => return rolling_restart(c, rng).await,
        Fault::PowerCut(i) => {
            let lost = c.power_cut(*i).await;
            println!("nemesis:   node-{i} lost {lost} unsynced bytes");
            killed.push(*i);
        }
        Fault::PowerCutAll => {
            let mut lost = 0;
            for i in 0..n {
                lost += c.power_cut(i).await;
                killed.push(i);
            }
            println!("nemesis:   the nodes lost {lost} unsynced bytes");
        }
        Fault::Clock(i, secs) => {
            c.kill9(*i).await;
            let used = c.set_clock_offset(*i, *secs);
            println!("nemesis:   node-{i} restarts with its clocks shifted by {used} s");
            killed.push(*i);
        }
        Fault::TermLeader => {
            let l = leader_or_random(c, rng).await;
            println!("nemesis:   leader is node-{l}");
            let code = c.terminate(l, Duration::from_secs(60)).await;
            if code != Some(0) {
                return Err(format!("node-{l} exited with {code:?} after SIGTERM"));
            }
            killed.push(l);
        }
        Fault::Flap(a, b) => {
            let until = Instant::now() + hold;
            while Instant::now() < until {
                c.cut_both(*a, *b);
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
                c.heal();
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
            }
        }
    }
    if !matches!(fault, Fault::KillAll | Fault::PowerCutAll | Fault::Flap(..)) {
        tokio::time::sleep(hold).await;
    }
    c.heal();
    for i in 0..n {
        if c.is_paused(i) {
            c.resume(i);
        }
    }
    for i in killed {
        c.start_node(i);
    }
    Ok(())
}

/// Lose node `i`'s disk and replace it the way the operator does, within a deadline. With
/// `removed_for`, node `i` is first removed while it runs (by itself when it leads) and kept
/// running, removed, that long.
async fn replace(
    c: &mut NetCluster,
    i: usize,
    removed_for: Option<Duration>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let admin = |j: usize| c.client_with_timeout(j, Duration::from_secs(5));
    let old = retry("read the old node id", deadline, || async {
        admin(i).status().await.map(|s| s.node_id)
    })
    .await?;
    if let Some(hold) = removed_for {
        let all: Vec<usize> = (0..c.nodes.len()).collect();
        let removal = retry("remove a running member", deadline, || async {
            let l = leader_of(c, &all).await?;
            admin(l).remove(old.parse().unwrap_or_default()).await
        })
        .await?;
        println!("nemesis:   node-{i} removed: {removal:?}");
        tokio::time::sleep(hold).await;
    }
    c.kill9(i).await;
    c.wipe(i);
    c.start_node(i);
    let c = &*c;
    let admin = |j: usize| c.client_with_timeout(j, Duration::from_secs(5));
    let fresh = retry("read the new node id", deadline, || async {
        admin(i).status().await.map(|s| s.node_id)
    })
    .await?;
    println!("nemesis:   node-{i} came back as {fresh} (was {old})");
    let others: Vec<usize> = (0..c.nodes.len()).filter(|j| *j != i).collect();
    retry("remove the old id", deadline, || async {
        let l = leader_of(c, &others).await?;
        admin(l).remove(old.parse().unwrap_or_default()).await
    })
    .await?;
    let spec = MemberSpec {
        node_id: fresh.parse().map_err(|e| format!("node id {fresh}: {e}"))?,
        name: c.nodes[i].name.clone(),
        address: c.nodes[i].peer().to_string(),
        admin_address: Some(c.nodes[i].admin().to_string()),
    };
    retry("add the new id as a learner", deadline, || async {
        let l = leader_of(c, &others).await?;
        admin(l).add_learner(&spec).await
    })
    .await?;
    retry("promote the caught-up learner", deadline, || async {
        let l = leader_of(c, &others).await?;
        admin(l).promote(spec.node_id).await
    })
    .await?;
    Ok(())
}

/// [`NetCluster::restart_exited`], each line stamped with the run's time.
fn restart_exited(c: &mut NetCluster, started: Instant) -> Vec<String> {
    let exited = c.restart_exited();
    for e in &exited {
        println!("nemesis: t={:>6.1}s {e}", started.elapsed().as_secs_f64());
    }
    exited
}

/// SIGTERM every node in turn, the leader last; each must exit cleanly and answer again
/// after its restart before the next one goes.
async fn rolling_restart(c: &mut NetCluster, rng: &mut StdRng) -> Result<(), String> {
    let leader = leader_or_random(c, rng).await;
    let order = (0..c.nodes.len()).filter(|i| *i != leader).chain([leader]);
    for i in order {
        let code = c.terminate(i, Duration::from_secs(60)).await;
        if code != Some(0) {
            return Err(format!("node-{i} exited with {code:?} after SIGTERM"));
        }
        c.start_node(i);
        let c = &*c;
        retry(
            &format!("node-{i} to answer after its restart"),
            Instant::now() + Duration::from_secs(30),
            || async { c.state(i).await },
        )
        .await?;
    }
    println!("nemesis:   rolled every node, node-{leader} (the leader) last");
    Ok(())
}

/// The node among `among` that its peers name as leader.
async fn leader_of(c: &NetCluster, among: &[usize]) -> Result<usize, ClientError> {
    for j in among {
        if let Ok(s) = c.state(*j).await
            && let Some(l) = s.leader_id.as_deref().and_then(|l| c.index_of(l))
        {
            return Ok(l);
        }
    }
    Err(ClientError::NoAddress("no leader known yet"))
}

/// Call `f` until it succeeds or the deadline passes (retrying every answer: elections, a
/// learner still catching up, a membership change still in flight).
async fn retry<T, F, Fut>(what: &str, deadline: Instant, mut f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(format!("{what}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// How stale one node's local reads were (pagers only).
fn print_staleness(r: &journal_readers::ReaderLog) {
    let mut s = r.staleness.clone();
    if s.is_empty() {
        return;
    }
    s.sort_unstable();
    let at = |q: f64| s[((s.len() - 1) as f64 * q) as usize];
    println!(
        "nemesis: {}: {} local reads, behind the newest commit seen by then: p50={} p99={} max={} entries",
        r.observed.reader,
        s.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

/// Wait (bounded) until every node's journal ends at the same index twice in a row.
async fn converge(c: &NetCluster, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut previous = None;
    while Instant::now() < deadline {
        let mut ends = Vec::new();
        for i in 0..c.nodes.len() {
            match c
                .client_with_timeout(i, Duration::from_secs(2))
                .journal(None, Some(1))
                .await
            {
                Ok(p) => ends.push(p.commit_index),
                Err(_) => ends.push(u64::MAX),
            }
        }
        let agreed = ends.iter().all(|e| *e == ends[0] && *e != u64::MAX);
        if agreed && previous == Some(ends[0]) {
            return true;
        }
        previous = agreed.then_some(ends[0]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_seeded_nemesis_every_acknowledged_operation_is_kept_once_in_one_order() {
    let cfg = Config::from_env();
    println!(
        "nemesis: seed={} seconds={} nodes={} clients={} retention={:?} power={} (replay: NEMESIS_SEED={} NEMESIS_SECONDS={})",
        cfg.seed,
        cfg.seconds,
        cfg.nodes,
        cfg.clients,
        cfg.retention,
        cfg.power,
        cfg.seed,
        cfg.seconds
    );
    let kinds: Arc<Mutex<BTreeMap<&'static str, usize>>> = Arc::default();
    let outcome = run(&cfg, kinds.clone()).await;
    let kinds = kinds.lock().unwrap().clone();
    let faults: usize = kinds.values().sum();
    println!("nemesis: faults by kind: {kinds:?}");
    let (v, logs_summary, unexpected, panics) = match outcome {
        Ok(x) => x,
        Err(e) => {
            println!(
                "acknowledged=? lost=? duplicated=? divergent=? readers=? gaps=? definite_violations=? faults={faults} seed={}",
                cfg.seed
            );
            panic!("the nemesis run could not complete: {e}");
        }
    };
    println!("nemesis: {logs_summary}");
    for d in &v.details {
        println!("nemesis: finding: {d}");
    }
    for u in unexpected.iter().take(20) {
        println!("nemesis: unexpected answer: {u}");
    }
    println!(
        "acknowledged={} lost={} duplicated={} divergent={} readers={} gaps={} definite_violations={} faults={faults} seed={}",
        v.acknowledged,
        v.lost,
        v.duplicated,
        v.divergent,
        v.readers,
        v.gaps,
        v.false_refusals,
        cfg.seed
    );
    assert!(
        v.safe(),
        "safety violated (seed {}): lost={} duplicated={} divergent={} gaps={} phantom={} split_terms={} false_refusals={}",
        cfg.seed,
        v.lost,
        v.duplicated,
        v.divergent,
        v.gaps,
        v.phantom,
        v.split_terms,
        v.false_refusals
    );
    assert_eq!(
        v.unverified, 0,
        "acknowledged operations at indices that retention trimmed before any reader saw them: \
         unchecked (seed {}); NEMESIS_RETENTION=all checks whole journals",
        cfg.seed
    );
    assert_eq!(
        v.stalled_readers, 0,
        "readers did not read through to the end (seed {})",
        cfg.seed
    );
    assert_eq!(
        v.lagging, 0,
        "nodes did not catch up after healing (seed {})",
        cfg.seed
    );
    assert!(
        unexpected.is_empty(),
        "unexpected answers (seed {})",
        cfg.seed
    );
    assert_eq!(panics, 0, "a node panicked (seed {})", cfg.seed);
    assert!(v.acknowledged > 0, "no operation was acknowledged at all");
}

/// The verdict, a one-line summary, unexpected answers and how many times a node panicked.
type Outcome = (checker::Verdict, String, Vec<String>, usize);

async fn run(
    cfg: &Config,
    kinds: Arc<Mutex<BTreeMap<&'static str, usize>>>,
) -> Result<Outcome, String> {
    let name = format!("nem{}", cfg.subnet);
    let flags = node_flags(cfg);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut c = NetCluster::start_with(&name, cfg.subnet, cfg.nodes, &flags, cfg.power).await;
    let endpoints: Arc<Vec<SidecarClient>> = Arc::new(
        (0..cfg.nodes)
            .map(|i| c.client_with_timeout(i, Duration::from_secs(6)))
            .collect(),
    );
    let (end_tx, end_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let clients: Vec<_> = (0..cfg.clients)
        .map(|k| tokio::spawn(client(k, cfg.seed, endpoints.clone(), end_rx.clone())))
        .collect();
    let monitor = tokio::spawn(watch_leaders(endpoints.clone(), stop_rx));
    let (readers_stop_tx, readers_stop) = watch::channel(None);
    let mut readers = Vec::new();
    let newest = Arc::new(AtomicU64::new(0));
    for i in 0..cfg.nodes {
        let name = c.nodes[i].name.clone();
        readers.push(tokio::spawn(journal_readers::pager(
            endpoints[i].clone(),
            name.clone(),
            readers_stop.clone(),
            newest.clone(),
        )));
        // A watch lasts as long as it carries events: no request deadline.
        let long = c.client_with_timeout(i, Duration::from_secs(24 * 3600));
        readers.push(tokio::spawn(journal_readers::watcher(
            long,
            name,
            readers_stop.clone(),
        )));
    }

    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let started = Instant::now();
    // Nodes that exited without being stopped (Raft stopped on an error): restarted, as the
    // kubelet would, and reported.
    let mut exited = Vec::new();
    let run_for = Duration::from_secs(cfg.seconds);
    while started.elapsed() < run_for {
        let fault = pick_fault(&mut rng, cfg.nodes, cfg.power);
        let hold = Duration::from_millis(rng.random_range(1000..5000));
        let quiet = Duration::from_millis(rng.random_range(500..2500));
        println!(
            "nemesis: t={:>6.1}s fault {:?} for {hold:?}",
            started.elapsed().as_secs_f64(),
            fault
        );
        inflict(&mut c, &mut rng, &fault, hold).await?;
        *kinds.lock().unwrap().entry(fault.kind()).or_default() += 1;
        tokio::time::sleep(quiet).await;
        exited.extend(restart_exited(&mut c, started));
    }
    // Everything healed and running: clients finish their last operation, then stop.
    end_tx.send_replace(Some(Instant::now() + Duration::from_secs(60)));
    let mut logs = Vec::new();
    for h in clients {
        logs.push(h.await.map_err(|e| format!("client task failed: {e}"))?);
    }
    exited.extend(restart_exited(&mut c, started));
    let converged = converge(&c, Duration::from_secs(60)).await;
    stop_tx.send_replace(true);
    let leaders = monitor
        .await
        .map_err(|e| format!("leader monitor failed: {e}"))?;
    // Readers read through to the end of the journal, then stop.
    let mut end = 0;
    for i in 0..cfg.nodes {
        if let Ok(page) = c.client(i).journal(None, Some(1)).await {
            end = end.max(page.commit_index);
        }
    }
    readers_stop_tx.send_replace(Some((end, Instant::now() + Duration::from_secs(60))));
    let mut reader_logs = Vec::new();
    for r in readers {
        reader_logs.push(r.await.map_err(|e| format!("reader task failed: {e}"))?);
    }

    let mut history = History {
        leaders,
        journals_trimmed: cfg.retention.is_some(),
        ..History::default()
    };
    let (mut compacted, mut interruptions) = (0, BTreeMap::<String, usize>::new());
    for r in reader_logs {
        print_staleness(&r);
        compacted += r.compacted;
        for (k, n) in r.interruptions {
            *interruptions.entry(k).or_default() += n;
        }
        history.readers.push(r.observed);
    }
    let mut unexpected = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let (mut indeterminate, mut resubmitted) = (0, 0);
    for log in logs {
        resubmitted += log.resubmitted;
        history.sent.extend(log.sent);
        history.acks.extend(log.acks);
        history.refused.extend(log.refused);
        unexpected.extend(log.unexpected);
        indeterminate += log.indeterminate;
        for (k, n) in log.errors {
            *errors.entry(k).or_default() += n;
        }
    }
    for i in 0..cfg.nodes {
        if let Ok(page) = c.client(i).journal(None, Some(1)).await
            && page.first_index > 1
            && cfg.retention.is_none()
        {
            return Err(format!(
                "node-{i}'s journal starts at {}: trimmed by retention, so it cannot be checked whole",
                page.first_index
            ));
        }
        let journal = c.journal(i).await.ok().map(|j| {
            j.into_iter()
                .map(|e| Entry {
                    index: e.log_index,
                    term: e.term,
                    id: e.operation.id,
                })
                .collect()
        });
        history.journals.push((c.nodes[i].name.clone(), journal));
    }
    let v = check(&history);
    let mut panics = 0;
    for i in 0..cfg.nodes {
        for p in c.panics(i) {
            println!("nemesis: {} panicked:\n{p}", c.nodes[i].name);
            panics += 1;
        }
    }
    let sent: HashSet<&String> = history.sent.iter().collect();
    let summary = format!(
        "sent={} journal={} indeterminate={indeterminate} resubmitted={resubmitted} refused={} converged={converged} phantom={} split_terms={} lagging={} panics={panics} terms_seen={} errors={errors:?}\n\
         nemesis: read={} compacted={compacted} stalled_readers={} unverified={} reader_interruptions={interruptions:?}",
        sent.len(),
        v.journal_len,
        history.refused.len(),
        v.phantom,
        v.split_terms,
        v.lagging,
        history.leaders.len(),
        history
            .readers
            .iter()
            .flat_map(|r| &r.segments)
            .map(|(_, e)| e.len())
            .sum::<usize>(),
        v.stalled_readers,
        v.unverified,
    );
    let mut summary = format!("{summary} self_exits={}", exited.len());
    for e in &exited {
        summary.push_str(&format!("\nnemesis: {e}"));
    }
    if !v.safe() || v.lagging > 0 || v.stalled_readers > 0 || panics > 0 {
        for i in 0..cfg.nodes {
            println!(
                "----- {} (last 20 log lines) -----\n{}",
                c.nodes[i].name,
                c.log_tail(i, 20)
            );
        }
        // Also in the summary, printed last: the errors that explain a finding.
        for i in 0..cfg.nodes {
            for e in c.errors(i, 3) {
                summary.push_str(&format!("\nnemesis: {} error: {e}", c.nodes[i].name));
            }
        }
    }
    Ok((v, summary, unexpected, panics))
}

/// The checker is not vacuous: it counts each kind of violation it is meant to find.
mod checker_finds {
    use super::checker::{Ack, Entry, History, Observed, check};

    fn e(index: u64, term: u64, id: &str) -> Entry {
        Entry {
            index,
            term,
            id: id.into(),
        }
    }

    fn history(journals: Vec<Vec<Entry>>, acks: &[(&str, u64, u64)]) -> History {
        History {
            sent: ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect(),
            acks: acks
                .iter()
                .map(|(id, index, term)| Ack {
                    id: id.to_string(),
                    index: *index,
                    term: *term,
                })
                .collect(),
            journals: journals
                .into_iter()
                .enumerate()
                .map(|(i, j)| (format!("node-{i}"), Some(j)))
                .collect(),
            ..History::default()
        }
    }

    fn reader(segments: Vec<(u64, Vec<Entry>)>) -> Observed {
        Observed {
            reader: "node-0 watcher".into(),
            segments,
            reached_end: true,
        }
    }

    #[test]
    fn a_reader_given_every_index_or_a_compacted_restart_passes() {
        let full = vec![e(1, 1, "a"), e(2, 1, "b"), e(3, 2, "c")];
        let mut h = history(vec![full.clone()], &[("a", 1, 1), ("c", 3, 2)]);
        h.readers = vec![
            reader(vec![(1, full.clone())]),
            // COMPACTED after index 1, started over at 3.
            reader(vec![(1, vec![e(1, 1, "a")]), (3, vec![e(3, 2, "c")])]),
        ];
        let v = check(&h);
        assert!(v.safe(), "{v:?}");
        assert_eq!((v.readers, v.gaps, v.stalled_readers), (2, 0, 0));
    }

    #[test]
    fn a_reader_skipping_an_index_or_starting_late_is_a_gap() {
        let full = vec![e(1, 1, "a"), e(2, 1, "b"), e(3, 2, "c")];
        let mut h = history(vec![full], &[]);
        h.readers = vec![
            reader(vec![(1, vec![e(1, 1, "a"), e(3, 2, "c")])]),
            reader(vec![(1, vec![e(2, 1, "b"), e(3, 2, "c")])]),
        ];
        let v = check(&h);
        assert_eq!(v.gaps, 2, "{v:?}");
        assert!(!v.safe());
    }

    #[test]
    fn a_reader_disagreeing_with_the_journals_or_not_finishing_is_reported() {
        let full = vec![e(1, 1, "a"), e(2, 1, "b")];
        let mut h = history(vec![full], &[]);
        let mut late = reader(vec![(1, vec![e(1, 1, "a"), e(2, 1, "c")])]);
        late.reached_end = false;
        h.readers = vec![late];
        let v = check(&h);
        assert_eq!((v.divergent, v.stalled_readers), (1, 1), "{v:?}");
    }

    #[test]
    fn readers_stand_in_for_trimmed_journals_and_unseen_acks_are_unverified() {
        // Retention kept only index 3 on the node; a reader saw 1 and 2 earlier.
        let mut h = history(
            vec![vec![e(3, 2, "c")]],
            &[("a", 1, 1), ("b", 2, 1), ("d", 4, 2)],
        );
        h.journals_trimmed = true;
        h.readers = vec![reader(vec![(1, vec![e(1, 1, "a"), e(2, 1, "b")])])];
        let v = check(&h);
        assert_eq!((v.lost, v.unverified), (0, 1), "{v:?}");
        // A reader's copy is checked like a journal's: "b" acknowledged elsewhere is lost.
        h.acks[1].index = 3;
        assert_eq!(check(&h).lost, 1);
    }

    #[test]
    fn agreeing_prefix_journals_with_every_ack_in_place_pass() {
        let full = vec![e(1, 1, "a"), e(2, 1, "b"), e(3, 2, "c")];
        let v = check(&history(
            vec![full.clone(), full[..2].to_vec()],
            &[("a", 1, 1), ("c", 3, 2)],
        ));
        assert!(v.safe(), "{v:?}");
        assert_eq!(v.lagging, 1, "the shorter journal is reported as lagging");
    }

    #[test]
    fn an_acknowledged_operation_missing_or_moved_is_lost() {
        let j = vec![e(1, 1, "a"), e(2, 1, "b")];
        let v = check(&history(vec![j], &[("c", 3, 1), ("b", 1, 1)]));
        assert_eq!(v.lost, 2, "{v:?}");
    }

    #[test]
    fn a_second_copy_of_an_id_is_a_duplicate() {
        let j = vec![e(1, 1, "a"), e(2, 2, "a")];
        assert_eq!(check(&history(vec![j], &[])).duplicated, 1);
    }

    #[test]
    fn journals_that_disagree_or_skip_an_index_diverge() {
        let v = check(&history(
            vec![
                vec![e(1, 1, "a"), e(2, 1, "b")],
                vec![e(1, 1, "a"), e(2, 2, "c")],
            ],
            &[],
        ));
        assert_eq!(v.divergent, 1, "{v:?}");
        let gap = check(&history(vec![vec![e(1, 1, "a"), e(3, 1, "b")]], &[]));
        assert_eq!(gap.divergent, 1, "{gap:?}");
    }

    #[test]
    fn a_refused_operation_in_the_journal_is_a_false_refusal() {
        let mut h = history(vec![vec![e(1, 1, "a"), e(2, 1, "b")]], &[]);
        h.refused = ["b".to_string(), "c".to_string()].into();
        let v = check(&h);
        assert_eq!(v.false_refusals, 1, "{v:?}");
        assert!(!v.safe());
    }

    #[test]
    fn an_unsent_operation_and_two_leaders_in_one_term_are_found() {
        let mut h = history(vec![vec![e(1, 1, "zzz")]], &[]);
        h.leaders
            .insert(4, ["node-0".to_string(), "node-1".to_string()].into());
        let v = check(&h);
        assert_eq!((v.phantom, v.split_terms), (1, 1), "{v:?}");
    }
}
