//! `raft-operator`: thin entry point. Parses the command line, sets up tracing, and runs the
//! controller until SIGTERM/SIGINT, or prints the CRD.

use std::process::ExitCode;

use clap::Parser;
use raft_operator::config::{Cli, Command};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Exit status for bad configuration (sysexits EX_USAGE), as the sidecar uses.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match raft_crds::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("raft-operator: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(config) => {
            if let Err(e) = config.validate() {
                eprintln!("raft-operator: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .init();
            match run(*config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("raft-operator: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(config: raft_operator::config::RunConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let grace = config.shutdown_grace;
    let result = runtime.block_on(async {
        let client = raft_operator::api_client::connect(config.api_timeout).await?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!(
                ?grace,
                "shutdown signal received; finishing in-flight reconciles"
            );
        };
        // A lost Lease is an error: exiting non-zero gets the process restarted as a standby.
        raft_operator::controller::run(client, config, shutdown).await?;
        Ok(())
    });
    // `run` bounded its own drain; nothing left on the runtime is waited for.
    runtime.shutdown_background();
    result
}
