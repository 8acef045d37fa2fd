//! `kubectl raft`: parse the command line, run it, map failures to exit code 1.

use clap::Parser;
use kubectl_raft::cli::{Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    match run(cli, &mut out).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubectl-raft: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
