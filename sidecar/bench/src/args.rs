//! The command line of `raft-bench` (clap): the subcommands, the flags of each, the options
//! of the cluster under test that they share, and which `raft-sidecar` executable it runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::Failure;

/// Which system is benchmarked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum System {
    /// A cluster of `raft-sidecar run` processes (the `--sidecar-bin` executable).
    #[value(name = "raft-sidecar", alias = "sidecar")]
    #[serde(rename = "raft-sidecar")]
    Sidecar,
    /// A cluster of `etcd` processes, written through its HTTP/JSON gateway.
    #[value(name = "etcd")]
    #[serde(rename = "etcd")]
    Etcd,
}

impl System {
    pub(crate) fn label(self) -> &'static str {
        match self {
            System::Sidecar => "raft-sidecar",
            System::Etcd => "etcd",
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Ops/s and latency percentiles for N concurrent clients (one line per N, then JSON).
    Throughput(Box<ThroughputArgs>),
    /// Leader failover time: kill -9 the leader → first committed write through a survivor.
    Failover(Box<FailoverArgs>),
    /// Resident memory (VmRSS) of each node, idle and optionally after `--ops` operations.
    Rss(Box<RssArgs>),
    /// A rolling restart under load (SIGTERM each member in turn, followers first, the leader
    /// last): elections, write gaps, failed writes.
    RollingRestart(Box<RollingArgs>),
    /// raft-sidecar against etcd in one run: throughput table, failover, RSS and disk, ratios.
    Compare(Box<CompareArgs>),
}

/// How the cluster under test is started; shared by every bench subcommand.
#[derive(Debug, Clone, Args)]
pub struct ClusterOpts {
    /// System under test.
    #[arg(long, env = "RAFT_BENCH_SYSTEM", value_enum, default_value_t = System::Sidecar)]
    pub system: System,
    /// The `raft-sidecar` executable the nodes run (`--system raft-sidecar`); default: the
    /// `raft-sidecar` next to this executable.
    #[arg(long, env = "RAFT_SIDECAR_BIN")]
    pub sidecar_bin: Option<PathBuf>,
    /// The etcd executable (`--system etcd`): Debian's `etcd-server` installs `etcd`.
    #[arg(long, env = "RAFT_BENCH_ETCD_BIN", default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// etcd's `--auto-compaction-retention` in revisions (mode `revision`); 0 turns it off.
    /// The default keeps as much history as the sidecar's default `--journal-retention`.
    #[arg(long, env = "RAFT_BENCH_ETCD_COMPACTION", default_value_t = 100_000)]
    pub etcd_compaction_revisions: u64,
    /// Extra flag passed to every etcd member (repeatable), e.g. `--etcd-arg=--quota-backend-bytes=8589934592`.
    #[arg(
        long = "etcd-arg",
        env = "RAFT_BENCH_ETCD_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub etcd_args: Vec<String>,
    /// Number of nodes in the cluster under test.
    #[arg(long, env = "RAFT_BENCH_NODES", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub nodes: u8,
    /// Scratch directory for the nodes' data and logs (default: a fresh one under the system
    /// temp dir); removed at the end unless `--keep-dir`.
    #[arg(long, env = "RAFT_BENCH_DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the scratch directory (data and node logs) after the run.
    #[arg(long, env = "RAFT_BENCH_KEEP_DIR")]
    pub keep_dir: bool,
    /// Deadline for the cluster to agree on a leader (at start and after every fault).
    #[arg(long, env = "RAFT_BENCH_STARTUP_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub startup_timeout: Duration,
    /// Deadline of each HTTP request to a node.
    #[arg(long, env = "RAFT_BENCH_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Extra flag passed to every node's `run` (repeatable), e.g. `--node-arg=--heartbeat-ms=100`.
    #[arg(
        long = "node-arg",
        env = "RAFT_BENCH_NODE_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub node_args: Vec<String>,
    /// Run the sidecars with `--insecure-plaintext` (no mutual TLS between them), to measure
    /// what TLS costs or to compare with an etcd run without TLS.
    #[arg(long, env = "RAFT_BENCH_PLAINTEXT")]
    pub plaintext: bool,
    /// Also write the final JSON report to this file.
    #[arg(long, env = "RAFT_BENCH_JSON")]
    pub json: Option<PathBuf>,
}

impl ClusterOpts {
    /// The `raft-sidecar` executable: `--sidecar-bin`, else `raft-sidecar` beside this one.
    pub(crate) fn sidecar_bin(&self) -> Result<PathBuf, Failure> {
        let bin = match &self.sidecar_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .map_err(|e| Failure::runtime(format!("cannot find this executable: {e}")))?
                .with_file_name("raft-sidecar"),
        };
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(Failure::Config(format!(
                "no raft-sidecar executable at {}: build it (`cargo build -p raft-sidecar`, \
                 same profile and target dir) or pass --sidecar-bin PATH (RAFT_SIDECAR_BIN)",
                bin.display()
            )))
        }
    }
}

/// Where the clients send their operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every client talks to the leader's daemon API.
    Leader,
    /// Clients are spread round-robin over all nodes (followers forward to the leader).
    Spread,
}

