//! `raft-sidecar bench`: the load generator of the benchmark tier (docs/testing.md; figures in
//! docs/benchmarks.md). Each subcommand starts a fresh cluster of real `raft-sidecar run`
//! processes (the [`LocalCluster`] harness, this same executable, fsync on as always) in a
//! scratch directory that is removed at the end, drives it through the daemon API and prints
//! figures: one line per measurement, then one JSON object with every result (also written to
//! `--json FILE`).
//!
//! - `throughput`: N concurrent clients, each with its own keep-alive HTTP connection, submit
//!   unique operations with a fixed-size payload; latencies of successful submits after the
//!   warm-up go into an HDR histogram.
//! - `failover`: kill -9 the leader while a client writes continuously; time from the kill to
//!   the first committed write through a surviving node (same operation id retried).
//! - `rss`: resident memory of each node, idle and after a number of operations.
//!
//! - `compare`: all of the above for raft-sidecar and etcd in one invocation, alternating the
//!   systems over several rounds, and a table of both with their ratios (see [`compare`]).
//!
//! The system under test is reached only through [`Sut`] (start, leader, writers, pids, kill,
//! restart, caught-up check) and [`Writer`] (one client's write path), and every report names
//! its `system`: `--system raft-sidecar` (default) or `--system etcd` ([`etcd`]).

pub mod compare;
mod etcd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use nix::sys::signal::Signal;
use raft_api::client::{ClientError, SidecarClient};
use raft_api::daemon::Operation;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;

use self::etcd::{EtcdCluster, EtcdWriter};
use super::local_cluster::{LocalCluster, Ports};
use super::run::Failure;

/// Which system is benchmarked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum System {
    /// A cluster of `raft-sidecar run` processes (this executable).
    #[value(name = "raft-sidecar", alias = "sidecar")]
    #[serde(rename = "raft-sidecar")]
    Sidecar,
    /// A cluster of `etcd` processes, written through its HTTP/JSON gateway.
    #[value(name = "etcd")]
    #[serde(rename = "etcd")]
    Etcd,
}

impl System {
    fn label(self) -> &'static str {
        match self {
            System::Sidecar => "raft-sidecar",
            System::Etcd => "etcd",
        }
    }
}
/// Highest latency the histograms track (longer ones are clamped to it), in microseconds.
const MAX_LATENCY_US: u64 = 120_000_000;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Ops/s and latency percentiles for N concurrent clients (one line per N, then JSON).
    Throughput(Box<ThroughputArgs>),
    /// Leader failover time: kill -9 the leader → first committed write through a survivor.
    Failover(Box<FailoverArgs>),
    /// Resident memory (VmRSS) of each node, idle and optionally after `--ops` operations.
    Rss(Box<RssArgs>),
    /// raft-sidecar against etcd in one run: throughput table, failover, RSS and disk, ratios.
    Compare(Box<compare::CompareArgs>),
}

/// How the cluster under test is started; shared by every bench subcommand.
#[derive(Debug, Clone, Args)]
pub struct ClusterOpts {
    /// System under test.
    #[arg(long, env = "RAFT_BENCH_SYSTEM", value_enum, default_value_t = System::Sidecar)]
    pub system: System,
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
    /// Also write the final JSON report to this file.
    #[arg(long, env = "RAFT_BENCH_JSON")]
    pub json: Option<PathBuf>,
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
    #[command(flatten)]
    pub cluster: ClusterOpts,
}

pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    let work = async {
        match args.command {
            BenchCommand::Throughput(a) => throughput(*a).await,
            BenchCommand::Failover(a) => failover(*a).await,
            BenchCommand::Rss(a) => rss(*a).await,
            BenchCommand::Compare(a) => compare::compare(*a).await,
        }
    };
    // On Ctrl-C the work future is dropped, which stops the nodes and removes the scratch dir.
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(Failure::Runtime("interrupted".into())),
    }
}

fn rt(msg: impl Into<String>) -> Failure {
    Failure::Runtime(msg.into())
}

// ---------------------------------------------------------------------------------------------
// The system under test.

/// Removes the scratch directory when dropped (after the cluster, which is declared first in
/// [`Sut`] and therefore dropped, killing its processes, before this).
struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("bench: kept {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("bench: cannot remove {}: {e}", self.path.display());
        }
    }
}

