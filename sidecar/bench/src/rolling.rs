//! The `rolling-restart` subcommand: what a rolling update costs the clients. While `--clients`
//! clients write (each operation retried with the same id, on the next node, until it commits
//! or its deadline passes), every member is restarted the way an orchestrator does it: SIGTERM,
//! down for `--down`, started again, caught up; followers first, the leader last. Reports the
//! elections (how far the term moved in the answers), the write gaps (the longest, and the
//! total of those longer than `--gap`), the writes that failed for good, and the retried
//! answers by code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use raft_api::ErrorCode;
use serde::Serialize;
use serde_json::Value;

use crate::Failure;
use crate::args::{RollingArgs, System};
use crate::load::{bench_op, payload, run_id};
use crate::report::report;
use crate::stalls;
use crate::sut::{Sut, Writer};

/// One member's restart.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Restart {
    node: String,
    was_leader: bool,
    /// SIGTERM until the process exited.
    stop_ms: f64,
    /// It had not exited [`STOP_GRACE`] after SIGTERM and was killed, as an orchestrator does.
    killed: bool,
    /// Started again until caught up with the leader.
    catch_up_ms: f64,
    /// The longest time without an acknowledged write, from this SIGTERM to the next one.
    longest_gap_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RollingReport {
    pub(crate) system: System,
    pub(crate) bench: &'static str,
    pub(crate) nodes: usize,
    pub(crate) clients: u32,
    pub(crate) restarts: Vec<Restart>,
    /// Members killed because they had not exited [`STOP_GRACE`] after SIGTERM.
    pub(crate) killed: u64,
    /// Term changes seen in the answers over the whole run (each is at least one election).
    pub(crate) elections: u64,
    /// The longest time without an acknowledged write, from the first SIGTERM to the end.
    pub(crate) longest_gap_ms: f64,
    /// Sum of the gaps between acknowledgements longer than `gap_threshold_ms`, from the first
    /// SIGTERM to the end.
    pub(crate) unavailable_ms: f64,
    pub(crate) gap_threshold_ms: f64,
    pub(crate) acknowledged: u64,
    /// Writes that did not commit before their deadline, or got an answer that retrying
    /// cannot change.
    pub(crate) failed: u64,
    pub(crate) not_retryable: BTreeMap<String, u64>,
    /// Answers that were retried, by code (connection errors to the node being restarted too).
    pub(crate) retried: BTreeMap<String, u64>,
    pub(crate) took_ms: f64,
}

/// How long a member may take to exit after SIGTERM before it is killed (Kubernetes' default
/// `terminationGracePeriodSeconds`).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    acks: Vec<(Instant, u64)>,
    failed: u64,
    not_retryable: BTreeMap<String, u64>,
    retried: BTreeMap<String, u64>,
}

pub(crate) async fn rolling(args: RollingArgs) -> Result<(), Failure> {
    let sut = Sut::start(&args.cluster).await?;
    let r = rolling_on(&args, sut).await?;
    report(&r, args.cluster.json.as_deref())
}

