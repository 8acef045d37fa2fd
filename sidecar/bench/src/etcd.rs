//! The etcd side of the comparison: a cluster of real `etcd` processes (Debian's `etcd-server`
//! or any etcd v3 binary given by `--etcd-bin`) on loopback, with default durability (fsync of
//! the WAL on every write; `--unsafe-no-fsync` is never passed), driven through its HTTP/JSON
//! gateway: `POST /v3/kv/put` for writes, `POST /v3/maintenance/status` for the leader.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Where one member listens and keeps its data.
#[derive(Debug, Clone)]
pub struct EtcdNode {
    pub name: String,
    pub dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
}

impl EtcdNode {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }
}

/// What `/v3/maintenance/status` says about one member.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub member_id: u64,
    pub leader: u64,
    pub raft_index: u64,
    pub applied_index: u64,
}

pub struct EtcdCluster {
    bin: PathBuf,
    pub nodes: Vec<EtcdNode>,
    children: Vec<Option<Child>>,
    extra_args: Vec<String>,
    http: reqwest::Client,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// etcd's JSON gateway writes 64-bit integers as strings.
fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

impl EtcdCluster {
    /// Plan `n` members under `root` (created if missing); nothing is started yet.
    pub fn new(bin: &Path, root: &Path, n: usize, extra_args: &[String]) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(EtcdNode {
                name: format!("etcd-{i}"),
                dir: root.join(format!("etcd-{i}")),
                client_port: free_port()?,
                peer_port: free_port()?,
            });
        }
        Ok(Self {
            bin: bin.to_path_buf(),
            children: nodes.iter().map(|_| None).collect(),
            nodes,
            extra_args: extra_args.to_vec(),
            http: reqwest::Client::new(),
        })
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.name, n.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start member `i` (again); its output is appended to `<root>/etcd-<i>.log`.
    pub fn start(&mut self, i: usize) -> std::io::Result<()> {
        let spec = self.nodes[i].clone();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log_path())?;
        let state = if spec.dir.exists() { "existing" } else { "new" };
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("--name={}", spec.name))
            .arg(format!("--data-dir={}", spec.dir.display()))
            .arg(format!("--listen-client-urls={}", spec.client_url()))
            .arg(format!("--advertise-client-urls={}", spec.client_url()))
            .arg(format!("--listen-peer-urls={}", spec.peer_url()))
            .arg(format!("--initial-advertise-peer-urls={}", spec.peer_url()))
            .arg(format!("--initial-cluster={}", self.initial_cluster()))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=raft-bench")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .args(&self.extra_args)
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
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

    pub fn is_running(&mut self, i: usize) -> bool {
        match self.children[i].as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn signal(&self, i: usize, sig: Signal) -> std::io::Result<()> {
        let pid = self
            .pid(i)
            .ok_or_else(|| std::io::Error::other(format!("etcd member {i} is not running")))?;
        kill(Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)), sig)
            .map_err(std::io::Error::other)
    }

    /// kill -9 member `i` and reap it.
    pub async fn kill9(&mut self, i: usize) -> std::io::Result<()> {
        self.signal(i, Signal::SIGKILL)?;
        self.reap(i, Duration::from_secs(10)).await
    }

    /// SIGTERM member `i` and wait up to `grace` for it to exit.
    pub async fn terminate(&mut self, i: usize, grace: Duration) -> std::io::Result<()> {
        self.signal(i, Signal::SIGTERM)?;
        self.reap(i, grace).await
    }

    async fn reap(&mut self, i: usize, within: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let Some(child) = self.children[i].as_mut() else {
                return Ok(());
            };
            if child.try_wait()?.is_some() {
                self.children[i] = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("etcd member {i} did not exit within {within:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop every member: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop_all(&mut self, grace: Duration) {
        for i in 0..self.nodes.len() {
            if self.children[i].is_none() {
                continue;
            }
            let _ = self.signal(i, Signal::SIGTERM);
            if self.reap(i, grace).await.is_err() {
                let _ = self.kill9(i).await;
            }
        }
    }

    /// `/v3/maintenance/status` of member `i`.
    pub async fn status(&self, i: usize) -> Result<Status, String> {
        let url = format!("{}/v3/maintenance/status", self.nodes[i].client_url());
        let resp = self
            .http
            .post(&url)
            .body("{}")
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let v: Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
        let field = |names: &[&str]| names.iter().find_map(|n| v.get(*n).and_then(uint));
        Ok(Status {
            member_id: v
                .pointer("/header/member_id")
                .and_then(uint)
                .ok_or_else(|| format!("{url}: no member id in {v}"))?,
            leader: field(&["leader"]).unwrap_or(0),
            raft_index: field(&["raftIndex", "raft_index"]).unwrap_or(0),
            applied_index: field(&["raftAppliedIndex", "raft_applied_index"]).unwrap_or(0),
        })
    }

    /// Index of the member every running member names as leader, waiting up to `within`.
    pub async fn wait_for_leader(&mut self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no member answered");
        while Instant::now() < deadline {
            let mut seen = Vec::new();
            for i in 0..self.nodes.len() {
                if !self.is_running(i) {
                    continue;
                }
                match self.status(i).await {
                    Ok(s) => seen.push((i, s)),
                    Err(e) => last = e,
                }
            }
            if let Some((_, first)) = seen.first()
                && first.leader != 0
                && seen.iter().all(|(_, s)| s.leader == first.leader)
                && let Some((i, _)) = seen.iter().find(|(_, s)| s.member_id == first.leader)
            {
                return Ok(*i);
            }
            if !seen.is_empty() {
                last = format!(
                    "leaders seen: {:?}",
                    seen.iter().map(|(_, s)| s.leader).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("no agreed etcd leader within {within:?}: {last}"))
    }

    /// Poll until member `i` has applied at least what the leader had logged (read each poll).
    pub async fn wait_caught_up(&self, i: usize, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match self.status(i).await {
                Ok(s) if s.leader != 0 => {
                    let mut target = None;
                    for j in 0..self.nodes.len() {
                        if let Ok(o) = self.status(j).await
                            && o.member_id == s.leader
                        {
                            target = Some(o.raft_index);
                        }
                    }
                    match target {
                        Some(t) if s.applied_index >= t => return Ok(()),
                        Some(t) => last = format!("applied {} < leader's {t}", s.applied_index),
                        None => last = "leader did not answer".into(),
                    }
                }
                Ok(_) => last = "no leader known".into(),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "{} did not catch up within {within:?}: {last}",
            self.nodes[i].name
        ))
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(self.nodes[i].log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One client of one member: its own connection pool (keep-alive), `PUT key value`.
#[derive(Clone)]
pub struct EtcdWriter {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

/// What a successful put answered.
pub struct Put {
    pub revision: u64,
    pub term: u64,
}

impl EtcdWriter {
    pub fn new(node: &EtcdNode, timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: node.client_url(),
            timeout,
        }
    }

    /// `PUT key value`; an error is a short countable label.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<Put, String> {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64(key.as_bytes()),
            base64(value)
        );
        self.post("/v3/kv/put", body).await
    }

    /// One transaction putting every `(key, value)` (etcd's own batch: all or nothing, at most
    /// `--max-txn-ops` puts, 128 by default).
    pub async fn txn(&self, puts: &[(&str, &[u8])]) -> Result<Put, String> {
        let ops: Vec<String> = puts
            .iter()
            .map(|(k, v)| {
                format!(
                    r#"{{"requestPut":{{"key":"{}","value":"{}"}}}}"#,
                    base64(k.as_bytes()),
                    base64(v)
                )
            })
            .collect();
        self.post(
            "/v3/kv/txn",
            format!(r#"{{"success":[{}]}}"#, ops.join(",")),
        )
        .await
    }

    async fn post(&self, path: &str, body: String) -> Result<Put, String> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "CLIENT_TIMEOUT".to_string()
                } else if e.is_connect() {
                    "CONNECT".to_string()
                } else {
                    "HTTP".to_string()
                }
            })?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|_| format!("UNEXPECTED_{}", status.as_u16()))?;
        if !status.is_success() || v.get("error").is_some() {
            let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
            return Err(format!("ETCD_{}_GRPC_{code}", status.as_u16()));
        }
        Ok(Put {
            revision: v.pointer("/header/revision").and_then(uint).unwrap_or(0),
            term: v.pointer("/header/raft_term").and_then(uint).unwrap_or(0),
        })
    }
}

/// Standard base64 with padding (what the gateway expects for `bytes` fields).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                let idx = usize::try_from((n >> (18 - 6 * k)) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET[idx]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_the_standard_alphabet_with_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
