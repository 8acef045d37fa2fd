//! `raft-bench compare`: raft-sidecar against etcd on the same machine in one
//! invocation (docs/benchmarks.md). Throughput rounds alternate the systems (odd rounds start
//! with the other one) and start a fresh cluster each time, so slow drifts of a shared machine
//! hit both; then leader failover for both, a rolling restart under load for both, then RSS
//! idle and after `--rss-ops` operations
//! and bytes on disk. Prints a Markdown table with the ratios and the project's performance
//! targets (docs/benchmarks.md), and writes every raw figure as JSON (`--json`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Failure;
use crate::args::{ClusterOpts, CompareArgs, FailoverArgs, Mode, RollingArgs, RssArgs, System};
use crate::failover::{FailoverReport, failover_on};
use crate::load::{LevelResult, Load, measure_level, ms, new_histogram};
use crate::report::report;
use crate::rolling::{RollingReport, rolling_on};
use crate::rss::{RssReport, rss_readings};
use crate::stalls;
use crate::sut::{NodeRss, Sut};
use crate::table::{Cell, Machine, Target, cell, render};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct CompareReport {
    bench: &'static str,
    machine: Machine,
    nodes: u8,
    payload_bytes: usize,
    rounds: u32,
    duration_ms: u64,
    warmup_ms: u64,
    order: Vec<Vec<System>>,
    throughput: Vec<Cell>,
    failover: Vec<FailoverReport>,
    rolling_restart: Vec<RollingReport>,
    rss: Vec<RssReport>,
    targets: Vec<Target>,
    markdown: String,
    wall_s: f64,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let out = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&out).trim().to_string()
        })
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine(etcd_bin: &std::path::Path) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    Machine {
        date_utc: sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpu,
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        kernel: sh("uname", &["-r"]),
        load_before: loadavg(),
        load_after: String::new(),
        etcd_version: sh(&etcd_bin.to_string_lossy(), &["--version"])
            .lines()
            .next()
            .unwrap_or("etcd not found")
            .to_string(),
    }
}