/// Roll every member of `sut` under load; stops the cluster.
pub(crate) async fn rolling_on(args: &RollingArgs, mut sut: Sut) -> Result<RollingReport, Failure> {
    let started = Instant::now();
    let n = sut.len();
    let writers: Arc<Vec<Writer>> = Arc::new((0..n).map(|i| sut.writer(i)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let value = Arc::new(payload(args.payload_bytes));
    let prefix = run_id();
    let clients: Vec<_> = (0..args.clients)
        .map(|c| {
            let client = Client {
                id: c as usize,
                writers: writers.clone(),
                stop: stop.clone(),
                value: value.clone(),
                prefix: format!("{prefix}-r{c}"),
                deadline: args.write_deadline,
                system: args.cluster.system,
            };
            tokio::spawn(client.run())
        })
        .collect();
    tokio::time::sleep(args.settle).await;
    let leader = sut.leader().await?;
    let mut order: Vec<usize> = (0..n).filter(|i| *i != leader).rev().collect();
    order.push(leader);
    let mut windows = Vec::new();
    let mut restarts = Vec::new();
    for i in order {
        let at = Instant::now();
        // A member that outlives the grace is killed and the run goes on: what it cost the
        // clients is part of the figures, and the rest of the comparison is not lost.
        let killed = !sut.sigterm(i, STOP_GRACE).await?;
        if killed {
            eprintln!(
                "bench: rolling restart: {} still running {STOP_GRACE:?} after SIGTERM; killing it",
                sut.name(i)
            );
            sut.reap_killed(i).await?;
        }
        let stop_ms = at.elapsed().as_secs_f64() * 1e3;
        eprintln!(
            "bench: rolling restart: {} {} in {stop_ms:.0} ms",
            sut.name(i),
            if killed { "killed" } else { "stopped" }
        );
        tokio::time::sleep(args.down).await;
        let back = Instant::now();
        sut.restart(i)?;
        sut.wait_caught_up(i, args.catch_up_timeout).await?;
        windows.push(at);
        restarts.push(Restart {
            node: sut.name(i).to_string(),
            was_leader: i == leader,
            stop_ms,
            killed,
            catch_up_ms: back.elapsed().as_secs_f64() * 1e3,
            longest_gap_ms: 0.0,
        });
        tokio::time::sleep(args.settle).await;
    }
    let stopped_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for c in clients {
        logs.push(
            c.await
                .map_err(|e| Failure::runtime(format!("a client task failed: {e}")))?,
        );
    }
    sut.stop().await;
    let mut acks: Vec<(Instant, u64)> = logs.iter().flat_map(|l| l.acks.iter().copied()).collect();
    acks.sort_unstable();
    let acked: Vec<Instant> = acks.iter().map(|(at, _)| *at).collect();
    windows.push(stopped_at);
    for (k, r) in restarts.iter_mut().enumerate() {
        r.longest_gap_ms = longest_gap(&acked, windows[k], windows[k + 1]);
    }
    // Gaps from the first SIGTERM to the end (not the clients' start).
    let threshold = args.gap.as_secs_f64() * 1e3;
    let gaps: Vec<f64> = stalls::gaps(&acked, windows[0], stopped_at)
        .map(|(_, gap)| gap.as_secs_f64() * 1e3)
        .collect();
    let terms = acks.iter().map(|(_, t)| *t);
    let elections = terms.clone().max().unwrap_or(0) - terms.min().unwrap_or(0);
    let sum = |pick: fn(&ClientLog) -> &BTreeMap<String, u64>| {
        let mut all = BTreeMap::new();
        for l in &logs {
            for (k, v) in pick(l) {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        all
    };
    let r = RollingReport {
        system: args.cluster.system,
        bench: "rolling-restart",
        nodes: n,
        clients: args.clients,
        killed: restarts.iter().filter(|r| r.killed).count() as u64,
        restarts,
        elections,
        longest_gap_ms: gaps.iter().copied().fold(0.0, f64::max),
        unavailable_ms: gaps
            .iter()
            .filter(|g| **g > threshold)
            .fold(0.0, |a, g| a + g),
        gap_threshold_ms: threshold,
        acknowledged: acks.len() as u64,
        failed: logs.iter().map(|l| l.failed).sum(),
        not_retryable: sum(|l| &l.not_retryable),
        retried: sum(|l| &l.retried),
        took_ms: started.elapsed().as_secs_f64() * 1e3,
    };
    eprintln!(
        "bench: rolling restart of {} {} nodes under {} clients: {} election(s), longest write gap {:.0} ms, {:.0} ms in gaps over {:.0} ms, {} acknowledged, {} failed, retried {:?}, {} killed after SIGTERM",
        n,
        r.system.label(),
        r.clients,
        r.elections,
        r.longest_gap_ms,
        r.unavailable_ms,
        threshold,
        r.acknowledged,
        r.failed,
        r.retried,
        r.killed
    );
    Ok(r)
}

/// The longest time without an acknowledgement within `[from, to]` (`acked` sorted).
fn longest_gap(acked: &[Instant], from: Instant, to: Instant) -> f64 {
    stalls::gaps(acked, from, to)
        .map(|(_, gap)| gap)
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

/// One client: unique operations one after another, each retried with the same id on the next
/// node until it commits, gets an answer retrying cannot change, or `deadline` passes.
struct Client {
    id: usize,
    writers: Arc<Vec<Writer>>,
    stop: Arc<AtomicBool>,
    value: Arc<Value>,
    prefix: String,
    deadline: Duration,
    system: System,
}

impl Client {
    async fn run(self) -> ClientLog {
        let mut log = ClientLog::default();
        let mut attempt = self.id;
        for seq in 0u64.. {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let op = bench_op(format!("{}-{seq}", self.prefix), &self.value);
            let until = Instant::now() + self.deadline;
            loop {
                let writer = &self.writers[attempt % self.writers.len()];
                match writer.write(&op).await {
                    Ok(w) => {
                        log.acks.push((Instant::now(), w.term));
                        break;
                    }
                    Err(label) if !retryable(self.system, &label) => {
                        log.failed += 1;
                        *log.not_retryable.entry(label).or_default() += 1;
                        break;
                    }
                    Err(_) if Instant::now() >= until => {
                        log.failed += 1;
                        break;
                    }
                    Err(label) => {
                        *log.retried.entry(label).or_default() += 1;
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
        log
    }
}

/// Whether retrying may change the answer: every sidecar code that says so, and every error
/// that is not a sidecar code (connection refused while a node restarts, a client timeout,
/// etcd's "leader changed"), which a client retries with the same id or key.
fn retryable(system: System, label: &str) -> bool {
    match system {
        System::Sidecar => serde_json::from_value::<ErrorCode>(Value::String(label.into()))
            .map_or(true, ErrorCode::is_retryable),
        System::Etcd => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_gap_counts_the_edges_of_its_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let acks = [at(10), at(20), at(300), at(310)];
        assert!((longest_gap(&acks, at(0), at(400)) - 280.0).abs() < 1e-6);
        assert!((longest_gap(&acks, at(15), at(30)) - 10.0).abs() < 1e-6);
        assert!((longest_gap(&acks, at(0), at(5)) - 5.0).abs() < 1e-6);
    }

    #[test]
    fn only_sidecar_codes_that_say_so_are_final() {
        assert!(retryable(System::Sidecar, "NO_LEADER"));
        assert!(retryable(System::Sidecar, "CONNECT"));
        assert!(!retryable(System::Sidecar, "INVALID_OPERATION"));
        assert!(retryable(System::Etcd, "anything"));
    }
}
