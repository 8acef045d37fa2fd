//! Network-fault harness: a cluster of real `raft-sidecar` processes, each in its own network
//! namespace (veth to a bridge, one IP per node), with real faults between them:
//! links cut in one or both directions and random packet loss (`nft` drop rules inside the
//! sending node's namespace), slow links (`tc tbf`), kill -9, SIGSTOP/SIGCONT, restart and a
//! wiped data dir.
//!
//! Addressing: cluster `name` on subnet `s` uses bridge `rf-<name>-br` at `10.213.s.1` (the test
//! process talks to the nodes from the root namespace through it) and node `i` at
//! `10.213.s.(11+i)`, listening on fixed ports inside its own namespace: peer 7070, daemon API
//! 7080 (bound to the node IP with `--api-allow-remote`, so the test can reach it; followers
//! still forward writes to the leader over the peer transport), admin 7090. Fault rules match
//! only the other nodes' IPs, so test-client traffic from the bridge address is never cut.
//!
//! Needs root (CI runs as root) and `ip`, `nft`, `tc` (Debian: iproute2, nftables); without them
//! `start` fails saying so. Every namespace, link and process is removed on drop, and leftovers
//! of a crashed earlier run with the same name are removed before starting.
#![allow(dead_code, reason = "each test binary uses a subset of the harness")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use raft_api::client::{ClientError, SidecarClient, TlsHttp};
use raft_api::daemon::{ConsensusState, JournalEntry};
use raft_testkit::pki::LocalPki;
use raft_testkit::volatile_fs::VolatileFs;
use tempfile::TempDir;

/// Cluster tests of one binary run one at a time: several processes each on a 2-core machine.
static GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const PEER_PORT: u16 = 7070;
pub const API_PORT: u16 = 7080;
pub const ADMIN_PORT: u16 = 7090;

#[derive(Debug, Clone)]
pub struct NetNode {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl NetNode {
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::from((self.ip, PEER_PORT))
    }
    pub fn api(&self) -> SocketAddr {
        SocketAddr::from((self.ip, API_PORT))
    }
    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from((self.ip, ADMIN_PORT))
    }
}

/// The network faults in force; `apply` turns them into rules.
#[derive(Debug, Default, Clone)]
struct Faults {
    /// Packets from `.0` to `.1` are dropped.
    cut: BTreeSet<(usize, usize)>,
    /// Percentage of packets from `.0` to `.1` dropped at random.
    loss: BTreeMap<(usize, usize), u8>,
    /// Nodes whose outgoing traffic is throttled by `tbf`.
    slow: BTreeSet<usize>,
}

pub struct NetCluster {
    pub name: String,
    subnet: u8,
    bin: PathBuf,
    pub token: String,
    token_file: PathBuf,
    /// The cluster's throwaway CA (peers and admin clients use mutual TLS).
    pub pki: LocalPki,
    admin_tls: TlsHttp,
    pub cluster_id: String,
    pub nodes: Vec<NetNode>,
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
    /// Seconds added to each node's monotonic and boot-time clocks from its next start on
    /// (a time namespace: the node's clocks jump by the change across that restart).
    clock_offsets: Vec<i64>,
    faults: Faults,
    extra_args: Vec<String>,
    /// Each node's data directory as a volatile filesystem (empty unless asked for); unmounted
    /// after `Drop` stopped the nodes.
    volatile: Vec<VolatileFs>,
    _dir: TempDir,
    _gate: tokio::sync::MutexGuard<'static, ()>,
}

fn run_cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(program: &str, args: &[&str]) {
    if let Err(e) = run_cmd(program, args) {
        panic!("{e}");
    }
}

/// Fail (never skip) when the harness cannot work here, saying why.
pub fn require_root_and_tools() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid_zero = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    assert!(
        euid_zero,
        "the network-fault tests need root (network namespaces, nft, tc); run them as root, as CI does"
    );
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("tc", "iproute2"),
        ("unshare", "util-linux"),
    ] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "the network-fault tests need `{tool}` (Debian package {pkg})"
        );
    }
}

/// Remove namespaces, links and processes left by an earlier run of cluster `name`.
fn clean_leftovers(name: &str) {
    let prefix = format!("rf-{name}-");
    let netns = run_cmd("ip", &["netns", "list"]).unwrap_or_default();
    for ns in netns
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&prefix))
    {
        kill_pids_in(ns);
        let _ = run_cmd("ip", &["netns", "delete", ns]);
    }
    let links = run_cmd("ip", &["-o", "link", "show"]).unwrap_or_default();
    for link in links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|l| l.split('@').next().unwrap_or(l))
        .filter(|l| l.starts_with(&prefix))
    {
        let _ = run_cmd("ip", &["link", "delete", link]);
    }
}

