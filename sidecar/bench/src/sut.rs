//! The system under test: a cluster of child processes (raft-sidecar through raft-testkit's
//! [`LocalCluster`], or etcd) in a scratch directory, reached only through [`Sut`] (start,
//! leader, writers, pids, kill, restart, caught-up check, RSS and disk readings) and [`Writer`]
//! (one client's write path).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use raft_api::ErrorCode;
use raft_api::client::{ClientError, SidecarClient};
use raft_api::daemon::{BatchItem, Operation};
use raft_testkit::local_cluster::{LocalCluster, Ports};
use serde::Serialize;
use serde_json::Value;

use crate::Failure;
use crate::args::{ClusterOpts, System};
use crate::etcd::{EtcdCluster, EtcdWriter};

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
    Sidecar(Box<LocalCluster>),
    Etcd(EtcdCluster),
}

/// A running cluster of child processes: raft-sidecar or etcd.
pub(crate) struct Sut {
    nodes: Nodes,
    pub(crate) system: System,
    request_timeout: Duration,
    startup_timeout: Duration,
    _scratch: ScratchDir,
}

impl Sut {
    pub(crate) async fn start(opts: &ClusterOpts) -> Result<Self, Failure> {
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
        let prepare =
            |e: std::io::Error| Failure::runtime(format!("cannot prepare {}: {e}", root.display()));
        let nodes = match opts.system {
            System::Sidecar => {
                let bin = opts.sidecar_bin()?;
                let extra: Vec<&str> = opts.node_args.iter().map(String::as_str).collect();
                let mut cluster =
                    LocalCluster::new(&bin, &root, n, Ports::Free, &extra).map_err(prepare)?;
                if opts.plaintext {
                    cluster.use_plaintext();
                }
                Nodes::Sidecar(Box::new(cluster))
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
        started.map_err(|e| {
            Failure::runtime(format!("cannot start {} nodes: {e}", opts.system.label()))
        })?;
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

    pub(crate) fn len(&self) -> usize {
        match &self.nodes {
            Nodes::Sidecar(c) => c.nodes.len(),
            Nodes::Etcd(c) => c.nodes.len(),
        }
    }

    pub(crate) fn name(&self, i: usize) -> &str {
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
    pub(crate) async fn leader(&mut self) -> Result<usize, Failure> {
        let found = match &mut self.nodes {
            Nodes::Sidecar(c) => c.wait_for_leader(self.startup_timeout).await,
            Nodes::Etcd(c) => c.wait_for_leader(self.startup_timeout).await,
        };
        found.map_err(|e| Failure::runtime(format!("{e}\n{}", self.log_tails())))
    }

    pub(crate) fn log_tails(&self) -> String {
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
    pub(crate) fn writer(&self, i: usize) -> Writer {
        match &self.nodes {
            Nodes::Sidecar(c) => Writer::Sidecar(self.api_client(c, i)),
            Nodes::Etcd(c) => Writer::Etcd(EtcdWriter::new(&c.nodes[i], self.request_timeout)),
        }
    }

    pub(crate) fn rss(&self) -> Vec<NodeRss> {
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
    pub(crate) fn disk(&self) -> Vec<NodeDisk> {
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
    pub(crate) fn sigkill(&self, i: usize) -> Result<(), Failure> {
        let pid = self
            .pid(i)
            .ok_or_else(|| Failure::runtime(format!("{} is not running", self.name(i))))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
            Signal::SIGKILL,
        )
        .map_err(|e| Failure::runtime(format!("cannot kill {}: {e}", self.name(i))))
    }

    pub(crate) async fn reap_killed(&mut self, i: usize) -> Result<(), Failure> {
        let reaped = match &mut self.nodes {
            Nodes::Sidecar(c) => c.kill9(i).await,
            Nodes::Etcd(c) => c.kill9(i).await,
        };
        reaped.map_err(|e| Failure::runtime(format!("cannot reap node {i}: {e}")))
    }

    /// SIGTERM node `i` and wait up to `grace` for it to exit, as an orchestrator stops it.
    /// `Ok(false)`: still running after `grace` (the caller decides what then).
    pub(crate) async fn sigterm(&mut self, i: usize, grace: Duration) -> Result<bool, Failure> {
        let stopped = match &mut self.nodes {
            Nodes::Sidecar(c) => c.terminate(i, grace).await.map(|_| ()),
            Nodes::Etcd(c) => c.terminate(i, grace).await,
        };
        match stopped {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(Failure::runtime(format!("cannot stop node {i}: {e}"))),
        }
    }

    pub(crate) fn restart(&mut self, i: usize) -> Result<(), Failure> {
        let started = match &mut self.nodes {
            Nodes::Sidecar(c) => c.start(i),
            Nodes::Etcd(c) => c.start(i),
        };
        started.map_err(|e| Failure::runtime(format!("cannot restart node {i}: {e}")))
    }

    /// Poll until node `i` has applied at least what the leader had (read each poll).
    pub(crate) async fn wait_caught_up(&self, i: usize, within: Duration) -> Result<(), Failure> {
        let c = match &self.nodes {
            Nodes::Sidecar(c) => c,
            Nodes::Etcd(c) => return c.wait_caught_up(i, within).await.map_err(Failure::runtime),
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
        Err(Failure::runtime(format!(
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

    pub(crate) async fn stop(mut self) {
        match &mut self.nodes {
            Nodes::Sidecar(c) => c.stop_all(Duration::from_secs(10)).await,
            Nodes::Etcd(c) => c.stop_all(Duration::from_secs(10)).await,
        }
    }
}

/// What a successful write answered: its position and term.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub(crate) log_index: u64,
    pub(crate) term: u64,
}

/// How many `BUSY` answers a write waits out before it counts as failed.
const BUSY_RETRIES: u32 = 40;

/// One client's write path into the system under test.
#[derive(Clone)]
pub(crate) enum Writer {
    Sidecar(SidecarClient),
    Etcd(EtcdWriter),
}

impl Writer {
    /// Write `op`: a submit to the sidecar; a put of key `op.id`, value the payload, to etcd.
    /// A sidecar's `BUSY` is retried with the same id after its `retryAfterMs`, as a client
    /// should: overload slows the write down (its latency counts every wait), and only a
    /// write still refused after [`BUSY_RETRIES`] counts as failed.
    pub(crate) async fn write(&self, op: &Operation) -> Result<Written, String> {
        match self {
            Writer::Sidecar(c) => {
                let mut busy = 0;
                loop {
                    return match c.submit(op).await {
                        Ok(r) if r.committed => Ok(Written {
                            log_index: r.log_index,
                            term: r.term,
                        }),
                        Ok(r) => Err(format!("NOT_COMMITTED_{:?}", r.status).to_uppercase()),
                        Err(ClientError::Api {
                            code: ErrorCode::Busy,
                            body,
                            ..
                        }) if busy < BUSY_RETRIES => {
                            busy += 1;
                            let ms = body.error.retry_after_ms.unwrap_or(250);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            continue;
                        }
                        Err(e) => Err(error_label(&e)),
                    };
                }
            }
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

impl Writer {
    /// Write `ops` in one request: a batch submit to the sidecar (each operation answered on
    /// its own), one transaction of puts to etcd (all or nothing). The operations written, and
    /// a label per one that failed.
    pub(crate) async fn write_batch(&self, ops: &[Operation]) -> (u64, Vec<String>) {
        match self {
            Writer::Sidecar(c) => match c.submit_batch(ops).await {
                Ok(answer) => {
                    let mut failed = Vec::new();
                    for item in answer.results {
                        match item {
                            BatchItem::Committed(r) if r.committed => {}
                            BatchItem::Committed(r) => {
                                failed.push(format!("NOT_COMMITTED_{:?}", r.status).to_uppercase());
                            }
                            BatchItem::Failed(f) => failed.push(f.error.code.as_str().to_owned()),
                        }
                    }
                    (ops.len() as u64 - failed.len() as u64, failed)
                }
                Err(e) => (0, vec![error_label(&e); ops.len()]),
            },
            Writer::Etcd(w) => {
                let puts: Vec<(&str, &[u8])> = ops
                    .iter()
                    .map(|op| {
                        let value = op
                            .payload
                            .as_ref()
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        (op.id.as_str(), value.as_bytes())
                    })
                    .collect();
                match w.txn(&puts).await {
                    Ok(_) => (ops.len() as u64, Vec::new()),
                    Err(label) => (0, vec![label; ops.len()]),
                }
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
pub(crate) struct NodeDisk {
    pub(crate) node: String,
    pub(crate) bytes: u64,
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
        ClientError::Tls(_) => "TLS_CONFIG".into(),
        ClientError::TooLarge { .. } => "TOO_LARGE".into(),
        ClientError::Backup { .. } => "BACKUP".into(),
    }
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

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeRss {
    pub(crate) node: String,
    pub(crate) pid: Option<u32>,
    pub(crate) rss_kib: Option<u64>,
}
