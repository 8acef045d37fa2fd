//! The `rss` subcommand: resident memory (VmRSS) of each node, idle and after a number of
//! operations, and the bytes on disk under each node's data dir.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::Failure;
use crate::args::{RssArgs, System};
use crate::load::{bench_op, micros, ms, new_histogram, payload, run_id};
use crate::report::report;
use crate::sut::{NodeDisk, NodeRss, Sut};

fn rss_line(rss: &[NodeRss]) -> String {
    rss.iter()
        .map(|n| match (n.pid, n.rss_kib) {
            (Some(pid), Some(kib)) => {
                format!("{} pid={pid} rss_mib={:.1}", n.node, kib as f64 / 1024.0)
            }
            _ => format!("{} rss=?", n.node),
        })
        .collect::<Vec<_>>()
        .join("  ")
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RssReport {
    pub(crate) system: System,
    pub(crate) bench: &'static str,
    pub(crate) nodes: usize,
    pub(crate) idle_ms: u64,
    pub(crate) idle: Vec<NodeRss>,
    pub(crate) ops: u64,
    pub(crate) ops_failed: u64,
    /// The failed operations by error code (each counted once, after any `BUSY` retries).
    pub(crate) ops_failed_by_code: BTreeMap<String, u64>,
    /// Wall time of the `ops` operations (with `clients` concurrent clients).
    pub(crate) ops_ms: u64,
    pub(crate) clients: u32,
    /// Latency of the operations that succeeded, from first attempt to answer.
    pub(crate) latency: Option<Latency>,
    /// The rate of each successive `curveEvery` operations, in order.
    pub(crate) curve_every: u64,
    pub(crate) rate_curve: Vec<f64>,
    pub(crate) after_ops: Option<Vec<NodeRss>>,
    /// Bytes allocated under each node's data dir after the operations.
    pub(crate) disk_after_ops: Option<Vec<NodeDisk>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Latency {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) async fn rss(args: RssArgs) -> Result<(), Failure> {
    let mut sut = Sut::start(&args.cluster).await?;
    let outcome = rss_readings(&args, &mut sut).await;
    sut.stop().await;
    report(&outcome?, args.cluster.json.as_deref())
}

/// What the clients of one `--ops` run measured together.
struct OpsRun {
    failed: BTreeMap<String, u64>,
    hist: Histogram<u64>,
    /// Time since the start at which each `curve_every`-th operation completed.
    marks: Vec<Duration>,
    took: Duration,
}

pub(crate) async fn rss_readings(args: &RssArgs, sut: &mut Sut) -> Result<RssReport, Failure> {
    tokio::time::sleep(args.idle).await;
    let idle = sut.rss();
    println!(
        "{} idle {:?}: {}",
        sut.system.label(),
        args.idle,
        rss_line(&idle)
    );
    let mut report = RssReport {
        system: sut.system,
        bench: "rss",
        nodes: sut.len(),
        idle_ms: u64::try_from(args.idle.as_millis()).unwrap_or(u64::MAX),
        idle,
        ops: args.ops,
        ops_failed: 0,
        ops_failed_by_code: BTreeMap::new(),
        ops_ms: 0,
        clients: args.clients,
        latency: None,
        curve_every: args.curve_every,
        rate_curve: Vec::new(),
        after_ops: None,
        disk_after_ops: None,
    };
    if args.ops == 0 {
        return Ok(report);
    }
    let run = run_ops(args, sut).await?;
    let label = sut.system.label();
    report.ops_failed = run.failed.values().sum();
    report.ops_ms = u64::try_from(run.took.as_millis()).unwrap_or(u64::MAX);
    report.latency = Some(Latency {
        p50_ms: ms(run.hist.value_at_quantile(0.5)),
        p99_ms: ms(run.hist.value_at_quantile(0.99)),
        p999_ms: ms(run.hist.value_at_quantile(0.999)),
        max_ms: ms(run.hist.max()),
    });
    report.rate_curve = rate_curve(&run.marks, args.curve_every);
    report.ops_failed_by_code = run.failed;
    let after = sut.rss();
    let disk = sut.disk();
    println!(
        "{label} disk after {} ops: {}",
        args.ops,
        disk.iter()
            .map(|d| format!("{} {:.1} MiB", d.node, d.bytes as f64 / 1048576.0))
            .collect::<Vec<_>>()
            .join("  ")
    );
    println!(
        "{label} after {} ops ({} failed {:?}): {}",
        args.ops,
        report.ops_failed,
        report.ops_failed_by_code,
        rss_line(&after)
    );
    if let Some(l) = &report.latency {
        println!(
            "{label} latency of {} ops: p50_ms={} p99_ms={} p99.9_ms={} max_ms={}",
            args.ops, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    }
    if !report.rate_curve.is_empty() {
        println!(
            "{label} ops/s of each successive {} ops: {}",
            args.curve_every,
            report
                .rate_curve
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    report.after_ops = Some(after);
    report.disk_after_ops = Some(disk);
    Ok(report)
}

/// The rate of each successive `every` operations, from the times the `every`-th, `2·every`-th,
/// ... operation completed.
fn rate_curve(marks: &[Duration], every: u64) -> Vec<f64> {
    let mut previous = Duration::ZERO;
    marks
        .iter()
        .map(|at| {
            let took = at.saturating_sub(previous).as_secs_f64().max(1e-9);
            previous = *at;
            (every as f64 / took * 10.0).round() / 10.0
        })
        .collect()
}

/// Submit `args.ops` operations with `args.clients` clients to the leader.
async fn run_ops(args: &RssArgs, sut: &mut Sut) -> Result<OpsRun, Failure> {
    let leader = sut.leader().await?;
    let payload = Arc::new(payload(args.payload_bytes));
    let run = run_id();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let marks = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for c in 0..args.clients {
        let writer = sut.writer(leader);
        let (payload, next, done, marks) = (
            Arc::clone(&payload),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&marks),
        );
        let (total, every) = (args.ops, args.curve_every);
        let prefix = format!("bench-{run}-rss-{c}");
        let mut hist = new_histogram()?;
        tasks.spawn(async move {
            let mut failed: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return (failed, hist);
                }
                let at = Instant::now();
                match writer
                    .write(&bench_op(format!("{prefix}-{n}"), &payload))
                    .await
                {
                    Ok(_) => {
                        hist.saturating_record(micros(at.elapsed()).max(1));
                    }
                    Err(label) => {
                        *failed.entry(label).or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                if every > 0 && finished % every == 0 {
                    lock(&marks).push(started.elapsed());
                }
            }
        });
    }
    let mut failed = BTreeMap::new();
    let mut hist = new_histogram()?;
    while let Some(joined) = tasks.join_next().await {
        let (f, h) = joined.map_err(|e| Failure::runtime(format!("client task failed: {e}")))?;
        for (code, n) in f {
            *failed.entry(code).or_default() += n;
        }
        hist.add(&h)
            .map_err(|e| Failure::runtime(format!("cannot merge histograms: {e}")))?;
    }
    let took = started.elapsed();
    let mut marks = std::mem::take(&mut *lock(&marks));
    marks.sort();
    Ok(OpsRun {
        failed,
        hist,
        marks,
        took,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_is_the_rate_of_each_successive_window() {
        let marks = [
            Duration::from_secs(10),
            Duration::from_secs(30),
            Duration::from_secs(35),
        ];
        assert_eq!(rate_curve(&marks, 1000), vec![100.0, 50.0, 200.0]);
        assert!(rate_curve(&[], 1000).is_empty());
    }
}