/// The processes of the cluster under test.
enum Nodes {
    Sidecar(LocalCluster),
    Etcd(EtcdCluster),
}

/// A running cluster of child processes: raft-sidecar or etcd.
struct Sut {
    nodes: Nodes,
    system: System,
    request_timeout: Duration,
    startup_timeout: Duration,
    _scratch: ScratchDir,
}

impl Sut {
    async fn start(opts: &ClusterOpts) -> Result<Self, Failure> {
        let root = match &opts.dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!(
                "raft-bench-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            )),
        };
        if opts.dir.is_some() && root.exists() {
            return Err(Failure::Config(format!(
                "--dir {} already exists; the bench needs a fresh cluster",
                root.display()
            )));
        }
        let scratch = ScratchDir {
            path: root.clone(),
            keep: opts.keep_dir,
        };
        let n = usize::from(opts.nodes);
        let prepare = |e: std::io::Error| rt(format!("cannot prepare {}: {e}", root.display()));
        let nodes = match opts.system {
            System::Sidecar => {
                let bin = std::env::current_exe()
                    .map_err(|e| rt(format!("cannot find this executable: {e}")))?;
                let extra: Vec<&str> = opts.node_args.iter().map(String::as_str).collect();
                Nodes::Sidecar(
                    LocalCluster::new(&bin, &root, n, Ports::Free, &extra).map_err(prepare)?,
                )
            }
            System::Etcd => {
                let mut extra = Vec::new();
                if opts.etcd_compaction_revisions > 0 {
                    extra.push("--auto-compaction-mode=revision".to_string());
                    extra.push(format!(
                        "--auto-compaction-retention={}",
                        opts.etcd_compaction_revisions
                    ));
                }
                extra.extend(opts.etcd_args.iter().cloned());
                Nodes::Etcd(EtcdCluster::new(&opts.etcd_bin, &root, n, &extra).map_err(prepare)?)
            }
        };
        let mut sut = Sut {
            nodes,
            system: opts.system,
            request_timeout: opts.request_timeout,
            startup_timeout: opts.startup_timeout,
            _scratch: scratch,
        };
        let started = match &mut sut.nodes {
            Nodes::Sidecar(c) => c.start_all(),
            Nodes::Etcd(c) => c.start_all(),
        };
        started.map_err(|e| rt(format!("cannot start {} nodes: {e}", opts.system.label())))?;
        let leader = sut.leader().await?;
        eprintln!(
            "bench: {} {} nodes up in {}, leader {}",
            sut.len(),
            sut.system.label(),
            root.display(),
            sut.name(leader)
        );
        Ok(sut)
    }

    fn len(&self) -> usize {
        match &self.nodes {
            Nodes::Sidecar(c) => c.nodes.len(),
            Nodes::Etcd(c) => c.nodes.len(),
        }
    }

    fn name(&self, i: usize) -> &str {
        match &self.nodes {
            Nodes::Sidecar(c) => &c.nodes[i].name,
            Nodes::Etcd(c) => &c.nodes[i].name,
        }
    }

    fn pid(&self, i: usize) -> Option<u32> {
        match &self.nodes {
            Nodes::Sidecar(c) => c.pid(i),
            Nodes::Etcd(c) => c.pid(i),
        }
    }

    /// Index of the node all running members agree leads (deadline `--startup-timeout`).
    async fn leader(&mut self) -> Result<usize, Failure> {
        let found = match &mut self.nodes {
            Nodes::Sidecar(c) => c.wait_for_leader(self.startup_timeout).await,
            Nodes::Etcd(c) => c.wait_for_leader(self.startup_timeout).await,
        };
        found.map_err(|e| rt(format!("{e}\n{}", self.log_tails())))
    }