fn opts_for(base: &ClusterOpts, system: System, tag: &str) -> ClusterOpts {
    let mut o = base.clone();
    o.system = system;
    o.json = None;
    o.dir = base
        .dir
        .as_ref()
        .map(|d| d.join(format!("{}-{tag}", system.label())));
    o
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub async fn compare(mut args: CompareArgs) -> Result<(), Failure> {
    if args.quick {
        args.rounds = args.rounds.min(1);
        args.duration = Duration::from_secs(2);
        args.warmup = Duration::from_millis(500);
        args.failover_trials = args.failover_trials.min(3);
        args.rss_ops = args.rss_ops.min(20_000);
        args.idle = Duration::from_secs(2);
    }
    if args.systems.is_empty() || args.duration.is_zero() {
        return Err(Failure::Config(
            "need at least one system and a --duration above zero".into(),
        ));
    }
    if args.systems.contains(&System::Sidecar) {
        // Before any round: a missing binary should not surface after the etcd rounds.
        args.cluster.sidecar_bin()?;
    }
    let wall = Instant::now();
    let mut machine = machine(&args.cluster.etcd_bin);
    eprintln!(
        "bench compare: {:?}, {} cores, load {}, {}",
        machine.cpu, machine.cores, machine.load_before, machine.etcd_version
    );
    let load = Load {
        mode: Mode::Leader,
        warmup: args.warmup,
        duration: args.duration,
        payload_bytes: args.payload_bytes,
        error_pause: args.error_pause,
        batch: args.batch,
    };

    // Throughput: fresh clusters, systems alternating.
    let mut runs: BTreeMap<(usize, usize, u32), Vec<LevelResult>> = BTreeMap::new();
    let mut order = Vec::new();
    for round in 0..args.rounds {
        let mut systems = args.systems.clone();
        if round % 2 == 1 {
            systems.reverse();
        }
        order.push(systems.clone());
        for system in systems {
            let si = args.systems.iter().position(|s| *s == system).unwrap_or(0);
            let mut sut =
                Sut::start(&opts_for(&args.cluster, system, &format!("r{round}"))).await?;
            let mut outcome = Ok(());
            'levels: for (mi, &mode) in args.modes.iter().enumerate() {
                for &clients in &args.clients {
                    match measure_level(&mut sut, clients, &Load { mode, ..load }).await {
                        Ok(level) => {
                            println!(
                                "round={} system={} mode={mode:?} clients={} ops/s={:.1} p50_ms={:.2} p99_ms={:.2} p99.9_ms={:.2} errors={} stalls={} longest_stall_ms={:.1} load={}",
                                round + 1,
                                system.label(),
                                level.clients,
                                level.ops_per_sec,
                                level.p50_ms,
                                level.p99_ms,
                                level.p999_ms,
                                level.errors,
                                level.stalls.count,
                                level.stalls.longest_ms,
                                loadavg()
                            );
                            runs.entry((si, mi, clients)).or_default().push(level);
                        }
                        Err(e) => {
                            outcome = Err(e);
                            break 'levels;
                        }
                    }
                }
            }
            sut.stop().await;
            outcome?;
        }
    }
    let mut cells = Vec::new();
    for ((si, mi, clients), levels) in runs {
        let mut hist = new_histogram()?;
        for l in &levels {
            hist.add(&l.hist)
                .map_err(|e| Failure::runtime(format!("cannot merge histograms: {e}")))?;
        }
        let rates: Vec<f64> = levels.iter().map(|l| l.ops_per_sec).collect();
        cells.push(Cell {
            system: args.systems[si],
            mode: args.modes[mi],
            clients,
            ops_per_sec: median(rates.clone()),
            ops_per_sec_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            ops_per_sec_max: rates.iter().copied().fold(0.0, f64::max),
            p50_ms: ms(hist.value_at_quantile(0.5)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            errors: levels.iter().map(|l| l.errors).sum(),
            stalls: stalls::merged(levels.iter().map(|l| &l.stalls)),
            rounds: levels,
        });
    }

    // Failover, one system after the other.
    let mut failovers = Vec::new();
    if args.failover_trials > 0 {
        for &system in &args.systems {
            let fargs = FailoverArgs {
                trials: args.failover_trials,
                retry_interval: Duration::from_millis(20),
                probe_timeout: args.probe_timeout,
                failover_timeout: Duration::from_secs(30),
                catch_up_timeout: Duration::from_secs(60),
                settle: Duration::from_secs(1),
                payload_bytes: args.payload_bytes,
                cluster: opts_for(&args.cluster, system, "failover"),
            };
            let sut = Sut::start(&fargs.cluster).await?;
            failovers.push(failover_on(&fargs, sut).await?);
        }
    }

    // A rolling restart under load, one system after the other.
    let mut rollings = Vec::new();
    if args.rolling_clients > 0 {
        for &system in &args.systems {
            let rargs = RollingArgs {
                clients: args.rolling_clients,
                down: Duration::from_secs(2),
                settle: Duration::from_secs(1),
                gap: Duration::from_millis(100),
                write_deadline: Duration::from_secs(30),
                catch_up_timeout: Duration::from_secs(60),
                payload_bytes: args.payload_bytes,
                cluster: opts_for(&args.cluster, system, "rolling"),
            };
            let sut = Sut::start(&rargs.cluster).await?;
            rollings.push(rolling_on(&rargs, sut).await?);
        }
    }

    // RSS idle and after --rss-ops operations, and bytes on disk.
    let mut rss = Vec::new();
    for &system in &args.systems {
        let rargs = RssArgs {
            idle: args.idle,
            ops: args.rss_ops,
            clients: args.rss_clients,
            payload_bytes: args.payload_bytes,
            curve_every: args.rss_ops.div_ceil(10).max(1),
            cluster: opts_for(&args.cluster, system, "rss"),
        };
        let mut sut = Sut::start(&rargs.cluster).await?;
        let outcome = rss_readings(&rargs, &mut sut).await;
        sut.stop().await;
        rss.push(outcome?);
    }

    machine.load_after = loadavg();
    let targets = targets(&args, &cells, &failovers, &rss);
    let markdown = render(
        &args, &machine, &cells, &failovers, &rollings, &rss, &targets,
    );
    println!("\n{markdown}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown)
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
    }
    let out = CompareReport {
        bench: "compare",
        machine,
        nodes: args.cluster.nodes,
        payload_bytes: args.payload_bytes,
        rounds: args.rounds,
        duration_ms: u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX),
        warmup_ms: u64::try_from(args.warmup.as_millis()).unwrap_or(u64::MAX),
        order,
        throughput: cells,
        failover: failovers,
        rolling_restart: rollings,
        rss,
        targets,
        markdown,
        wall_s: (wall.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    match &args.cluster.json {
        Some(path) => {
            let text =
                serde_json::to_string_pretty(&out).map_err(|e| Failure::runtime(e.to_string()))?;
            std::fs::write(path, format!("{text}\n"))
                .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("bench compare: raw results in {}", path.display());
            Ok(())
        }
        None => report(&out, None),
    }
}

fn max_rss_mib(nodes: Option<&Vec<NodeRss>>) -> Option<f64> {
    nodes?
        .iter()
        .filter_map(|n| n.rss_kib)
        .max()
        .map(|k| k as f64 / 1024.0)
}

/// The project's performance targets (docs/benchmarks.md), for the sidecar against etcd
/// (leader mode).
fn targets(
    args: &CompareArgs,
    cells: &[Cell],
    failovers: &[FailoverReport],
    rss: &[RssReport],
) -> Vec<Target> {
    let mut out = Vec::new();
    let (s, e) = (System::Sidecar, System::Etcd);
    let pair =
        |clients| cell(cells, s, Mode::Leader, clients).zip(cell(cells, e, Mode::Leader, clients));
    for clients in [64, 256] {
        if let Some((a, b)) = pair(clients) {
            let r = a.ops_per_sec / b.ops_per_sec.max(0.1);
            out.push(Target {
                what: format!("throughput at {clients} clients"),
                goal: "≥ 2× etcd".into(),
                measured: format!(
                    "{r:.2}× ({:.0} vs {:.0} ops/s)",
                    a.ops_per_sec, b.ops_per_sec
                ),
                met: r >= 2.0,
            });
        }
    }
    if let Some((a, b)) = pair(64) {
        let r = a.p99_ms / b.p99_ms.max(0.001);
        out.push(Target {
            what: "p99 at 64 clients".into(),
            goal: "≤ 0.5× etcd".into(),
            measured: format!("{r:.2}× ({:.2} vs {:.2} ms)", a.p99_ms, b.p99_ms),
            met: r <= 0.5,
        });
    }
    if let Some((a, b)) = pair(1) {
        let r = a.p50_ms / b.p50_ms.max(0.001);
        out.push(Target {
            what: "p50 at 1 client".into(),
            goal: "≤ 1× etcd".into(),
            measured: format!("{r:.2}× ({:.2} vs {:.2} ms)", a.p50_ms, b.p50_ms),
            met: r <= 1.0,
        });
    }
    if let Some(f) = failovers.iter().find(|f| f.system == s) {
        out.push(Target {
            what: "failover median".into(),
            goal: "< 1000 ms".into(),
            measured: format!("{:.0} ms", f.median_ms),
            met: f.median_ms < 1000.0,
        });
        out.push(Target {
            what: "failover max".into(),
            goal: "< 2000 ms".into(),
            measured: format!("{:.0} ms", f.max_ms),
            met: f.max_ms < 2000.0,
        });
    }
    if let Some(r) = rss.iter().find(|r| r.system == s) {
        if let Some(m) = max_rss_mib(Some(&r.idle)) {
            out.push(Target {
                what: "idle RSS per node (max)".into(),
                goal: "< 30 MiB".into(),
                measured: format!("{m:.1} MiB"),
                met: m < 30.0,
            });
        }
        if let Some(m) = max_rss_mib(r.after_ops.as_ref()) {
            out.push(Target {
                what: format!("RSS per node after {} ops (max)", args.rss_ops),
                goal: "< 100 MiB".into(),
                measured: format!("{m:.1} MiB"),
                met: m < 100.0,
            });
        }
    }
    out
}
