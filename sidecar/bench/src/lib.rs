//! `raft-bench`: the load generator of the benchmark tier (docs/testing.md; figures in
//! docs/benchmarks.md). Each subcommand starts a fresh cluster of real `raft-sidecar run`
//! processes (raft-testkit's `LocalCluster`, running the `--sidecar-bin` executable, fsync on as
//! always) in a scratch directory that is removed at the end, drives it through the daemon API
//! and prints figures: one line per measurement, then one JSON object with every result (also
//! written to `--json FILE`).
//!
//! - `throughput` ([`load`]): N concurrent clients, each with its own keep-alive HTTP
//!   connection, submit unique operations with a fixed-size payload; latencies of successful
//!   submits after the warm-up go into an HDR histogram, their completion times into
//!   [`stalls`] (spans in which no write completed).
//! - `failover` ([`failover`]): kill -9 the leader while a client writes continuously; time
//!   from the kill to the first committed write through a surviving node (same operation id
//!   retried).
//! - `rss` ([`rss`]): resident memory of each node, idle and after a number of operations.
//! - `rolling-restart` ([`rolling`]): SIGTERM and restart each member in turn under load, the
//!   leader last; elections, write gaps and failed writes.
//!
//! - `compare` ([`compare`]): all of the above for raft-sidecar and etcd in one invocation,
//!   alternating the systems over several rounds, and a table of both with their ratios.
//!
//! The system under test is reached only through [`sut::Sut`] (start, leader, writers, pids,
//! kill, restart, caught-up check) and [`sut::Writer`] (one client's write path), and every
//! report names its `system`: `--system raft-sidecar` (default) or `--system etcd` ([`etcd`]).
//! The command line is in [`args`], the JSON and Markdown output in [`report`].

pub mod args;
mod compare;
mod etcd;
mod failover;
mod load;
mod report;
mod rolling;
mod rss;
mod stalls;
mod sut;
mod table;

use args::BenchCommand;

/// Why a bench run failed; `main` maps it to the exit status.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or an impossible setup (exit 64).
    Config(String),
    /// The run itself failed: a cluster did not start, a deadline passed, a write failed (exit 1).
    Runtime(String),
}

impl Failure {
    /// A [`Failure::Runtime`] with this message.
    pub(crate) fn runtime(msg: impl Into<String>) -> Self {
        Failure::Runtime(msg.into())
    }
}

pub async fn run(command: BenchCommand) -> Result<(), Failure> {
    let work = async {
        match command {
            BenchCommand::Throughput(a) => load::throughput(*a).await,
            BenchCommand::Failover(a) => failover::failover(*a).await,
            BenchCommand::Rss(a) => rss::rss(*a).await,
            BenchCommand::RollingRestart(a) => rolling::rolling(*a).await,
            BenchCommand::Compare(a) => compare::compare(*a).await,
        }
    };
    // On Ctrl-C the work future is dropped, which stops the nodes and removes the scratch dir.
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(Failure::Runtime("interrupted".into())),
    }
}
