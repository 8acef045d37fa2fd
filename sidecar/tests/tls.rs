//! Mutual TLS between members and on the admin API, against real processes: certificates and
//! the CA are rotated in place under load (files rewritten, no restart) with no failed write,
//! and what the old CA signed is refused afterwards.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestCluster, op, wait_for};
use parking_lot::Mutex;
use raft_api::client::{ClientTls, SidecarClient, TlsHttp};
use raft_pki::{Authority, CA_FILE, CERT_FILE, KEY_FILE, KeyedCert, Subject, Usage};

const DAY: Duration = Duration::from_secs(86_400);

fn issue(ca: &Authority, name: &str, usage: Usage) -> KeyedCert {
    let names = match usage {
        Usage::Member => vec![name.into(), "localhost".into(), "127.0.0.1".into()],
        Usage::Client => vec![name.into()],
    };
    ca.issue(&Subject {
        common_name: name.into(),
        names,
        usage,
        valid_for: DAY,
    })
    .unwrap()
}

fn connector(ca_pem: &str, cert: &KeyedCert) -> TlsHttp {
    ClientTls {
        ca_pem: ca_pem.as_bytes().to_vec(),
        cert_pem: cert.cert_pem.as_bytes().to_vec(),
        key_pem: cert.key_pem.as_bytes().to_vec(),
    }
    .connector()
    .unwrap()
}

fn admin(t: &TestCluster, i: usize, tls: &TlsHttp) -> SidecarClient {
    SidecarClient::new(
        None,
        Some(&t.c.nodes[i].admin.to_string()),
        Some(t.c.token.clone()),
        Duration::from_secs(5),
    )
    .with_tls(tls)
}

