//! Entry point: parses the command line; `run` starts the agent on a Tokio runtime,
//! `exec-container` (internal, single-threaded) becomes a container's process.

use std::process::ExitCode;

use clap::Parser;
use raft_test_agent::config::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ExecContainer(cfg) => match raft_test_agent::process::exec_container(&cfg) {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("raft-test-agent exec-container: {e}");
                ExitCode::from(127)
            }
        },
        Command::Run(cfg) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .init();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("raft-test-agent: failed to start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(raft_test_agent::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %anyhow::Error::from(e), "agent failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
