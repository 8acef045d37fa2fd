//! `raft-bench`: parse the command line, set up tracing, run the benchmark, map errors to exit
//! codes (64 for bad arguments, 1 for runtime failures).

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use raft_bench::Failure;
use raft_bench::args::BenchCommand;

/// Load generator of raft-sidecar's benchmark tier: throughput, failover time and memory of a
/// local cluster of `raft-sidecar run` processes (or of etcd), through their public APIs.
#[derive(Debug, Parser)]
#[command(name = "raft-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// The load generator kept the allocator it had inside `raft-sidecar` (jemalloc), so that its
/// own cost per request stays what earlier figures in docs/benchmarks.md were taken with.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for bad arguments (EX_USAGE).
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
            eprintln!("raft-bench: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAFT_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
            eprintln!("raft-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(raft_bench::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(msg)) => {
            eprintln!("raft-bench: {msg}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("raft-bench: {msg}");
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
