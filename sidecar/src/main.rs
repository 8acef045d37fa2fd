//! `raft-sidecar`: parse the command line, set up tracing, hand off to the library, map errors
//! to exit codes (64 for bad configuration, 1 for runtime failures).

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use raft_sidecar::cli::{ctl, dev, recover, restore, run};
use raft_sidecar::config::RunArgs;

/// Raft consensus sidecar: durable, ordered, exactly-once operations for the daemon beside it.
#[derive(Debug, Parser)]
#[command(name = "raft-sidecar", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node (what the pod runs).
    Run(Box<RunArgs>),
    /// Run a local cluster of N nodes on loopback, bootstrapped; Ctrl-C stops it.
    Dev(dev::DevArgs),
    /// Talk to a running sidecar, like etcdctl.
    Ctl(ctl::CtlArgs),
    /// Create a data dir from a backup: the node starts as the only member of a new cluster
    /// holding the backup's journal and dedupe records; add the other members to it.
    Restore(restore::RestoreArgs),
    /// After a permanent loss of the majority: make this stopped survivor the only member of
    /// its cluster, keeping everything it holds; the others join it again.
    Recover(recover::RecoverArgs),
}

/// jemalloc for every allocation of the process, RocksDB's included (the crate exports the
/// unprefixed `malloc` family): glibc's per-thread arenas kept freed memory, so a node's RSS
/// after 1,000,000 operations sat tens of MiB above what it used (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("raft-sidecar: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFT_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raft-sidecar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = match cli.command {
        Command::Run(args) => runtime.block_on(run::run(*args)),
        Command::Dev(args) => runtime.block_on(dev::run(args)),
        Command::Ctl(args) => runtime.block_on(ctl::run(args)),
        Command::Restore(args) => runtime.block_on(restore::run(args)),
        Command::Recover(args) => runtime.block_on(recover::run(args)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(run::Failure::Config(msg)) => {
            eprintln!("raft-sidecar: {msg}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(run::Failure::Runtime(msg)) => {
            eprintln!("raft-sidecar: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
