//! What `compare` measured, cell by cell, and its Markdown table with the ratios against etcd
//! and the performance targets.

use serde::Serialize;

use crate::args::{CompareArgs, Mode, System};
use crate::failover::FailoverReport;
use crate::load::LevelResult;
use crate::rolling::RollingReport;
use crate::rss::RssReport;
use crate::stalls::{STALL, Stalls};
use crate::sut::NodeRss;

/// One system, mode and client count over all rounds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Cell {
    pub(crate) system: System,
    pub(crate) mode: Mode,
    pub(crate) clients: u32,
    /// Median over rounds.
    pub(crate) ops_per_sec: f64,
    pub(crate) ops_per_sec_min: f64,
    pub(crate) ops_per_sec_max: f64,
    /// Percentiles of all rounds' measured latencies together.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) errors: u64,
    /// All rounds' stalls together.
    pub(crate) stalls: Stalls,
    pub(crate) rounds: Vec<LevelResult>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Target {
    pub(crate) what: String,
    pub(crate) goal: String,
    pub(crate) measured: String,
    pub(crate) met: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Machine {
    pub(crate) date_utc: String,
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) kernel: String,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) etcd_version: String,
}

pub(crate) fn cell(cells: &[Cell], system: System, mode: Mode, clients: u32) -> Option<&Cell> {
    cells
        .iter()
        .find(|c| c.system == system && c.mode == mode && c.clients == clients)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

pub(crate) fn render(
    args: &CompareArgs,
    m: &Machine,
    cells: &[Cell],
    failovers: &[FailoverReport],
    rollings: &[RollingReport],
    rss: &[RssReport],
    targets: &[Target],
) -> String {
    let mut t = String::new();
    let line = |t: &mut String, s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line(
        &mut t,
        format!(
            "Machine: {} ({} cores), kernel {}, {}; load average {} before, {} after; {}.",
            m.cpu, m.cores, m.kernel, m.date_utc, m.load_before, m.load_after, m.etcd_version
        ),
    );
    line(
        &mut t,
        format!(
            "{} nodes each on loopback, fsync on; {}-byte values; {} round(s) of {:?} per cell after {:?} warm-up, systems alternating; ops/s is the median over rounds, latencies from all rounds together.\n",
            args.cluster.nodes, args.payload_bytes, args.rounds, args.duration, args.warmup
        ),
    );
    let (s, e) = (System::Sidecar, System::Etcd);
    line(
        &mut t,
        "| mode | clients | raft-sidecar ops/s | etcd ops/s | ops/s ratio | raft-sidecar p50 / p99 / p99.9 ms | etcd p50 / p99 / p99.9 ms | p99 ratio (sidecar ÷ etcd) |".into(),
    );
    line(&mut t, "|---|---:|---:|---:|---:|---:|---:|---:|".into());
    let rate = |c: Option<&Cell>| {
        c.map_or("–".into(), |c| {
            let errors = if c.errors > 0 {
                format!(" ({} errors)", c.errors)
            } else {
                String::new()
            };
            format!("{:.0}{errors}", c.ops_per_sec)
        })
    };
    let lat = |c: Option<&Cell>| {
        c.map_or("–".into(), |c| {
            format!("{:.2} / {:.2} / {:.2}", c.p50_ms, c.p99_ms, c.p999_ms)
        })
    };
    for &mode in &args.modes {
        for &clients in &args.clients {
            let (a, b) = (cell(cells, s, mode, clients), cell(cells, e, mode, clients));
            let (ratio, p99) = match (a, b) {
                (Some(a), Some(b)) => (
                    format!("{:.2}×", a.ops_per_sec / b.ops_per_sec.max(0.1)),
                    format!("{:.2}", a.p99_ms / b.p99_ms.max(0.001)),
                ),
                _ => ("–".into(), "–".into()),
            };
            line(
                &mut t,
                format!(
                    "| {} | {clients} | {} | {} | {ratio} | {} | {} | {p99} |",
                    mode.label(),
                    rate(a),
                    rate(b),
                    lat(a),
                    lat(b)
                ),
            );
        }
    }
    stall_table(&mut t, args, cells);
    if !failovers.is_empty() {
        line(&mut t, String::new());
        line(
            &mut t,
            "| failover (kill -9 leader → first successful write) | trials | median ms | max ms | min ms |".into(),
        );
        line(&mut t, "|---|---:|---:|---:|---:|".into());
        for f in failovers {
            line(
                &mut t,
                format!(
                    "| {} | {} | {:.0} | {:.0} | {:.0} |",
                    f.system.label(),
                    f.trials.len(),
                    f.median_ms,
                    f.max_ms,
                    f.min_ms
                ),
            );
        }
    }
    if !rollings.is_empty() {
        line(&mut t, String::new());
        line(
            &mut t,
            format!(
                "| rolling restart (SIGTERM, 2 s down, start, caught up; followers first, the leader last; {} clients) | elections | longest write gap ms | ms in gaps > 100 ms | failed writes | retried answers | killed, not out {} s after SIGTERM |",
                args.rolling_clients,
                crate::rolling::STOP_GRACE.as_secs()
            ),
        );
        line(&mut t, "|---|---:|---:|---:|---:|---|---:|".into());
        for r in rollings {
            let retried = r
                .retried
                .iter()
                .map(|(code, n)| format!("{n} {code}"))
                .collect::<Vec<_>>()
                .join(", ");
            line(
                &mut t,
                format!(
                    "| {} | {} | {:.0} | {:.0} | {} | {} | {} |",
                    r.system.label(),
                    r.elections,
                    r.longest_gap_ms,
                    r.unavailable_ms,
                    r.failed,
                    if retried.is_empty() {
                        "none".into()
                    } else {
                        retried
                    },
                    r.killed
                ),
            );
        }
    }
    if !rss.is_empty() {
        line(&mut t, String::new());
        line(
            &mut t,
            format!(
                "| memory and disk | RSS idle, MiB per node | RSS after {} ops, MiB per node | disk after {} ops, MiB per node | {} ops took |",
                args.rss_ops, args.rss_ops, args.rss_ops
            ),
        );
        line(&mut t, "|---|---:|---:|---:|---:|".into());
        for r in rss {
            let list = |v: Option<&Vec<NodeRss>>| {
                v.map_or("–".into(), |v| {
                    v.iter()
                        .map(|n| mib(n.rss_kib))
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
            };
            let disk = r.disk_after_ops.as_ref().map_or("–".into(), |d| {
                d.iter()
                    .map(|n| format!("{:.1}", n.bytes as f64 / 1048576.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            });
            let took = if r.ops > 0 {
                let failed = r
                    .ops_failed_by_code
                    .iter()
                    .map(|(code, n)| format!(" {n} {code}"))
                    .collect::<String>();
                let p999 = r
                    .latency
                    .as_ref()
                    .map_or_else(String::new, |l| format!(", p99.9 {} ms", l.p999_ms));
                format!(
                    "{:.0} s ({:.0} ops/s, {} clients, {} failed{failed}{p999})",
                    r.ops_ms as f64 / 1000.0,
                    r.ops as f64 / (r.ops_ms.max(1) as f64 / 1000.0),
                    r.clients,
                    r.ops_failed
                )
            } else {
                "–".into()
            };
            line(
                &mut t,
                format!(
                    "| {} | {} | {} | {disk} | {took} |",
                    r.system.label(),
                    list(Some(&r.idle)),
                    list(r.after_ops.as_ref())
                ),
            );
        }
    }
    if !targets.is_empty() {
        line(&mut t, String::new());
        line(
            &mut t,
            "| target (raft-sidecar, leader mode) | goal | measured | met |".into(),
        );
        line(&mut t, "|---|---|---|---|".into());
        for x in targets {
            line(
                &mut t,
                format!(
                    "| {} | {} | {} | {} |",
                    x.what,
                    x.goal,
                    x.measured,
                    if x.met { "yes" } else { "**no**" }
                ),
            );
        }
    }
    t
}

/// Stalls per cell: how often the whole write path stopped, which percentiles cannot tell.
fn stall_table(t: &mut String, args: &CompareArgs, cells: &[Cell]) {
    let measured = args.duration.as_secs_f64() * f64::from(args.rounds);
    if measured <= 0.0 {
        return;
    }
    t.push_str(&format!(
        "\nStalls: spans of {} ms or more in which no write completed (every client in flight waited through them), per 10 s measured, and the longest.\n\n",
        STALL.as_millis()
    ));
    t.push_str("| mode | clients | raft-sidecar stalls per 10 s | raft-sidecar ms stalled per 10 s | raft-sidecar longest ms | etcd stalls per 10 s | etcd ms stalled per 10 s | etcd longest ms |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let per10 = |x: f64| x * 10.0 / measured;
    let show = |c: Option<&Cell>| {
        c.map_or_else(
            || "– | – | –".to_owned(),
            |c| {
                format!(
                    "{:.1} | {:.0} | {:.1}",
                    per10(c.stalls.count as f64),
                    per10(c.stalls.total_ms),
                    c.stalls.longest_ms
                )
            },
        )
    };
    for &mode in &args.modes {
        for &clients in &args.clients {
            t.push_str(&format!(
                "| {} | {clients} | {} | {} |\n",
                mode.label(),
                show(cell(cells, System::Sidecar, mode, clients)),
                show(cell(cells, System::Etcd, mode, clients))
            ));
        }
    }
}