/// `consensus_tls_reloads_total{reason="loaded"}` of node `i`.
async fn reloads(t: &TestCluster, i: usize, tls: &TlsHttp) -> Option<u64> {
    let text = admin(t, i, tls).metrics().await.ok()?;
    Some(
        text.lines()
            .find_map(|l| l.strip_prefix("consensus_tls_reloads_total{reason=\"loaded\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    )
}

/// Replace `path`'s contents at once (as a Kubernetes Secret volume update does).
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Wait until every node has loaded `generation` certificate generations.
async fn until_reloaded(t: &TestCluster, generation: u64, tls: &TlsHttp, what: &str) {
    for i in 0..t.c.nodes.len() {
        wait_for(
            &format!("node {i} to load {what}"),
            Duration::from_secs(20),
            || async move {
                reloads(t, i, tls)
                    .await
                    .filter(|n| *n >= generation)
                    .map(|_| ())
            },
        )
        .await;
    }
}

/// Writers submitting unique ids to every node in turn through the daemon API (followers
/// forward over the peer links) until told to stop; every answer that is not a commit counts.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(t: &TestCluster, writers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<SidecarClient> = (0..t.c.nodes.len()).map(|i| t.client(i)).collect();
        let tasks = (0..writers)
            .map(|k| {
                let (stop, acked, failures, clients) = (
                    stop.clone(),
                    acked.clone(),
                    failures.clone(),
                    clients.clone(),
                );
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let node = (k + n) % clients.len();
                        let id = format!("w{k}-{n}");
                        match clients[node].submit(&op(&id)).await {
                            Ok(r) if r.committed => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failures.lock().push(format!("{id} on node {node}: {r:?}")),
                            Err(e) => failures.lock().push(format!("{id} on node {node}: {e}")),
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            failures,
            tasks,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Wait until `more` writes past `from` were acknowledged.
    async fn until_acked(&self, from: u64, more: u64, what: &str) {
        wait_for(what, Duration::from_secs(20), || async move {
            (self.acked() >= from + more).then_some(())
        })
        .await;
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().clone();
        (self.acked.load(Ordering::Relaxed), failures)
    }
}

/// Dial node `i`'s peer port as member `name` with `cert` and try the upgrade.
async fn peer_upgrade(
    t: &TestCluster,
    i: usize,
    trust: &str,
    cert: &KeyedCert,
    name: &str,
) -> Result<(), String> {
    let addr = t.c.nodes[i].peer;
    let tls = common::peer_tls_as(t, i, trust, cert).await?;
    let request = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("wss://{addr}/raft/v2"))
        .header("host", addr.to_string())
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("authorization", format!("Bearer {}", t.c.token))
        .header("x-raft-cluster-id", t.c.cluster_id.as_str())
        .header("x-raft-node-id", "1")
        .header("x-raft-node-name", name)
        .body(())
        .unwrap();
    tokio_tungstenite::client_async(request, tls)
        .await
        .map(|_| ())
        .map_err(|e| format!("upgrade: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_and_the_ca_rotate_under_load_with_no_failed_write() {
    let t = TestCluster::start(3, &[]).await;
    let old_ca = t.c.pki.authority();
    let new_ca = Authority::generate("rotated CA", 10 * DAY).unwrap();
    let bundle = format!("{}{}", old_ca.cert_pem(), new_ca.cert_pem());
    let old_client = issue(old_ca, "old-admin", Usage::Client);
    let new_client = issue(&new_ca, "new-admin", Usage::Client);
    let during = connector(&bundle, &old_client);
    let pids: Vec<_> = (0..3).map(|i| t.c.pid(i)).collect();
    let load = Load::start(&t, 8);
    load.until_acked(0, 100, "writes to flow before the rotation")
        .await;

    // 1. Every member trusts both CAs.
    for node in &t.c.nodes {
        replace(&node.tls_dir.join(CA_FILE), &bundle);
    }
    until_reloaded(&t, 1, &during, "the two-CA bundle").await;
    // 2. Every member gets a certificate of the new CA.
    for node in &t.c.nodes {
        let cert = issue(&new_ca, &node.name, Usage::Member);
        replace(&node.tls_dir.join(KEY_FILE), &cert.key_pem);
        replace(&node.tls_dir.join(CERT_FILE), &cert.cert_pem);
    }
    until_reloaded(&t, 2, &during, "certificates of the new CA").await;
    // 3. The old CA is no longer trusted.
    let after = connector(new_ca.cert_pem(), &new_client);
    for node in &t.c.nodes {
        replace(&node.tls_dir.join(CA_FILE), new_ca.cert_pem());
    }
    until_reloaded(&t, 3, &after, "the new CA alone").await;
    // Links re-dial at each reload; keep writing past the last one.
    load.until_acked(load.acked(), 100, "writes after the last reload")
        .await;
    let started = Instant::now();
    let (acked, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed writes: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        acked > 100,
        "only {acked} writes acknowledged under rotation"
    );
    eprintln!(
        "rotation under load: {acked} writes acknowledged, 0 failed ({:?} to stop)",
        started.elapsed()
    );

    // Every member moved its peer links to the new certificates without a restart.
    assert_eq!(pids, (0..3).map(|i| t.c.pid(i)).collect::<Vec<_>>());
    for (i, node) in t.c.nodes.iter().enumerate() {
        let log = std::fs::read_to_string(node.log_path()).unwrap();
        let redials = log
            .matches("re-dialling the peer with reloaded certificates")
            .count();
        assert!(
            redials >= 2,
            "node {i} re-dialled its peers {redials} times"
        );
    }

    // What the old CA signed is refused on both ports; the new certificates are accepted.
    for i in 0..3 {
        assert!(
            admin(&t, i, &after).status().await.is_ok(),
            "node {i}: new client certificate"
        );
        let old = connector(&bundle, &old_client);
        assert!(
            admin(&t, i, &old).status().await.is_err(),
            "node {i}: old client certificate accepted"
        );
        let name = &t.c.nodes[(i + 1) % 3].name;
        let old_member = issue(old_ca, name, Usage::Member);
        let refused = peer_upgrade(&t, i, &bundle, &old_member, name).await;
        assert!(
            refused.is_err(),
            "node {i}: a peer with an old-CA certificate was accepted"
        );
        let new_member = issue(&new_ca, name, Usage::Member);
        peer_upgrade(&t, i, new_ca.cert_pem(), &new_member, name)
            .await
            .unwrap_or_else(|e| panic!("node {i}: a peer with a new-CA certificate: {e}"));
        // A certificate of the right CA for another member's name: refused at the upgrade.
        let refused = peer_upgrade(&t, i, new_ca.cert_pem(), &new_member, "node-9").await;
        assert!(
            refused.is_err(),
            "node {i}: a peer claiming a name its certificate lacks"
        );
    }
    t.journals_agree(&[0, 1, 2], acked as usize, Duration::from_secs(20))
        .await;
}

#[tokio::test]
async fn the_admin_api_wants_a_client_certificate_but_probes_and_metrics_do_not() {
    let t = TestCluster::start(1, &[]).await;
    let ca = reqwest::Certificate::from_pem(t.c.pki.authority().cert_pem().as_bytes()).unwrap();
    let anonymous = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let base = format!("https://{}", t.c.nodes[0].admin);
    let get = |path: &str| {
        anonymous
            .get(format!("{base}{path}"))
            .bearer_auth(&t.c.token)
            .send()
    };
    let status = get("/admin/v1/status").await.unwrap();
    assert_eq!(status.status(), 401);
    assert!(status.text().await.unwrap().contains("client certificate"));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/metrics").await.unwrap().status(), 200);
    // Plain HTTP on the TLS port gets nothing.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", t.c.nodes[0].admin))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered on the admin port");
    // With the cluster's client certificate, the same request is served.
    assert!(t.client(0).status().await.is_ok());
}
