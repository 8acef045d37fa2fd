//! The `rss` subcommand: resident memory (VmRSS) of each node, idle and after a number of
//! operations, and the bytes on disk under each node's data dir.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::Failure;
use crate::args::{RssArgs, System};
use crate::load::{bench_op, payload, run_id};
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
    /// Wall time of the `ops` operations (with `clients` concurrent clients).
    pub(crate) ops_ms: u64,
    pub(crate) clients: u32,
    pub(crate) after_ops: Option<Vec<NodeRss>>,
    /// Bytes allocated under each node's data dir after the operations.
    pub(crate) disk_after_ops: Option<Vec<NodeDisk>>,
}

pub(crate) async fn rss(args: RssArgs) -> Result<(), Failure> {
    let mut sut = Sut::start(&args.cluster).await?;
    let outcome = rss_readings(&args, &mut sut).await;
    sut.stop().await;
    report(&outcome?, args.cluster.json.as_deref())
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
    let mut failed = 0;
    let mut after_ops = None;
    let mut disk_after_ops = None;
    let started = Instant::now();
    let mut ops_ms = 0;
    if args.ops > 0 {
        let leader = sut.leader().await?;
        let payload = Arc::new(payload(args.payload_bytes));
        let run = run_id();
        let next = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for c in 0..args.clients {
            let (writer, payload, next, failures, total) = (
                sut.writer(leader),
                Arc::clone(&payload),
                Arc::clone(&next),
                Arc::clone(&failures),
                args.ops,
            );
            let prefix = format!("bench-{run}-rss-{c}");
            tasks.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return;
                    }
                    if writer
                        .write(&bench_op(format!("{prefix}-{n}"), &payload))
                        .await
                        .is_err()
                    {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| Failure::runtime(format!("client task failed: {e}")))?;
        }
        failed = failures.load(Ordering::Relaxed);
        ops_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let after = sut.rss();
        let disk = sut.disk();
        println!(
            "{} disk after {} ops: {}",
            sut.system.label(),
            args.ops,
            disk.iter()
                .map(|d| format!("{} {:.1} MiB", d.node, d.bytes as f64 / 1048576.0))
                .collect::<Vec<_>>()
                .join("  ")
        );
        disk_after_ops = Some(disk);
        println!(
            "{} after {} ops ({failed} failed): {}",
            sut.system.label(),
            args.ops,
            rss_line(&after)
        );
        after_ops = Some(after);
    }
    Ok(RssReport {
        system: sut.system,
        bench: "rss",
        nodes: sut.len(),
        idle_ms: u64::try_from(args.idle.as_millis()).unwrap_or(u64::MAX),
        idle,
        ops: args.ops,
        ops_failed: failed,
        ops_ms,
        clients: args.clients,
        after_ops,
        disk_after_ops,
    })
}