fn kill_pids_in(ns: &str) {
    let pids = run_cmd("ip", &["netns", "pids", ns]).unwrap_or_default();
    for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

impl NetCluster {
    /// Build namespaces for `n` nodes of cluster `name` (at most 8 characters, unique among the
    /// tests) on subnet `10.213.<subnet>.0/24`, start them bootstrapped with
    /// `--initial-members`, and wait for an agreed leader.
    pub async fn start(name: &str, subnet: u8, n: usize, extra_args: &[&str]) -> NetCluster {
        Self::start_with(name, subnet, n, extra_args, false).await
    }

    /// [`NetCluster::start`], with every node's data directory on a volatile filesystem when
    /// `volatile` (see [`NetCluster::power_cut`]).
    pub async fn start_with(
        name: &str,
        subnet: u8,
        n: usize,
        extra_args: &[&str],
        volatile: bool,
    ) -> NetCluster {
        require_root_and_tools();
        assert!(
            name.len() <= 8,
            "cluster name {name:?} is too long for link names"
        );
        let gate = GATE.lock().await;
        clean_leftovers(name);
        // `RAFT_TEST_KEEP=1` keeps every node's data directory and log after the test, to
        // inspect a failure (the path is printed).
        let keep = std::env::var_os("RAFT_TEST_KEEP").is_some_and(|v| v == "1");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .disable_cleanup(keep)
            .tempdir()
            .unwrap();
        if keep {
            eprintln!("{name}: keeping {}", dir.path().display());
        }
        let token = format!("{:032x}", rand::random::<u128>());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).unwrap();
        let pki = LocalPki::open(&dir.path().join("tls")).unwrap();
        let admin_tls = pki.admin_client().unwrap();
        let nodes = (0..n)
            .map(|i| NetNode {
                name: format!("node-{i}"),
                ns: format!("rf-{name}-{i}"),
                ip: Ipv4Addr::new(10, 213, subnet, 11 + u8::try_from(i).unwrap()),
                dir: dir.path().join(format!("node-{i}")),
                log: dir.path().join(format!("node-{i}.log")),
            })
            .collect();
        let mut c = NetCluster {
            name: name.to_string(),
            subnet,
            // `RAFT_SIDECAR_BIN` runs another build (a copy kept apart from rebuilds).
            bin: std::env::var_os("RAFT_SIDECAR_BIN").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_raft-sidecar")),
                PathBuf::from,
            ),
            token,
            token_file,
            pki,
            admin_tls,
            cluster_id: format!("net-{name}"),
            nodes,
            children: (0..n).map(|_| None).collect(),
            paused: vec![false; n],
            clock_offsets: vec![0; n],
            faults: Faults::default(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            volatile: Vec::new(),
            _dir: dir,
            _gate: gate,
        };
        if volatile {
            let root = c._dir.path().to_path_buf();
            c.volatile = (0..n)
                .map(|i| {
                    VolatileFs::mount(&root.join(format!("backing-{i}")), &c.nodes[i].dir)
                        .unwrap_or_else(|e| panic!("mount a volatile filesystem for node {i}: {e}"))
                })
                .collect();
        }
        c.build_network();
        for i in 0..n {
            c.start_node(i);
        }
        c.leader(Duration::from_secs(30)).await;
        c
    }

    fn bridge(&self) -> String {
        format!("rf-{}-br", self.name)
    }

    fn host_link(&self, i: usize) -> String {
        format!("rf-{}-{i}", self.name)
    }

    fn build_network(&self) {
        let br = self.bridge();
        let gw = format!("10.213.{}.1/24", self.subnet);
        must("ip", &["link", "add", &br, "type", "bridge"]);
        must("ip", &["addr", "add", &gw, "dev", &br]);
        must("ip", &["link", "set", &br, "up"]);
        for (i, node) in self.nodes.iter().enumerate() {
            let host = self.host_link(i);
            let inner = format!("rf-{}-{i}p", self.name);
            let ns = node.ns.as_str();
            must("ip", &["netns", "add", ns]);
            must(
                "ip",
                &["link", "add", &host, "type", "veth", "peer", "name", &inner],
            );
            must("ip", &["link", "set", &inner, "netns", ns]);
            must("ip", &["link", "set", &host, "master", &br, "up"]);
            must("ip", &["-n", ns, "link", "set", &inner, "name", "eth0"]);
            let addr = format!("{}/24", node.ip);
            must("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            must("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            must("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
    }

    fn initial_members(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start node `i` (again), appending its output to its log.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {i} is already running");
        let node = self.nodes[i].clone();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns]);
        let offset = self.clock_offsets[i];
        if offset != 0 {
            // unshare execs the sidecar inside the new time namespace: the pid stays its own.
            let offset = offset.to_string();
            cmd.args([
                "unshare",
                "--time",
                "--monotonic",
                &offset,
                "--boottime",
                &offset,
            ]);
        }
        cmd.arg(&self.bin)
            .arg("run")
            .args(["--data-dir", &node.dir.to_string_lossy()])
            .args(["--node-name", &node.name])
            .args(["--cluster-id", &self.cluster_id])
            .args(["--api-addr", &node.api().to_string(), "--api-allow-remote"])
            .args(["--admin-addr", &node.admin().to_string()])
            .args(["--peer-addr", &node.peer().to_string()])
            .args(["--advertise-peer", &node.peer().to_string()])
            .args(["--advertise-admin", &node.admin().to_string()])
            .args(["--auth-token-file", &self.token_file.to_string_lossy()])
            .args(LocalPki::flags(&self.tls_dir(i)))
            .args(["--initial-members", &self.initial_members()])
            .args(&self.extra_args)
            .env_remove("HOSTNAME")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        // `ip netns exec` execs the sidecar: the child's pid is the sidecar's.
        self.children[i] = Some(cmd.spawn().unwrap());
        self.paused[i] = false;
    }

    /// Run node `i`, from its next start on, with its monotonic and boot-time clocks shifted
    /// by `secs` (negative: behind), clamped so they stay positive. Returns the offset used.
    pub fn set_clock_offset(&mut self, i: usize, secs: i64) -> i64 {
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|u| u.split('.').next()?.parse::<i64>().ok())
            .unwrap_or(0);
        let used = secs.max(60 - uptime);
        self.clock_offsets[i] = used;
        used
    }

    pub fn pid(&self, i: usize) -> Option<Pid> {
        self.children[i]
            .as_ref()
            .map(|c| Pid::from_raw(i32::try_from(c.id()).unwrap()))
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn is_paused(&self, i: usize) -> bool {
        self.paused[i]
    }

    /// Running and not paused: it can answer.
    pub fn is_live(&mut self, i: usize) -> bool {
        !self.paused[i] && self.is_running(i)
    }

    /// kill -9 node `i` and reap it (also works on a paused process).
    pub async fn kill9(&mut self, i: usize) {
        let Some(pid) = self.pid(i) else { return };
        let _ = kill(pid, Signal::SIGKILL);
        self.reap(i, Duration::from_secs(10)).await;
    }

    /// SIGTERM node `i`, waiting up to `grace` for its exit code.
    pub async fn terminate(&mut self, i: usize, grace: Duration) -> Option<i32> {
        let pid = self.pid(i).expect("node is running");
        if self.paused[i] {
            self.resume(i);
        }
        kill(pid, Signal::SIGTERM).unwrap();
        self.reap(i, grace).await
    }

    async fn reap(&mut self, i: usize, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.children[i].as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                self.children[i] = None;
                self.paused[i] = false;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Restart every node whose process exited without being stopped by the test, as the
    /// kubelet restarts a container. For each: its name, exit status and the last error its
    /// log names.
    pub fn restart_exited(&mut self) -> Vec<String> {
        let mut restarted = Vec::new();
        for i in 0..self.nodes.len() {
            let Some(child) = self.children[i].as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            self.children[i] = None;
            restarted.push(format!(
                "{} exited on its own ({status}); last error: {}",
                self.nodes[i].name,
                self.errors(i, 1).pop().unwrap_or_default()
            ));
            self.start_node(i);
        }
        restarted
    }

    /// The last `n` ERROR lines of node `i`'s log that are not about a peer that does not
    /// answer (those are the faults the tests inject).
    pub fn errors(&self, i: usize, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let errors: Vec<String> = text
            .lines()
            .filter(|l| l.contains(" ERROR ") && !l.contains("CallError"))
            .map(str::to_owned)
            .collect();
        errors[errors.len().saturating_sub(n)..].to_vec()
    }

    /// SIGSTOP: the process stays alive to TCP but says nothing.
    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.pid(i) {
            kill(pid, Signal::SIGSTOP).unwrap();
            self.paused[i] = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.pid(i) {
            kill(pid, Signal::SIGCONT).unwrap();
        }
        self.paused[i] = false;
    }

    /// Delete node `i`'s data dir (it must be stopped).
    pub fn wipe(&self, i: usize) {
        assert!(
            self.children[i].is_none(),
            "wipe node {i} after stopping it"
        );
        // Everything inside, not the directory itself: it may be a mount point.
        let Ok(entries) = std::fs::read_dir(&self.nodes[i].dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|e| panic!("wipe node {i}: {}: {e}", path.display()));
        }
    }

    /// Cut node `i`'s power: kill -9, then drop every write it had not synced (the cluster
    /// must have been started on volatile filesystems). The bytes lost.
    pub async fn power_cut(&mut self, i: usize) -> u64 {
        self.kill9(i).await;
        let fs = self
            .volatile
            .get(i)
            .unwrap_or_else(|| panic!("node {i} is not on a volatile filesystem"));
        fs.cut_power().iter().map(|(_, bytes)| bytes).sum()
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }

    /// Drop every packet from `from` to `to` (one direction).
    pub fn cut(&mut self, from: usize, to: usize) {
        self.faults.cut.insert((from, to));
        self.apply(from);
    }

    /// Cut the link between `a` and `b` both ways.
    pub fn cut_both(&mut self, a: usize, b: usize) {
        self.cut(a, b);
        self.cut(b, a);
    }

    /// Split the cluster: no packet crosses between `side_a` and `side_b`, either way.
    pub fn partition(&mut self, side_a: &[usize], side_b: &[usize]) {
        for a in side_a {
            for b in side_b {
                self.faults.cut.insert((*a, *b));
                self.faults.cut.insert((*b, *a));
            }
        }
        self.apply_all();
    }

    /// Cut node `i` off from every other node, both ways.
    pub fn isolate(&mut self, i: usize) {
        let rest: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != i).collect();
        self.partition(&[i], &rest);
    }

    /// Drop `percent` % of the packets from `from` to `to`, at random.
    pub fn lose(&mut self, from: usize, to: usize, percent: u8) {
        self.faults.loss.insert((from, to), percent);
        self.apply(from);
    }

    /// Throttle everything node `i` sends to a trickle (`tbf`: 512 kbit/s, queueing delay).
    pub fn slow(&mut self, i: usize) {
        self.faults.slow.insert(i);
        must(
            "ip",
            &[
                "netns",
                "exec",
                &self.nodes[i].ns,
                "tc",
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                "512kbit",
                "burst",
                "16kb",
                "latency",
                "300ms",
            ],
        );
    }

    /// Remove every network fault.
    pub fn heal(&mut self) {
        let slow = std::mem::take(&mut self.faults.slow);
        for i in slow {
            let _ = run_cmd(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.nodes[i].ns,
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    "eth0",
                    "root",
                ],
            );
        }
        self.faults.cut.clear();
        self.faults.loss.clear();
        self.apply_all();
    }

    fn apply_all(&self) {
        for i in 0..self.nodes.len() {
            self.apply(i);
        }
    }

    /// Replace node `from`'s `fault` table with the rules for its outgoing links.
    fn apply(&self, from: usize) {
        let mut rules = String::new();
        for (a, b) in &self.faults.cut {
            if *a == from {
                rules.push_str(&format!("    ip daddr {} drop\n", self.nodes[*b].ip));
            }
        }
        for ((a, b), pct) in &self.faults.loss {
            if *a == from && !self.faults.cut.contains(&(*a, *b)) {
                rules.push_str(&format!(
                    "    ip daddr {} numgen random mod 100 < {pct} drop\n",
                    self.nodes[*b].ip
                ));
            }
        }
        let script = format!(
            "table inet fault\ndelete table inet fault\ntable inet fault {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[from].ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft in {}: {}\n{script}",
            self.nodes[from].ns,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Faults currently in force, for messages.
    pub fn describe_faults(&self) -> String {
        format!(
            "cut={:?} loss={:?} slow={:?} paused={:?}",
            self.faults.cut, self.faults.loss, self.faults.slow, self.paused
        )
    }

    /// Daemon + admin client of node `i` with a per-request `timeout`.
    pub fn client_with_timeout(&self, i: usize, timeout: Duration) -> SidecarClient {
        let n = &self.nodes[i];
        SidecarClient::new(
            Some(&n.api().to_string()),
            Some(&n.admin().to_string()),
            Some(self.token.clone()),
            timeout,
        )
        .with_tls(&self.admin_tls)
    }

    /// Node `i`'s certificate directory (issued on first use, valid for its name and IP).
    pub fn tls_dir(&self, i: usize) -> PathBuf {
        let node = &self.nodes[i];
        self.pki
            .member(&node.name, &[&node.ip.to_string()])
            .unwrap_or_else(|e| panic!("issue a certificate for {}: {e}", node.name))
    }

    pub fn client(&self, i: usize) -> SidecarClient {
        self.client_with_timeout(i, Duration::from_secs(10))
    }

    pub async fn state(&self, i: usize) -> Result<ConsensusState, ClientError> {
        self.client_with_timeout(i, Duration::from_secs(2))
            .state()
            .await
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The leader every node in `among` agrees on, waiting up to `within`.
    pub async fn leader_among(&self, among: &[usize], within: Duration) -> usize {
        let what = format!("nodes {among:?} to agree on a leader");
        wait_for(&what, within, || async {
            let mut seen = Vec::new();
            for i in among {
                seen.push(self.state(*i).await.ok()?.leader_id);
            }
            let first = seen.first()?.clone()?;
            seen.iter()
                .all(|l| l.as_deref() == Some(first.as_str()))
                .then(|| self.index_of(&first))
                .flatten()
        })
        .await
    }

    /// A leader other than `not` that every node in `among` agrees on (after a failover).
    pub async fn new_leader_among(&self, among: &[usize], not: usize, within: Duration) -> usize {
        let what = format!("nodes {among:?} to agree on a leader other than node {not}");
        wait_for(&what, within, || async {
            let l = self.leader_among(among, Duration::from_secs(2)).await;
            (l != not).then_some(l)
        })
        .await
    }

    /// The leader every live node agrees on.
    pub async fn leader(&mut self, within: Duration) -> usize {
        let live: Vec<usize> = (0..self.nodes.len()).filter(|i| self.is_live(*i)).collect();
        self.leader_among(&live, within).await
    }

    /// Every journal entry of node `i`, reading all pages.
    pub async fn journal(&self, i: usize) -> Result<Vec<JournalEntry>, ClientError> {
        let client = self.client_with_timeout(i, Duration::from_secs(10));
        let mut out = Vec::new();
        let mut from = None;
        loop {
            let page = client.journal(from, Some(1000)).await?;
            if page.entries.is_empty() {
                return Ok(out);
            }
            out.extend(page.entries);
            from = Some(page.next_index);
        }
    }

    /// (logIndex, id) of node `i`'s journal.
    pub async fn journal_ids(&self, i: usize) -> Result<Vec<(u64, String)>, ClientError> {
        Ok(self
            .journal(i)
            .await?
            .into_iter()
            .map(|e| (e.log_index, e.operation.id))
            .collect())
    }

    /// Wait until the journals of `nodes` are identical with at least `min_len` entries.
    pub async fn journals_agree(
        &self,
        nodes: &[usize],
        min_len: usize,
        within: Duration,
    ) -> Vec<(u64, String)> {
        let what = format!("journals of {nodes:?} to agree on at least {min_len} entries");
        wait_for(&what, within, || async {
            let first = self.journal_ids(nodes[0]).await.ok()?;
            for i in &nodes[1..] {
                if self.journal_ids(*i).await.ok()? != first {
                    return None;
                }
            }
            (first.len() >= min_len).then_some(first)
        })
        .await
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every panic in node `i`'s log (restarts included), each with the lines that follow it
    /// (the message and the start of the backtrace).
    pub fn panics(&self, i: usize) -> Vec<String> {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("panicked at"))
            .map(|(at, _)| lines[at..(at + 6).min(lines.len())].join("\n"))
            .collect()
    }

    fn teardown(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 0..self.nodes.len() {
            kill_pids_in(&self.nodes[i].ns);
            let _ = run_cmd("ip", &["link", "delete", &self.host_link(i)]);
            let _ = run_cmd("ip", &["netns", "delete", &self.nodes[i].ns]);
        }
        let _ = run_cmd("ip", &["link", "delete", &self.bridge()]);
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("faults in force: {}", self.describe_faults());
            for i in 0..self.nodes.len() {
                eprintln!(
                    "----- {} (last 30 log lines) -----\n{}",
                    self.nodes[i].name,
                    self.log_tail(i, 30)
                );
            }
        }
        self.teardown();
    }
}

/// Poll `probe` until it yields a value, failing the test after `within` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