impl Mode {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Mode::Leader => "leader",
            Mode::Spread => "spread",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Numbers of concurrent clients to measure, one after the other (comma separated).
    #[arg(long, env = "RAFT_BENCH_CLIENTS", value_delimiter = ',', default_value = "1,16,64,256", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: Vec<u32>,
    /// Measured time per client count (after the warm-up).
    #[arg(long, env = "RAFT_BENCH_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Load applied before measuring, per client count (not counted).
    #[arg(long, env = "RAFT_BENCH_WARMUP", default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Size of each operation's payload (a JSON string of this many bytes).
    #[arg(long, env = "RAFT_BENCH_PAYLOAD_BYTES", default_value_t = 100)]
    pub payload_bytes: usize,
    /// Which nodes the clients talk to.
    #[arg(long, env = "RAFT_BENCH_MODE", value_enum, default_value_t = Mode::Leader)]
    pub mode: Mode,
    /// Pause of a client after a failed submit before its next one.
    #[arg(long, env = "RAFT_BENCH_ERROR_PAUSE", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub error_pause: Duration,
    /// Operations per request: 1 writes one at a time; N sends N at once (raft-sidecar:
    /// `POST /v1/operations:batch`; etcd: one transaction of N puts, at most its
    /// `--max-txn-ops`, 128 by default). Latencies are per request, rates per operation.
    #[arg(long, env = "RAFT_BENCH_BATCH", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    #[command(flatten)]
    pub cluster: ClusterOpts,
}

#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// Number of kill -9 / recover cycles.
    #[arg(long, env = "RAFT_BENCH_TRIALS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub trials: u32,
    /// Pause between retries of the probe write after an error.
    #[arg(long, env = "RAFT_BENCH_RETRY_INTERVAL", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub retry_interval: Duration,
    /// Deadline of each probe attempt; an attempt that has not answered by then is abandoned
    /// and retried (etcd holds a put forwarded to a dead leader for its full 7 s request
    /// timeout, so a client without such a deadline measures etcd's timeout, not its failover).
    #[arg(long, env = "RAFT_BENCH_PROBE_TIMEOUT", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// Deadline for the first committed write after the kill.
    #[arg(long, env = "RAFT_BENCH_FAILOVER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub failover_timeout: Duration,
    /// Deadline for the restarted node to catch up with the leader.
    #[arg(long, env = "RAFT_BENCH_CATCH_UP_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub catch_up_timeout: Duration,
    /// Time the cluster runs under the background writer before each kill.
    #[arg(long, env = "RAFT_BENCH_SETTLE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Size of each operation's payload (a JSON string of this many bytes).
    #[arg(long, env = "RAFT_BENCH_PAYLOAD_BYTES", default_value_t = 100)]
    pub payload_bytes: usize,
    #[command(flatten)]
    pub cluster: ClusterOpts,
}

#[derive(Debug, Clone, Args)]
pub struct RollingArgs {
    /// Concurrent clients writing through the whole roll (round-robin over the nodes).
    #[arg(long, env = "RAFT_BENCH_ROLLING_CLIENTS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// How long each member stays down, as a pod being replaced does.
    #[arg(long, env = "RAFT_BENCH_DOWN", default_value = "2s", value_parser = humantime::parse_duration)]
    pub down: Duration,
    /// Writing before the first restart, and after each member caught up.
    #[arg(long, env = "RAFT_BENCH_SETTLE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Gaps between acknowledgements longer than this count as unavailability.
    #[arg(long, env = "RAFT_BENCH_GAP", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub gap: Duration,
    /// How long one write is retried (same id, next node) before it counts as failed.
    #[arg(long, env = "RAFT_BENCH_WRITE_DEADLINE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub write_deadline: Duration,
    /// Deadline for a restarted member to catch up with the leader.
    #[arg(long, env = "RAFT_BENCH_CATCH_UP_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub catch_up_timeout: Duration,
    /// Size of each operation's payload (a JSON string of this many bytes).
    #[arg(long, env = "RAFT_BENCH_PAYLOAD_BYTES", default_value_t = 100)]
    pub payload_bytes: usize,
    #[command(flatten)]
    pub cluster: ClusterOpts,
}

#[derive(Debug, Clone, Args)]
pub struct RssArgs {
    /// Idle time after the leader is elected, before the first reading.
    #[arg(long, env = "RAFT_BENCH_IDLE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// Operations to submit after the idle reading (0: idle reading only).
    #[arg(long, env = "RAFT_BENCH_OPS", default_value_t = 0)]
    pub ops: u64,
    /// Concurrent clients submitting the `--ops` operations (to the leader).
    #[arg(long, env = "RAFT_BENCH_RSS_CLIENTS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// Size of each operation's payload (a JSON string of this many bytes).
    #[arg(long, env = "RAFT_BENCH_PAYLOAD_BYTES", default_value_t = 100)]
    pub payload_bytes: usize,
    /// Operations per point of the sustained-rate curve (the rate of each successive this
    /// many operations); 0: no curve.
    #[arg(long, env = "RAFT_BENCH_CURVE_EVERY", default_value_t = 100_000)]
    pub curve_every: u64,
    #[command(flatten)]
    pub cluster: ClusterOpts,
}

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
    /// Operations per request: 1 writes one at a time; N sends N at once (raft-sidecar:
    /// `POST /v1/operations:batch`; etcd: one transaction of N puts, at most its
    /// `--max-txn-ops`, 128 by default). Latencies are per request, rates per operation.
    #[arg(long, env = "RAFT_BENCH_BATCH", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
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
    /// Clients writing through the rolling restart of each system (0 skips it).
    #[arg(long, env = "RAFT_BENCH_ROLLING_CLIENTS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub rolling_clients: u32,
    /// A short run to check the setup: 1 round of 2 s, 3 failover trials, 20,000 RSS ops.
    #[arg(long)]
    pub quick: bool,
    /// Also write the Markdown table to this file.
    #[arg(long, env = "RAFT_BENCH_MARKDOWN")]
    pub markdown: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterOpts,
}
