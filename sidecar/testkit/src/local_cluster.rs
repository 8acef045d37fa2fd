//! A cluster of real `raft-sidecar run` processes on loopback: what `raft-sidecar dev` starts,
//! and what the cluster tests and benchmarks drive (kill -9, SIGTERM, SIGSTOP, restart, wipe).
//! Peers and the admin API use mutual TLS, with a throwaway CA kept under the cluster's
//! directory (see [`crate::pki::LocalPki`]).

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use raft_api::client::{SidecarClient, TlsHttp};

use crate::pki::LocalPki;

/// Where one node listens and keeps its data.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub dir: PathBuf,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub peer: SocketAddr,
    /// Part of the static `--initial-members` set (false for nodes added later).
    pub initial: bool,
    /// Flags for this node only, after the cluster's (takes effect at its next start).
    pub args: Vec<String>,
    /// Its certificate, key and the CA bundle (`tls.crt`, `tls.key`, `ca.crt`).
    pub tls_dir: PathBuf,
}

impl NodeSpec {
    pub fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }
}

/// How ports are chosen.
#[derive(Debug, Clone, Copy)]
pub enum Ports {
    /// api = 7080+i, admin = 7090+i, peer = 7070+i (for `dev`: predictable, up to 9 nodes).
    Fixed,
    /// Ports picked free by the OS (tests).
    Free,
}

pub struct LocalCluster {
    bin: PathBuf,
    root: PathBuf,
    pub cluster_id: String,
    pub token: String,
    token_file: PathBuf,
    pub pki: LocalPki,
    admin_tls: TlsHttp,
    /// Nodes run with `--insecure-plaintext` (see [`LocalCluster::use_plaintext`]).
    plaintext: bool,
    ports: Ports,
    pub nodes: Vec<NodeSpec>,
    children: Vec<Option<Child>>,
    extra_args: Vec<String>,
}

