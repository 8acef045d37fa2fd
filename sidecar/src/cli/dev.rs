//! `raft-sidecar dev`: a local N-node cluster on loopback (child processes of this binary),
//! bootstrapped through `--initial-members`, with mutual TLS between peers and on the admin API
//! from a throwaway CA kept in its directory; prints each node's addresses and the leader, and
//! stops every node cleanly on Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use raft_testkit::local_cluster::{LocalCluster, Ports};
use tokio::signal::unix::{SignalKind, signal};

use super::run::Failure;

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    /// Number of nodes (1-9); node i serves its API on 127.0.0.1:708i, admin on :709i, peers on :707i.
    #[arg(long, env = "RAFT_DEV_NODES", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub nodes: u8,
    /// Directory for the nodes' data, logs and token (kept between runs).
    #[arg(long, env = "RAFT_DEV_DIR", default_value = "raft-dev")]
    pub dir: PathBuf,
    /// How long to wait for a leader before giving up.
    #[arg(long, env = "RAFT_DEV_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: DevArgs) -> Result<(), Failure> {
    let bin = std::env::current_exe()
        .map_err(|e| Failure::Runtime(format!("cannot find this executable: {e}")))?;
    let mut cluster = LocalCluster::new(
        &bin,
        &args.dir,
        usize::from(args.nodes),
        Ports::Fixed,
        &["--snapshot-interval", "5000"],
    )
    .map_err(|e| Failure::Runtime(format!("cannot prepare {}: {e}", args.dir.display())))?;
    cluster
        .start_all()
        .map_err(|e| Failure::Runtime(format!("cannot start nodes: {e}")))?;
    let leader = match cluster.wait_for_leader(args.timeout).await {
        Ok(i) => i,
        Err(e) => {
            for i in 0..cluster.nodes.len() {
                eprintln!(
                    "--- {} ---\n{}",
                    cluster.nodes[i].name,
                    cluster.log_tail(i, 20)
                );
            }
            cluster.stop_all(Duration::from_secs(5)).await;
            return Err(Failure::Runtime(e));
        }
    };
    println!(
        "raft-sidecar dev: {} nodes in {}",
        cluster.nodes.len(),
        args.dir.display()
    );
    for (i, n) in cluster.nodes.iter().enumerate() {
        let mark = if i == leader { "  (leader)" } else { "" };
        println!(
            "  {:<7} api http://{}  admin https://{}  peer {}  log {}{mark}",
            n.name,
            n.api,
            n.admin,
            n.peer,
            n.log_path().display()
        );
    }
    println!("admin token: {}", cluster.token_file().display());
    println!(
        "throwaway CA: {} (admin client certificate in {})",
        cluster.pki.ca_file().display(),
        args.dir.join("tls/raft-admin").display()
    );
    println!("leader: {}", cluster.nodes[leader].name);
    println!(
        "try: raft-sidecar ctl submit --id task-1 --type demo --payload '{{\"n\":1}}'   (Ctrl-C stops the cluster)"
    );
    let mut term = signal(SignalKind::terminate()).map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::Runtime(e.to_string()))?;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = check.tick() => {
                for i in 0..cluster.nodes.len() {
                    if !cluster.is_running(i) {
                        eprintln!("{} exited; last log lines:\n{}", cluster.nodes[i].name, cluster.log_tail(i, 20));
                        cluster.stop_all(Duration::from_secs(10)).await;
                        return Err(Failure::Runtime(format!("{} exited unexpectedly", cluster.nodes[i].name)));
                    }
                }
            }
        }
    }
    println!("stopping...");
    cluster.stop_all(Duration::from_secs(15)).await;
    println!("stopped");
    Ok(())
}
