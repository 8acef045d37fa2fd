//! `spec.tls.issuerRef` with a real cert-manager: its controller, built from its Go module like
//! the control plane (`e2e/controlplane/build.sh cert-manager`), runs as a process against the
//! suite's API server. A cluster runs on what cert-manager issues from a CA Issuer; a renewal,
//! then a change of the issuer's CA, reach the running members under load without a restart
//! or a failed write; an issuer that does not exist is reported, and nothing is started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use tokio::process::{Child, Command};

use crate::support::{
    WAIT, daemon_digest, daemon_digests, example_daemon, metric, pod_identities, poll_until,
    scenario, wait_for,
};

const PODS: [&str; 3] = ["c-0", "c-1", "c-2"];

/// cert-manager's controller, killed on drop. Its log: `$TMPDIR/cert-manager-<ns>.log`.
struct CertManager {
    _child: Child,
}

/// What `build.sh` printed for `tool` (`PREFIX_BIN=`), building it if it is missing.
fn tool_dir(controlplane: &Path, tool: &str, prefix: &str) -> PathBuf {
    let out = std::process::Command::new(controlplane.join("build.sh"))
        .arg(tool)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building {tool} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let dir = printed
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{prefix}_BIN=")).map(str::to_owned))
        .unwrap_or_else(|| panic!("build.sh printed no {prefix}_BIN="));
    PathBuf::from(dir.trim_matches('\''))
}

impl CertManager {
    /// Install cert-manager's CRDs (server-side apply: idempotent, and they are too large for
    /// a client-side apply's annotation) and start the controller for every namespace.
    async fn start(ns: &str) -> CertManager {
        let controlplane = Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane");
        let cm = tool_dir(&controlplane, "cert-manager", "CERT_MANAGER");
        let kubectl = tool_dir(&controlplane, "kubernetes", "KUBE").join("kubectl");
        let kubectl = |args: &[&str]| {
            let out = std::process::Command::new(&kubectl)
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let crds = cm.join("crds.yaml");
        kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().unwrap(),
        ]);
        kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
            "crd/certificaterequests.cert-manager.io",
            "crd/issuers.cert-manager.io",
        ]);
        let log = std::env::temp_dir().join(format!("cert-manager-{ns}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let kubeconfig = std::env::var("KUBECONFIG").unwrap();
        let child = Command::new(cm.join("cert-manager-controller"))
            .args(["--kubeconfig", &kubeconfig, "--leader-elect=false"])
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        eprintln!("cert-manager controller started, log {}", log.display());
        CertManager { _child: child }
    }
}

