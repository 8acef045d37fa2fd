//! `raft-sidecar bench compare`: raft-sidecar against etcd on the same machine in one
//! invocation (docs/benchmarks.md). Throughput rounds alternate the systems (odd rounds start
//! with the other one) and start a fresh cluster each time, so slow drifts of a shared machine
//! hit both; then leader failover for both, then RSS idle and after `--rss-ops` operations
//! and bytes on disk. Prints a Markdown table with the ratios and the project's performance
//! targets (docs/benchmarks.md), and writes every raw figure as JSON (`--json`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::{
    ClusterOpts, FailoverArgs, FailoverReport, LevelResult, Load, Mode, RssArgs, RssReport, Sut,
    System, failover_on, measure_level, ms, new_histogram, report, rss_readings, rt,
};
use crate::cli::run::Failure;

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Systems to compare, in the order of the first round.
    #[arg(
        long,
        env = "RAFT_BENCH_SYSTEMS",
        value_enum,
        value_delimiter = ',',
        default_value = "raft-sidecar,etcd"
    )]
    pub systems: Vec<System>,
    /// Numbers of concurrent clients (comma separated).
    #[arg(long, env = "RAFT_BENCH_CLIENTS", value_delimiter = ',', default_value = "1,16,64,256", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: Vec<u32>,
    /// Where clients send: `leader`, `spread` (round-robin over all nodes), or both.
    #[arg(
        long,
        env = "RAFT_BENCH_MODES",
        value_enum,
        value_delimiter = ',',
        default_value = "leader,spread"
    )]
    pub modes: Vec<Mode>,
    /// Throughput rounds; each round starts a fresh cluster of every system (0 skips throughput).
    #[arg(long, env = "RAFT_BENCH_ROUNDS", default_value_t = 3)]
    pub rounds: u32,
    /// Measured time per client count, mode and round (after the warm-up).
    #[arg(long, env = "RAFT_BENCH_DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Load applied before each measurement (not counted).
    #[arg(long, env = "RAFT_BENCH_WARMUP", default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Size of each operation's payload (the etcd value, the sidecar's JSON string payload).
    #[arg(long, env = "RAFT_BENCH_PAYLOAD_BYTES", default_value_t = 100)]
    pub payload_bytes: usize,
    /// Pause of a client after a failed write before its next one.
    #[arg(long, env = "RAFT_BENCH_ERROR_PAUSE", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub error_pause: Duration,
    /// kill -9 leader trials per system (0 skips failover).
    #[arg(long, env = "RAFT_BENCH_TRIALS", default_value_t = 10)]
    pub failover_trials: u32,
    /// Deadline of each failover probe attempt (abandoned and retried after it).
    #[arg(long, env = "RAFT_BENCH_PROBE_TIMEOUT", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// Idle time after the leader is elected before the idle RSS reading.
    #[arg(long, env = "RAFT_BENCH_IDLE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Operations before the second RSS and disk reading (0: idle reading only).
    #[arg(long, env = "RAFT_BENCH_RSS_OPS", default_value_t = 1_000_000)]
    pub rss_ops: u64,
    /// Concurrent clients (to the leader) submitting the `--rss-ops` operations.
    #[arg(long, env = "RAFT_BENCH_RSS_CLIENTS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rss_clients: u32,
    /// A short run to check the setup: 1 round of 2 s, 3 failover trials, 20,000 RSS ops.
    #[arg(long)]
    pub quick: bool,
    /// Also write the Markdown table to this file.
    #[arg(long, env = "RAFT_BENCH_MARKDOWN")]
    pub markdown: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterOpts,
}

/// One system, mode and client count over all rounds.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Cell {
    system: System,
    mode: Mode,
    clients: u32,
    /// Median over rounds.
    ops_per_sec: f64,
    ops_per_sec_min: f64,
    ops_per_sec_max: f64,
    /// Percentiles of all rounds' measured latencies together.
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    rounds: Vec<LevelResult>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Target {
    what: String,
    goal: String,
    measured: String,
    met: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Machine {
    date_utc: String,
    cpu: String,
    cores: usize,
    kernel: String,
    load_before: String,
    load_after: String,
    etcd_version: String,
}

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
                                "round={} system={} mode={mode:?} clients={} ops/s={:.1} p50_ms={:.2} p99_ms={:.2} p99.9_ms={:.2} errors={} load={}",
                                round + 1,
                                system.label(),
                                level.clients,
                                level.ops_per_sec,
                                level.p50_ms,
                                level.p99_ms,
                                level.p999_ms,
                                level.errors,
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
                .map_err(|e| rt(format!("cannot merge histograms: {e}")))?;
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

    // RSS idle and after --rss-ops operations, and bytes on disk.
    let mut rss = Vec::new();
    for &system in &args.systems {
        let rargs = RssArgs {
            idle: args.idle,
            ops: args.rss_ops,
            clients: args.rss_clients,
            payload_bytes: args.payload_bytes,
            cluster: opts_for(&args.cluster, system, "rss"),
        };
        let mut sut = Sut::start(&rargs.cluster).await?;
        let outcome = rss_readings(&rargs, &mut sut).await;
        sut.stop().await;
        rss.push(outcome?);
    }

    machine.load_after = loadavg();
    let targets = targets(&args, &cells, &failovers, &rss);
    let markdown = render(&args, &machine, &cells, &failovers, &rss, &targets);
    println!("\n{markdown}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &markdown)
            .map_err(|e| rt(format!("cannot write {}: {e}", path.display())))?;
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
        rss,
        targets,
        markdown,
        wall_s: (wall.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    match &args.cluster.json {
        Some(path) => {
            let text = serde_json::to_string_pretty(&out).map_err(|e| rt(e.to_string()))?;
            std::fs::write(path, format!("{text}\n"))
                .map_err(|e| rt(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("bench compare: raw results in {}", path.display());
            Ok(())
        }
        None => report(&out, None),
    }
}

fn cell(cells: &[Cell], system: System, mode: Mode, clients: u32) -> Option<&Cell> {
    cells
        .iter()
        .find(|c| c.system == system && c.mode == mode && c.clients == clients)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn max_rss_mib(nodes: Option<&Vec<super::NodeRss>>) -> Option<f64> {
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

fn render(
    args: &CompareArgs,
    m: &Machine,
    cells: &[Cell],
    failovers: &[FailoverReport],
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
                    format!("{mode:?}").to_lowercase(),
                    rate(a),
                    rate(b),
                    lat(a),
                    lat(b)
                ),
            );
        }
    }
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
            let list = |v: Option<&Vec<super::NodeRss>>| {
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
                format!(
                    "{:.0} s ({:.0} ops/s, {} clients, {} failed)",
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