    fn log_tails(&self) -> String {
        (0..self.len())
            .map(|i| {
                let tail = match &self.nodes {
                    Nodes::Sidecar(c) => c.log_tail(i, 15),
                    Nodes::Etcd(c) => c.log_tail(i, 15),
                };
                format!("--- {} ---\n{tail}", self.name(i))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A client of sidecar node `i`'s daemon API with its own connection pool (keep-alive).
    fn api_client(&self, c: &LocalCluster, i: usize) -> SidecarClient {
        let api = c.nodes[i].api.to_string();
        SidecarClient::new(Some(&api), None, None, self.request_timeout)
    }

    /// One client of node `i` with its own keep-alive connection.
    fn writer(&self, i: usize) -> Writer {
        match &self.nodes {
            Nodes::Sidecar(c) => Writer::Sidecar(self.api_client(c, i)),
            Nodes::Etcd(c) => Writer::Etcd(EtcdWriter::new(&c.nodes[i], self.request_timeout)),
        }
    }

    fn rss(&self) -> Vec<NodeRss> {
        (0..self.len())
            .map(|i| {
                let pid = self.pid(i);
                NodeRss {
                    node: self.name(i).to_string(),
                    pid,
                    rss_kib: pid.and_then(vm_rss_kib),
                }
            })
            .collect()
    }

    /// Bytes allocated on disk under each node's data dir.
    fn disk(&self) -> Vec<NodeDisk> {
        (0..self.len())
            .map(|i| {
                let dir = match &self.nodes {
                    Nodes::Sidecar(c) => c.nodes[i].dir.clone(),
                    Nodes::Etcd(c) => c.nodes[i].dir.clone(),
                };
                NodeDisk {
                    node: self.name(i).to_string(),
                    bytes: dir_bytes(&dir),
                }
            })
            .collect()
    }

    /// Send SIGKILL to node `i` (reap it with [`Sut::reap_killed`]).
    fn sigkill(&self, i: usize) -> Result<(), Failure> {
        let pid = self
            .pid(i)
            .ok_or_else(|| rt(format!("{} is not running", self.name(i))))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
            Signal::SIGKILL,
        )
        .map_err(|e| rt(format!("cannot kill {}: {e}", self.name(i))))
    }

    async fn reap_killed(&mut self, i: usize) -> Result<(), Failure> {
        let reaped = match &mut self.nodes {
            Nodes::Sidecar(c) => c.kill9(i).await,
            Nodes::Etcd(c) => c.kill9(i).await,
        };
        reaped.map_err(|e| rt(format!("cannot reap node {i}: {e}")))
    }

    fn restart(&mut self, i: usize) -> Result<(), Failure> {
        let started = match &mut self.nodes {
            Nodes::Sidecar(c) => c.start(i),
            Nodes::Etcd(c) => c.start(i),
        };
        started.map_err(|e| rt(format!("cannot restart node {i}: {e}")))
    }

    /// Poll until node `i` has applied at least what the leader had (read each poll).
    async fn wait_caught_up(&self, i: usize, within: Duration) -> Result<(), Failure> {
        let c = match &self.nodes {
            Nodes::Sidecar(c) => c,
            Nodes::Etcd(c) => return c.wait_caught_up(i, within).await.map_err(rt),
        };
        let deadline = Instant::now() + within;
        let node = self.api_client(c, i);
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match self.leader_applied(c, i).await {
                Ok(target) => match node.state().await {
                    Ok(s) if s.applied_index >= target => return Ok(()),
                    Ok(s) => last = format!("applied {} < leader's {target}", s.applied_index),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(rt(format!(
            "{} did not catch up within {within:?}: {last}",
            self.name(i)
        )))
    }

    /// The appliedIndex of the node that `i` (or, failing that, any node) names as leader.
    async fn leader_applied(&self, c: &LocalCluster, i: usize) -> Result<u64, String> {
        let s = self
            .api_client(c, i)
            .state()
            .await
            .map_err(|e| e.to_string())?;
        let leader = s.leader_id.ok_or("no leader known")?;
        let li = c
            .nodes
            .iter()
            .position(|n| n.name == leader)
            .ok_or_else(|| format!("unknown leader {leader}"))?;
        let ls = self
            .api_client(c, li)
            .state()
            .await
            .map_err(|e| e.to_string())?;
        if !ls.is_leader {
            return Err(format!("{leader} is no longer leader"));
        }
        Ok(ls.applied_index)
    }

    async fn stop(mut self) {
        match &mut self.nodes {
            Nodes::Sidecar(c) => c.stop_all(Duration::from_secs(10)).await,
            Nodes::Etcd(c) => c.stop_all(Duration::from_secs(10)).await,
        }
    }
}

/// What a successful write answered: its position and term.
#[derive(Debug, Clone, Copy)]
struct Written {
    log_index: u64,
    term: u64,
}

/// One client's write path into the system under test.
#[derive(Clone)]
enum Writer {
    Sidecar(SidecarClient),
    Etcd(EtcdWriter),
}

impl Writer {
    /// Write `op`: a submit to the sidecar; a put of key `op.id`, value the payload, to etcd.
    async fn write(&self, op: &Operation) -> Result<Written, String> {
        match self {
            Writer::Sidecar(c) => match c.submit(op).await {
                Ok(r) if r.committed => Ok(Written {
                    log_index: r.log_index,
                    term: r.term,
                }),
                Ok(r) => Err(format!("NOT_COMMITTED_{:?}", r.status).to_uppercase()),
                Err(e) => Err(error_label(&e)),
            },
            Writer::Etcd(w) => {
                let value = op
                    .payload
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                w.put(&op.id, value.as_bytes()).await.map(|p| Written {
                    log_index: p.revision,
                    term: p.term,
                })
            }
        }
    }
}

/// Allocated bytes (st_blocks × 512) of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeDisk {
    node: String,
    bytes: u64,
}

/// A short, countable label for a failed request.
fn error_label(e: &ClientError) -> String {
    match e {
        ClientError::Api { code, .. } => code.as_str().to_string(),
        ClientError::Http { source, .. } if source.is_timeout() => "CLIENT_TIMEOUT".into(),
        ClientError::Http { source, .. } if source.is_connect() => "CONNECT".into(),
        ClientError::Http { .. } => "HTTP".into(),
        ClientError::Unexpected { status, .. } => format!("UNEXPECTED_{status}"),
        ClientError::NoAddress(_) => "NO_ADDRESS".into(),
    }
}

fn bench_op(id: String, payload: &Value) -> Operation {
    Operation {
        id,
        op_type: "bench".into(),
        payload: Some(payload.clone()),
        daemon_id: None,
        timestamp: None,
    }
}

/// A JSON string payload of exactly `bytes` bytes.
fn payload(bytes: usize) -> Value {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let s: String = (0..bytes)
        .map(|i| char::from(ALPHABET[i % ALPHABET.len()]))
        .collect();
    Value::String(s)
}

/// `VmRSS` of a process from `/proc/<pid>/status`, in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn new_histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| rt(format!("cannot create histogram: {e}")))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(us: u64) -> f64 {
    // Two decimals are plenty for a noisy shared machine.
    (us as f64 / 10.0).round() / 100.0
}

fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn report(value: &impl Serialize, json: Option<&Path>) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| rt(e.to_string()))?;
    println!("{text}");
    if let Some(path) = json {
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| rt(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeRss {
    node: String,
    pid: Option<u32>,
    rss_kib: Option<u64>,
}

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

// ---------------------------------------------------------------------------------------------
// throughput

/// What one client task measured.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    warmup_ok: u64,
    errors: BTreeMap<String, u64>,
    warmup_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct LevelResult {
    clients: u32,
    ops: u64,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    errors: u64,
    error_codes: BTreeMap<String, u64>,
    warmup_ops: u64,
    warmup_errors: u64,
    rss: Vec<NodeRss>,
    /// Latencies of the measured operations, in microseconds (merged over rounds by `compare`).
    #[serde(skip)]
    hist: Histogram<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ThroughputReport {
    system: System,
    bench: &'static str,
    nodes: usize,
    mode: Mode,
    payload_bytes: usize,
    duration_ms: u64,
    warmup_ms: u64,
    results: Vec<LevelResult>,
}

/// Submit unique operations until `end`; requests started at or after `measure_from` count.
async fn client_loop(
    writer: Writer,
    prefix: String,
    payload: Arc<Value>,
    measure_from: Instant,
    end: Instant,
    error_pause: Duration,
) -> Result<Tally, Failure> {
    let mut t = Tally {
        hist: new_histogram()?,
        ok: 0,
        warmup_ok: 0,
        errors: BTreeMap::new(),
        warmup_errors: 0,
    };
    let mut seq: u64 = 0;
    loop {
        let start = Instant::now();
        if start >= end {
            return Ok(t);
        }
        seq += 1;
        let op = bench_op(format!("{prefix}-{seq}"), &payload);
        let outcome = writer.write(&op).await;
        let measured = start >= measure_from;
        match outcome {
            Ok(_) if measured => {
                t.hist.saturating_record(micros(start.elapsed()).max(1));
                t.ok += 1;
            }
            Ok(_) => t.warmup_ok += 1,
            Err(label) => {
                if measured {
                    *t.errors.entry(label).or_default() += 1;
                } else {
                    t.warmup_errors += 1;
                }
                tokio::time::sleep(error_pause).await;
            }
        }
    }
}

async fn throughput(args: ThroughputArgs) -> Result<(), Failure> {
    if args.duration.is_zero() {
        return Err(Failure::Config("--duration must be above zero".into()));
    }
    let mut sut = Sut::start(&args.cluster).await?;
    let sut_system = sut.system;
    let outcome = throughput_levels(&args, &mut sut).await;
    sut.stop().await;
    let results = outcome?;
    report(
        &ThroughputReport {
            system: sut_system,
            bench: "throughput",
            nodes: usize::from(args.cluster.nodes),
            mode: args.mode,
            payload_bytes: args.payload_bytes,
            duration_ms: u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX),
            warmup_ms: u64::try_from(args.warmup.as_millis()).unwrap_or(u64::MAX),
            results,
        },
        args.cluster.json.as_deref(),
    )
}

async fn throughput_levels(
    args: &ThroughputArgs,
    sut: &mut Sut,
) -> Result<Vec<LevelResult>, Failure> {
    let load = Load {
        mode: args.mode,
        warmup: args.warmup,
        duration: args.duration,
        payload_bytes: args.payload_bytes,
        error_pause: args.error_pause,
    };
    let mut results = Vec::new();
    for &clients in &args.clients {
        let level = measure_level(sut, clients, &load).await?;
        println!(
            "clients={} ops/s={:.1} p50_ms={:.2} p99_ms={:.2} p99.9_ms={:.2} errors={}",
            level.clients,
            level.ops_per_sec,
            level.p50_ms,
            level.p99_ms,
            level.p999_ms,
            level.errors
        );
        results.push(level);
    }
    Ok(results)
}

/// How one throughput level is driven.
#[derive(Debug, Clone, Copy)]
struct Load {
    mode: Mode,
    warmup: Duration,
    duration: Duration,
    payload_bytes: usize,
    error_pause: Duration,
}

/// `clients` concurrent clients for `load.warmup + load.duration`; the measured part counts.
async fn measure_level(sut: &mut Sut, clients: u32, load: &Load) -> Result<LevelResult, Failure> {
    let payload = Arc::new(payload(load.payload_bytes));
    let run = run_id();
    let leader = sut.leader().await?;
    let mut tasks = JoinSet::new();
    let measure_from = Instant::now() + load.warmup;
    let end = measure_from + load.duration;
    for c in 0..clients {
        let node = match load.mode {
            Mode::Leader => leader,
            Mode::Spread => usize::try_from(c).unwrap_or(0) % sut.len(),
        };
        tasks.spawn(client_loop(
            sut.writer(node),
            format!("bench-{run}-{clients}-{c}"),
            Arc::clone(&payload),
            measure_from,
            end,
            load.error_pause,
        ));
    }
    let mut hist = new_histogram()?;
    let (mut ok, mut warmup_ok, mut warmup_errors) = (0, 0, 0);
    let mut error_codes: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let t = joined.map_err(|e| rt(format!("client task failed: {e}")))??;
        hist.add(&t.hist)
            .map_err(|e| rt(format!("cannot merge histograms: {e}")))?;
        ok += t.ok;
        warmup_ok += t.warmup_ok;
        warmup_errors += t.warmup_errors;
        for (k, v) in t.errors {
            *error_codes.entry(k).or_default() += v;
        }
    }
    let errors = error_codes.values().sum();
    if errors > 0 {
        eprintln!(
            "bench: {} clients={clients} errors by code: {error_codes:?}",
            sut.system.label()
        );
    }
    Ok(LevelResult {
        clients,
        ops: ok,
        ops_per_sec: (ok as f64 / load.duration.as_secs_f64() * 10.0).round() / 10.0,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        mean_ms: (hist.mean() / 10.0).round() / 100.0,
        errors,
        error_codes,
        warmup_ops: warmup_ok,
        warmup_errors,
        rss: sut.rss(),
        hist,
    })
}

// ---------------------------------------------------------------------------------------------
// failover

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Trial {
    trial: u32,
    killed: String,
    failover_ms: f64,
    answered_by: String,
    log_index: u64,
    term: u64,
    new_leader: String,
    attempts: u64,
    errors: BTreeMap<String, u64>,
    catch_up_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct FailoverReport {
    system: System,
    bench: &'static str,
    nodes: usize,
    trials: Vec<Trial>,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    background_ok: u64,
    background_errors: u64,
}

/// What the probe saw: who answered, when, and the errors before that.
struct Probe {
    elapsed: Duration,
    answered_by: usize,
    result: Written,
    attempts: u64,
    errors: BTreeMap<String, u64>,
}

/// Submit `op` (always the same id) to each survivor in its own retry loop, pausing `pause`
/// after every error, until one of them commits it or `deadline` passes.
async fn probe(
    survivors: Vec<(usize, Writer)>,
    op: Operation,
    pause: Duration,
    attempt_timeout: Duration,
    killed_at: Instant,
    deadline: Instant,
) -> Result<Probe, String> {
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let attempts = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let mut loops = JoinSet::new();
    for (node, writer) in survivors {
        let (errors, attempts, op) = (Arc::clone(&errors), Arc::clone(&attempts), Arc::clone(&op));
        loops.spawn(async move {
            loop {
                attempts.fetch_add(1, Ordering::Relaxed);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                let label = match tokio::time::timeout(left.min(attempt_timeout), writer.write(&op))
                    .await
                {
                    Ok(Ok(result)) => return Some((node, result, killed_at.elapsed())),
                    Ok(Err(label)) => label,
                    Err(_) => "PROBE_TIMEOUT".to_string(),
                };
                if let Ok(mut e) = errors.lock() {
                    *e.entry(label).or_default() += 1;
                }
                if Instant::now() + pause >= deadline {
                    return None;
                }
                tokio::time::sleep(pause).await;
            }
        });
    }
    let mut won = None;
    while let Some(joined) = loops.join_next().await {
        if let Ok(Some(w)) = joined {
            won = Some(w);
            loops.abort_all();
            break;
        }
    }
    let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
    match won {
        Some((answered_by, result, elapsed)) => Ok(Probe {
            elapsed,
            answered_by,
            result,
            attempts: attempts.load(Ordering::Relaxed),
            errors,
        }),
        None => Err(format!(
            "no committed write before the deadline; errors: {errors:?}"
        )),
    }
}

/// A client that submits unique operations round-robin over every node until stopped.
fn background_writer(
    writers: Vec<Writer>,
    payload: Arc<Value>,
    prefix: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            for w in &writers {
                seq += 1;
                match w
                    .write(&bench_op(format!("{prefix}-{seq}"), &payload))
                    .await
                {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    })
}

async fn failover(args: FailoverArgs) -> Result<(), Failure> {
    if args.cluster.nodes < 3 {
        return Err(Failure::Config(
            "failover needs at least 3 nodes (a majority must survive)".into(),
        ));
    }
    let sut = Sut::start(&args.cluster).await?;
    let report_ = failover_on(&args, sut).await?;
    report(&report_, args.cluster.json.as_deref())
}

/// Run the failover trials on `sut` (stopped at the end) with a background writer.
async fn failover_on(args: &FailoverArgs, mut sut: Sut) -> Result<FailoverReport, Failure> {
    let run = run_id();
    let payload = Arc::new(payload(args.payload_bytes));
    let stop = Arc::new(AtomicBool::new(false));
    let (bg_ok, bg_err) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let bg = background_writer(
        (0..sut.len()).map(|i| sut.writer(i)).collect(),
        Arc::clone(&payload),
        format!("bench-{run}-bg"),
        Arc::clone(&stop),
        Arc::clone(&bg_ok),
        Arc::clone(&bg_err),
    );
    let outcome = failover_trials(args, &mut sut, &run, &payload).await;
    stop.store(true, Ordering::Relaxed);
    if tokio::time::timeout(args.cluster.request_timeout * 2, bg)
        .await
        .is_err()
    {
        eprintln!("bench: background writer did not stop in time");
    }
    let sut_system = sut.system;
    sut.stop().await;
    let trials = outcome?;
    let mut times: Vec<f64> = trials.iter().map(|t| t.failover_ms).collect();
    times.sort_by(f64::total_cmp);
    let median = match times.len() {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    };
    let min = times.first().copied().unwrap_or(0.0);
    let max = times.last().copied().unwrap_or(0.0);
    println!(
        "{} failover median_ms={median:.1} max_ms={max:.1} min_ms={min:.1}",
        sut_system.label()
    );
    Ok(FailoverReport {
        system: sut_system,
        bench: "failover",
        nodes: usize::from(args.cluster.nodes),
        trials,
        median_ms: median,
        min_ms: min,
        max_ms: max,
        background_ok: bg_ok.load(Ordering::Relaxed),
        background_errors: bg_err.load(Ordering::Relaxed),
    })
}

async fn failover_trials(
    args: &FailoverArgs,
    sut: &mut Sut,
    run: &str,
    payload: &Value,
) -> Result<Vec<Trial>, Failure> {
    let mut trials = Vec::new();
    for trial in 1..=args.trials {
        tokio::time::sleep(args.settle).await;
        let leader = sut.leader().await?;
        let survivors: Vec<(usize, Writer)> = (0..sut.len())
            .filter(|&i| i != leader)
            .map(|i| (i, sut.writer(i)))
            .collect();
        let op = bench_op(format!("bench-{run}-failover-{trial}"), payload);
        let killed_at = Instant::now();
        sut.sigkill(leader)?;
        let probing = tokio::spawn(probe(
            survivors,
            op,
            args.retry_interval,
            args.probe_timeout,
            killed_at,
            killed_at + args.failover_timeout,
        ));
        // Reap the killed process while the probe runs.
        sut.reap_killed(leader).await?;
        let probed = probing
            .await
            .map_err(|e| rt(format!("probe task failed: {e}")))?
            .map_err(|e| rt(format!("trial {trial}: {e}\n{}", sut.log_tails())))?;
        let new_leader = sut.leader().await?;
        let restarted_at = Instant::now();
        sut.restart(leader)?;
        sut.wait_caught_up(leader, args.catch_up_timeout).await?;
        let t = Trial {
            trial,
            killed: sut.name(leader).to_string(),
            failover_ms: ms(micros(probed.elapsed)),
            answered_by: sut.name(probed.answered_by).to_string(),
            log_index: probed.result.log_index,
            term: probed.result.term,
            new_leader: sut.name(new_leader).to_string(),
            attempts: probed.attempts,
            errors: probed.errors,
            catch_up_ms: ms(micros(restarted_at.elapsed())),
        };
        println!(
            "{} trial={} killed={} failover_ms={:.1} answered_by={} new_leader={} term={} attempts={} errors={:?} catch_up_ms={:.0}",
            sut.system.label(),
            t.trial,
            t.killed,
            t.failover_ms,
            t.answered_by,
            t.new_leader,
            t.term,
            t.attempts,
            t.errors,
            t.catch_up_ms
        );
        trials.push(t);
    }
    Ok(trials)
}

// ---------------------------------------------------------------------------------------------
// rss

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct RssReport {
    system: System,
    bench: &'static str,
    nodes: usize,
    idle_ms: u64,
    idle: Vec<NodeRss>,
    ops: u64,
    ops_failed: u64,
    /// Wall time of the `ops` operations (with `clients` concurrent clients).
    ops_ms: u64,
    clients: u32,
    after_ops: Option<Vec<NodeRss>>,
    /// Bytes allocated under each node's data dir after the operations.
    disk_after_ops: Option<Vec<NodeDisk>>,
}

async fn rss(args: RssArgs) -> Result<(), Failure> {
    let mut sut = Sut::start(&args.cluster).await?;
    let outcome = rss_readings(&args, &mut sut).await;
    sut.stop().await;
    report(&outcome?, args.cluster.json.as_deref())
}

async fn rss_readings(args: &RssArgs, sut: &mut Sut) -> Result<RssReport, Failure> {
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
            joined.map_err(|e| rt(format!("client task failed: {e}")))?;
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
