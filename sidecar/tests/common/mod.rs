//! Shared fixtures of the cluster tests: a cluster of real `raft-sidecar` processes in a temp
//! dir, operation builders, and (from raft-testkit) waits that name their condition and have a
//! deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use raft_api::client::{ClientError, SidecarClient};
use raft_api::daemon::{Operation, SubmitResult};
use raft_testkit::local_cluster::{LocalCluster, Ports};
pub use raft_testkit::wait::{retryable, wait_for};
use tempfile::TempDir;

/// Cluster tests start several processes each; on a 2-core machine they run one at a time.
static GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct TestCluster {
    pub c: LocalCluster,
    _gate: tokio::sync::MutexGuard<'static, ()>,
    _dir: TempDir,
}

impl TestCluster {
    /// Start `n` nodes bootstrapped with `--initial-members` and wait for a leader.
    pub async fn start(n: usize, extra_args: &[&str]) -> TestCluster {
        let gate = GATE.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_raft-sidecar"));
        let mut c = LocalCluster::new(bin, dir.path(), n, Ports::Free, extra_args).unwrap();
        c.start_all().unwrap();
        let mut cluster = TestCluster {
            c,
            _gate: gate,
            _dir: dir,
        };
        cluster.leader(Duration::from_secs(20)).await;
        cluster
    }

    pub fn client(&self, i: usize) -> SidecarClient {
        self.c.client(i)
    }

    /// The agreed leader's index, waiting up to `within`.
    pub async fn leader(&mut self, within: Duration) -> usize {
        match self.c.wait_for_leader(within).await {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        }
    }

    /// Submit `op` to the given nodes in turn, retrying retryable answers and connection
    /// failures with the same id until one commits.
    pub async fn submit_retrying(
        &self,
        nodes: &[usize],
        op: &Operation,
        within: Duration,
    ) -> SubmitResult {
        let deadline = Instant::now() + within;
        let mut attempt = 0usize;
        loop {
            let i = nodes[attempt % nodes.len()];
            attempt += 1;
            match self.client(i).submit(op).await {
                Ok(r) => return r,
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("submit {} to node {i} failed for good: {e}", op.id),
            }
        }
    }

    /// Every journal entry of node `i` as (logIndex, operation id), reading all pages.
    pub async fn journal(&self, i: usize) -> Result<Vec<(u64, String)>, ClientError> {
        read_journal(&self.client(i)).await
    }

    /// Wait until the journals of `nodes` are identical and hold `len` entries.
    pub async fn journals_agree(
        &self,
        nodes: &[usize],
        len: usize,
        within: Duration,
    ) -> Vec<(u64, String)> {
        let nodes = nodes.to_vec();
        wait_for(
            &format!("journals of {nodes:?} to agree on {len} entries"),
            within,
            || async {
                let first = self.journal(nodes[0]).await.ok()?;
                for i in &nodes[1..] {
                    if self.journal(*i).await.ok()? != first {
                        return None;
                    }
                }
                (first.len() == len).then_some(first)
            },
        )
        .await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.c.nodes.len() {
                eprintln!(
                    "----- {} (last 40 log lines) -----\n{}",
                    self.c.nodes[i].name,
                    self.c.log_tail(i, 40)
                );
            }
        }
    }
}

/// Every journal entry a node holds as (logIndex, operation id), reading all pages.
pub async fn read_journal(client: &SidecarClient) -> Result<Vec<(u64, String)>, ClientError> {
    let mut out = Vec::new();
    let mut from = None;
    loop {
        let page = client.journal(from, Some(1000)).await?;
        if page.entries.is_empty() {
            return Ok(out);
        }
        out.extend(
            page.entries
                .into_iter()
                .map(|e| (e.log_index, e.operation.id)),
        );
        from = Some(page.next_index);
    }
}

/// An operation with a 100-byte payload.
pub fn op(id: &str) -> Operation {
    Operation {
        id: id.to_string(),
        op_type: "test".into(),
        payload: Some(serde_json::json!({ "data": "x".repeat(88) })),
        daemon_id: Some("test-daemon".into()),
        timestamp: None,
    }
}

/// A TLS connection to node `to`'s peer port presenting a certificate of the cluster's own CA
/// for the member name `name` (what a member, or whoever has its key, can open); the
/// WebSocket upgrade is the caller's.
pub async fn peer_tls(
    t: &TestCluster,
    to: usize,
    name: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let ca = t.c.pki.authority();
    let issued = ca
        .issue(&raft_pki::Subject {
            common_name: name.into(),
            names: vec![name.into()],
            usage: raft_pki::Usage::Member,
            valid_for: Duration::from_secs(3600),
        })
        .unwrap();
    peer_tls_as(t, to, ca.cert_pem(), &issued).await.unwrap()
}

/// A TLS connection to node `to`'s peer port trusting the CAs in `trust` and presenting
/// `cert`; `Err` when the handshake fails on our side.
pub async fn peer_tls_as(
    t: &TestCluster,
    to: usize,
    trust: &str,
    cert: &raft_pki::KeyedCert,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(trust.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(t.c.nodes[to].peer)
        .await
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// What a [`write_until`] writer keeps of each acknowledgement and each retried answer.
pub trait WriteLog: Send + Sync + 'static {
    fn acked(&self, op: &Operation, result: &SubmitResult);
    fn retried(&self, _error: &ClientError) {}
}

/// Submit `make(n)` for n = 0, 1, … one after another until `stop`, to rotating nodes (the
/// first one chosen by `w`), each retried with the same id while the answer is retryable, for
/// up to `patience`. A non-retryable answer, or one still failing after `patience`, fails the
/// test.
pub async fn write_until(
    w: usize,
    clients: std::sync::Arc<Vec<SidecarClient>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    patience: Duration,
    make: impl Fn(u64) -> Operation,
    log: std::sync::Arc<impl WriteLog>,
) {
    for n in 0u64.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let op = make(n);
        let deadline = Instant::now() + patience;
        let mut attempt = w + usize::try_from(n).unwrap();
        loop {
            match clients[attempt % clients.len()].submit(&op).await {
                Ok(r) => {
                    log.acked(&op, &r);
                    break;
                }
                Err(e) if retryable(&e) && Instant::now() < deadline => {
                    log.retried(&e);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("{} failed for good: {e}", op.id),
            }
        }
    }
}

/// Mount a volatile filesystem (`raft_testkit::volatile_fs`) over `backing` at `at`; fails the
/// test, saying what it needs, where FUSE is not available.
pub fn mount_volatile(backing: &Path, at: &Path) -> raft_testkit::volatile_fs::VolatileFs {
    raft_testkit::volatile_fs::VolatileFs::mount(backing, at).unwrap_or_else(|e| {
        panic!(
            "cannot mount the volatile filesystem at {} ({e}): this test needs root and /dev/fuse; run it as root, as CI does",
            at.display()
        )
    })
}