/// A loopback port nobody listens on, below the kernel's ephemeral range: a port the OS hands
/// out for binding port 0 is in that range, and an outgoing connection can take it between
/// the check and the node's own bind ("Address already in use"). Ports handed out by this
/// process are not handed out again.
fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|lo| *lo > 12_000)
        .unwrap_or(32_768);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..200 {
        let port = rand::random_range(10_000..ephemeral_low);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    // Crowded below the ephemeral range: fall back to a port the OS picks.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalCluster {
    /// Plan `n` nodes under `root` (created if missing); nothing is started yet.
    pub fn new(
        bin: &Path,
        root: &Path,
        n: usize,
        ports: Ports,
        extra_args: &[&str],
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let token_file = root.join("token");
        let token = match std::fs::read_to_string(&token_file) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = format!("{:032x}", rand::random::<u128>());
                std::fs::write(&token_file, &t)?;
                t
            }
        };
        let pki = LocalPki::open(&root.join("tls"))?;
        let admin_tls = pki.admin_client()?;
        let mut cluster = Self {
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            cluster_id: "dev".into(),
            token,
            token_file,
            pki,
            admin_tls,
            plaintext: false,
            ports,
            nodes: Vec::new(),
            children: Vec::new(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..n {
            cluster.plan_node(true)?;
        }
        Ok(cluster)
    }

    /// Plan one more node (not started); returns its index.
    pub fn plan_node(&mut self, initial: bool) -> std::io::Result<usize> {
        let i = self.nodes.len();
        let port = |base: u16| -> std::io::Result<u16> {
            match self.ports {
                Ports::Fixed => Ok(base + u16::try_from(i).unwrap_or(0)),
                Ports::Free => free_port(),
            }
        };
        let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let name = format!("node-{i}");
        let tls_dir = self.pki.member(&name, &["127.0.0.1"])?;
        let spec = NodeSpec {
            tls_dir,
            name,
            dir: self.root.join(format!("node-{i}")),
            api: local(port(7080)?),
            admin: local(port(7090)?),
            peer: local(port(7070)?),
            initial,
            args: Vec::new(),
        };
        self.nodes.push(spec);
        self.children.push(None);
        Ok(i)
    }

    fn initial_members(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.initial)
            .map(|n| format!("{}={}", n.name, n.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start node `i` (again); its output is appended to `<root>/node-<i>.log`.
    pub fn start(&mut self, i: usize) -> std::io::Result<()> {
        let spec = self.nodes[i].clone();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log_path())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .args(["--data-dir", &spec.dir.to_string_lossy()])
            .args(["--node-name", &spec.name])
            .args(["--cluster-id", &self.cluster_id])
            .args(["--api-addr", &spec.api.to_string()])
            .args(["--admin-addr", &spec.admin.to_string()])
            .args(["--peer-addr", &spec.peer.to_string()])
            .args(["--advertise-peer", &spec.peer.to_string()])
            .args(["--advertise-admin", &spec.admin.to_string()])
            .args(["--auth-token-file", &self.token_file.to_string_lossy()])
            .args(if self.plaintext {
                vec!["--insecure-plaintext".to_owned()]
            } else {
                LocalPki::flags(&spec.tls_dir)
            })
            .args(&self.extra_args)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if spec.initial {
            cmd.args(["--initial-members", &self.initial_members()]);
        }
        cmd.env_remove("HOSTNAME");
        self.children[i] = Some(cmd.spawn()?);
        Ok(())
    }

    pub fn start_all(&mut self) -> std::io::Result<()> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// Send a signal to node `i` (SIGSTOP/SIGCONT to pause a process that stays "alive" to TCP).
    pub fn signal(&self, i: usize, sig: Signal) -> std::io::Result<()> {
        let pid = self
            .pid(i)
            .ok_or_else(|| std::io::Error::other(format!("node {i} is not running")))?;
        kill(Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)), sig)
            .map_err(std::io::Error::other)
    }

    /// kill -9 node `i` and reap it.
    pub async fn kill9(&mut self, i: usize) -> std::io::Result<()> {
        self.signal(i, Signal::SIGKILL)?;
        self.reap(i, Duration::from_secs(10)).await.map(|_| ())
    }

    /// SIGTERM node `i` and wait up to `grace` for it to exit; returns its exit code.
    pub async fn terminate(&mut self, i: usize, grace: Duration) -> std::io::Result<Option<i32>> {
        self.signal(i, Signal::SIGTERM)?;
        self.reap(i, grace).await
    }

    /// Wait up to `within` for node `i` to exit on its own; returns its exit code.
    pub async fn wait_exit(&mut self, i: usize, within: Duration) -> std::io::Result<Option<i32>> {
        self.reap(i, within).await
    }

    async fn reap(&mut self, i: usize, within: Duration) -> std::io::Result<Option<i32>> {
        let deadline = Instant::now() + within;
        loop {
            let Some(child) = self.children[i].as_mut() else {
                return Ok(None);
            };
            if let Some(status) = child.try_wait()? {
                self.children[i] = None;
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("node {i} did not exit within {within:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether node `i`'s process is still running (it may have exited on its own).
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Delete node `i`'s data dir (it must be stopped): it comes back as a new node id.
    pub fn wipe(&self, i: usize) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.nodes[i].dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Daemon + admin client of node `i`.
    pub fn client(&self, i: usize) -> SidecarClient {
        let spec = &self.nodes[i];
        let api = spec.api.to_string();
        let admin = spec.admin.to_string();
        let client = SidecarClient::new(
            Some(&api),
            Some(&admin),
            Some(self.token.clone()),
            Duration::from_secs(30),
        );
        if self.plaintext {
            client
        } else {
            client.with_tls(&self.admin_tls)
        }
    }

    /// Start nodes without mutual TLS from now on (benchmarks measuring what TLS costs).
    pub fn use_plaintext(&mut self) {
        self.plaintext = true;
    }

    /// An HTTP client presenting the admin client certificate (for raw admin requests).
    pub fn admin_http(&self) -> &TlsHttp {
        &self.admin_tls
    }

    /// Index of the node every running member agrees leads, waiting up to `within`.
    pub async fn wait_for_leader(&mut self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no node answered");
        while Instant::now() < deadline {
            let mut names = Vec::new();
            for i in 0..self.nodes.len() {
                if !self.is_running(i) {
                    continue;
                }
                match self.client(i).state().await {
                    Ok(s) => names.push(s.leader_id),
                    Err(e) => last = e.to_string(),
                }
            }
            if let Some(Some(leader)) = names.first()
                && names.iter().all(|n| n.as_deref() == Some(leader.as_str()))
                && let Some(i) = self.nodes.iter().position(|n| &n.name == leader)
            {
                return Ok(i);
            }
            if !names.is_empty() {
                last = format!("leaders seen: {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("no agreed leader within {within:?}: {last}"))
    }

    /// The last `lines` lines of node `i`'s log (for failure reports).
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// Stop every node: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop_all(&mut self, grace: Duration) {
        for i in 0..self.nodes.len() {
            if self.children[i].is_some() && self.terminate(i, grace).await.is_err() {
                let _ = self.kill9(i).await;
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