fn cert_manager_api(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("cert-manager.io", "v1", kind);
    let plural = format!("{}s", kind.to_lowercase());
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

async fn create(api: &Api<DynamicObject>, object: serde_json::Value) {
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// Ask cert-manager to issue `certificate` again now, as `cmctl renew` does: the condition
/// `Issuing=True` in its status.
async fn renew(certificates: &Api<DynamicObject>, certificate: &str) {
    let mut c = certificates.get_status(certificate).await.unwrap();
    let status = c.data["status"].as_object_mut().unwrap();
    let conditions = status
        .entry("conditions")
        .or_insert_with(|| serde_json::json!([]));
    conditions.as_array_mut().unwrap().push(serde_json::json!({
        "type": "Issuing",
        "status": "True",
        "reason": "ManuallyTriggered",
        "message": "renewal asked for by the e2e test",
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
    }));
    certificates
        .replace_status(certificate, &PostParams::default(), &c)
        .await
        .unwrap();
}

fn key(data: &BTreeMap<String, ByteString>, key: &str) -> String {
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// The certificates of a PEM bundle, whitespace around each ignored, in order.
fn pems(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| b.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn certificates_from_cert_manager_are_used_renewed_and_their_ca_changed_under_load() {
    // 3 × 600 writes at up to 10/s each: a minute or more of writing.
    const OPERATIONS: u64 = 600;
    const EXPIRY: &str = "consensus_tls_certificate_expiry_timestamp_seconds";

    scenario("cert-manager", |env| async move {
        let _cert_manager = CertManager::start(&env.ns).await;
        let issuers = cert_manager_api(&env.client, &env.ns, "Issuer");
        let certificates = cert_manager_api(&env.client, &env.ns, "Certificate");
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);

        // A CA of the namespace's own, issued by cert-manager from a self-signed Issuer.
        create(
            &issuers,
            serde_json::json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                "metadata": {"name": "selfsigned"}, "spec": {"selfSigned": {}}
            }),
        )
        .await;
        create(
            &certificates,
            serde_json::json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": "cluster-ca"},
                "spec": {
                    "isCA": true, "commonName": "e2e cluster CA", "secretName": "cluster-ca",
                    "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                    "issuerRef": {"name": "selfsigned", "kind": "Issuer"}
                }
            }),
        )
        .await;
        create(
            &issuers,
            serde_json::json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
                "metadata": {"name": "cluster-ca"}, "spec": {"ca": {"secretName": "cluster-ca"}}
            }),
        )
        .await;
        let ca_of = || async {
            let data = secrets.get_opt("cluster-ca").await.ok()??.data?;
            data.contains_key("tls.crt").then(|| key(&data, "tls.crt"))
        };
        let first_ca = wait_for("cert-manager to issue the CA", WAIT, ca_of).await;

        // An issuer that does not exist: reported, and no pod is started.
        let mut missing = env.spec(1);
        missing.tls = Some(raft_crds::TlsSpec {
            issuer_ref: Some(raft_crds::IssuerRef {
                name: "no-such-issuer".into(),
                kind: "Issuer".into(),
                group: "cert-manager.io".into(),
            }),
        });
        env.create("d", missing).await.unwrap();
        let why = wait_for("d to report CertificatesPending", WAIT, || async {
            let s = env.clusters().get_status("d").await.ok()?.status?;
            s.conditions
                .into_iter()
                .find(|c| c.type_ == "Degraded" && c.reason == "CertificatesPending")
                .map(|c| c.message)
        })
        .await;
        eprintln!("d: {why}");
        assert!(why.contains("no-such-issuer"), "{why}");
        assert!(why.contains("d-0-cert"), "{why}");
        let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
        assert!(
            sts.get_opt("d").await.unwrap().is_none(),
            "no StatefulSet d"
        );

        // The cluster on cert-manager's certificates, the daemons writing.
        let mut spec = env.spec(3);
        spec.tls = Some(raft_crds::TlsSpec {
            issuer_ref: Some(raft_crds::IssuerRef {
                name: "cluster-ca".into(),
                kind: "Issuer".into(),
                group: "cert-manager.io".into(),
            }),
        });
        spec.daemon = Some(example_daemon(&[
            "--operations",
            &OPERATIONS.to_string(),
            "--rate",
            "10",
        ]));
        env.create("c", spec).await.unwrap();
        env.wait_settled("c", 3).await;
        let tls = secrets.get("c-tls").await.unwrap().data.unwrap();
        assert_eq!(
            pems(&key(&tls, "ca.crt")),
            pems(&first_ca),
            "members trust the issuer's CA"
        );
        for pod in PODS {
            let issued = secrets
                .get(&format!("{pod}-cert"))
                .await
                .unwrap()
                .data
                .unwrap();
            assert_eq!(
                key(&tls, &format!("{pod}.crt")),
                key(&issued, "tls.crt"),
                "{pod}"
            );
        }
        let ca_secret = secrets.get("c-ca").await.unwrap().data.unwrap();
        assert!(
            !ca_secret.contains_key("ca.key"),
            "the operator holds no CA key"
        );
        let operator = secrets.get("c-operator-cert").await.unwrap().data.unwrap();
        assert_eq!(key(&ca_secret, "operator.crt"), key(&operator, "tls.crt"));

        // Who each pod is, and each sidecar's /metrics over TLS (trusting cert-manager's CA).
        let identity = || pod_identities(&env, &PODS);
        let before = identity().await;
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
        for ca in pems(&first_ca) {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        }
        let mut urls = BTreeMap::new();
        for pod in PODS {
            let ip: std::net::IpAddr = env.pod_ip(pod).await.unwrap().parse().unwrap();
            let host = format!("{pod}.c.{}.svc.cluster.local", env.ns);
            builder = builder.resolve(&host, std::net::SocketAddr::new(ip, 7090));
            urls.insert(pod, format!("https://{host}:7090/metrics"));
        }
        let admin = builder.build().unwrap();
        let expiry = |pod: &'static str| {
            let (admin, url) = (&admin, &urls[pod]);
            async move {
                metric(
                    &admin.get(url).send().await.ok()?.text().await.ok()?,
                    EXPIRY,
                )
            }
        };
        let old_expiry = wait_for("c-1's /metrics over TLS", WAIT, || expiry("c-1")).await;
        let daemons = reqwest::Client::new();
        let digests = || async {
            let mut out = Vec::new();
            for pod in PODS {
                out.push(daemon_digest(&daemons, &env, pod).await?);
            }
            Some(out)
        };
        let acknowledged = |ds: &[serde_json::Value]| -> u64 {
            ds.iter()
                .map(|d| d["acknowledged"].as_u64().unwrap_or(0))
                .sum()
        };
        wait_for(
            "every daemon to have written 20 operations",
            WAIT,
            || async {
                let ds = digests().await?;
                ds.iter()
                    .all(|d| d["acknowledged"].as_u64().is_some_and(|a| a >= 20))
                    .then_some(())
            },
        )
        .await;

        // A renewal from the same CA: c-1 loads its new certificate, nobody restarts.
        let started = std::time::Instant::now();
        renew(&certificates, "c-1-cert").await;
        wait_for("c-1 to load its renewed certificate", WAIT, || async {
            expiry("c-1").await.filter(|e| *e > old_expiry)
        })
        .await;
        let renewal_took = started.elapsed();
        let tls = secrets.get("c-tls").await.unwrap().data.unwrap();
        let issued = secrets.get("c-1-cert").await.unwrap().data.unwrap();
        assert_eq!(key(&tls, "c-1.crt"), key(&issued, "tls.crt"));

        // The issuer's CA changes (a new key and certificate), then every certificate is
        // renewed from it: the members go through both CAs to the new one alone.
        let renewed = digests().await.unwrap();
        let started = std::time::Instant::now();
        renew(&certificates, "cluster-ca").await;
        let new_ca = wait_for("a new CA", WAIT, || async {
            ca_of().await.filter(|ca| pems(ca) != pems(&first_ca))
        })
        .await;
        // cert-manager's CA issuer reads its CA from a cache: a renewal asked for the moment
        // the new CA is written may still be signed by the old one. Such a certificate is
        // renewed again (what a user would do), at most every 10 s.
        const RENEWED: [&str; 4] = ["c-0-cert", "c-1-cert", "c-2-cert", "c-operator-cert"];
        let asked = std::sync::Mutex::new(None::<std::time::Instant>);
        let state = std::sync::Mutex::new(String::new());
        let outcome = poll_until(WAIT, || async {
            let again = asked
                .lock()
                .unwrap()
                .is_none_or(|t| t.elapsed() > Duration::from_secs(10));
            let mut old_ones = Vec::new();
            for c in RENEWED {
                let issued = secrets.get(c).await.ok()?.data?;
                if pems(&key(&issued, "ca.crt")) != pems(&new_ca) {
                    old_ones.push(c);
                }
            }
            if again && !old_ones.is_empty() {
                for c in &old_ones {
                    renew(&certificates, c).await;
                }
                *asked.lock().unwrap() = Some(std::time::Instant::now());
            }
            let tls = secrets.get("c-tls").await.ok()?.data?;
            let mut handed_out = Vec::new();
            for pod in PODS {
                let issued = secrets.get(&format!("{pod}-cert")).await.ok()?.data?;
                if key(&tls, &format!("{pod}.crt")) == key(&issued, "tls.crt") {
                    handed_out.push(pod);
                }
            }
            let trusted = pems(&key(&tls, "ca.crt"));
            *state.lock().unwrap() = format!(
                "issued by the old CA: {old_ones:?}; issued certificates in c-tls: \
                     {handed_out:?}; c-tls trusts {} CA(s), the new one {}",
                trusted.len(),
                if trusted.contains(&pems(&new_ca)[0]) {
                    "among them"
                } else {
                    "not"
                },
            );
            (old_ones.is_empty() && handed_out.len() == PODS.len() && trusted == pems(&new_ca))
                .then_some(())
        })
        .await;
        assert!(
            outcome.is_some(),
            "the CA change did not finish: {}",
            state.lock().unwrap()
        );
        let ca_change_took = started.elapsed();
        let changed = digests().await.unwrap();
        assert!(
            changed
                .iter()
                .any(|d| d["acknowledged"].as_u64() < Some(OPERATIONS)),
            "the daemons were still writing when the CA change finished: {changed:?}"
        );

        let total = OPERATIONS * 3;
        let done = daemon_digests(&env, total).await;
        for d in &done {
            assert_eq!(
                d["executed"], total,
                "each operation executed once: {done:?}"
            );
            assert_eq!(d["failed"], 0, "no write given up on: {done:?}");
            assert_eq!(
                d["acknowledged"], OPERATIONS,
                "every write acknowledged: {done:?}"
            );
        }
        assert_eq!(
            identity().await,
            before,
            "no pod restarted or was recreated"
        );
        eprintln!(
            "cert-manager: renewal of c-1 loaded {:.1} s after it was asked for; the issuer's \
             CA changed and every certificate renewed from it in {:.1} s, {} writes \
             acknowledged meanwhile; 0 failed writes, 0 restarts",
            renewal_took.as_secs_f64(),
            ca_change_took.as_secs_f64(),
            acknowledged(&changed).saturating_sub(acknowledged(&renewed)),
        );
        env
    })
    .await;
}
