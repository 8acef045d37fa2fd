//! Fixtures of the e2e suite: a kube client from `$KUBECONFIG`, the CRD installed, one
//! throwaway namespace per test with its own operator (a local process watching only that
//! namespace, or the chart's Deployment on kind), waits that name their condition and have a
//! deadline, and a dump of pods, events and sidecar logs when a test fails.
//!
//! Environment:
//! - `KUBECONFIG` (required): the cluster (kind, or `e2e/local/cluster up`).
//! - `E2E_OPERATOR`: `process` (default: run `RAFT_OPERATOR_BIN`, else the workspace build) or
//!   `deployment` (an operator already installed by the chart; `E2E_OPERATOR_NAMESPACE`, default
//!   `raft-operator`, label `app.kubernetes.io/name=raft-operator`).
//! - `E2E_SIDECAR_IMAGE` / `E2E_SIDECAR_IMAGE_NEXT`: the sidecar image and the one a rolling
//!   update changes to (defaults `raft-sidecar:0.1.0` / `raft-sidecar:0.1.0-next`, which the
//!   local agent maps to the same binary).
//! - `E2E_DAEMON_IMAGE`: the example daemon image (default `raft-example-daemon:0.1.0`).
//! - `E2E_KEEP=1`: keep the namespace of a failed test.
//! - `E2E_OPERATOR_LOG`: `RUST_LOG` of the operator process (default `info,kube=warn`).

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the fixtures"
)]

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use raft_crds::{RaftCluster, RaftClusterSpec, RaftClusterStatus};
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(180);

pub fn sidecar_image() -> String {
    std::env::var("E2E_SIDECAR_IMAGE").unwrap_or_else(|_| "raft-sidecar:0.1.0".into())
}

pub fn sidecar_image_next() -> String {
    std::env::var("E2E_SIDECAR_IMAGE_NEXT").unwrap_or_else(|_| "raft-sidecar:0.1.0-next".into())
}

pub fn daemon_image() -> String {
    std::env::var("E2E_DAEMON_IMAGE").unwrap_or_else(|_| "raft-example-daemon:0.1.0".into())
}

/// The example daemon with `args` (`--operations N --rate R`, ...), as `spec.daemon`.
pub fn example_daemon(args: &[&str]) -> raft_crds::DaemonSpec {
    raft_crds::DaemonSpec {
        image: daemon_image(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: vec![],
        resources: None,
        security_context: None,
    }
}

/// The reasons of every Event in the test's namespace.
pub async fn event_reasons(env: &Env) -> Vec<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(env.client.clone(), &env.ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// Poll `probe` until it returns `Some`, or fail naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(within, probe).await {
        Some(v) => v,
        None => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Poll `probe` until it returns `Some`; `None` once `within` has passed, for a caller that
/// says what it last saw.
pub async fn poll_until<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the pod's `Ready` condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Name of the operators' leader election Lease: the binary's default, and the chart's for a
/// release named `raft-operator` (as e2e/kind/run.sh installs it).
pub const LEASE: &str = "raft-operator";

/// The workspace's target directory, where the binaries the tests run are built.
pub fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// The operator serving one test.
pub enum Operator {
    Process {
        child: Child,
        namespace: String,
    },
    /// Several processes electing a leader on the Lease `LEASE` in the test's namespace, each
    /// with its identity.
    Elected {
        children: Vec<(String, Child)>,
        namespace: String,
    },
    Deployment {
        namespace: String,
    },
}

impl Operator {
    fn binary() -> PathBuf {
        if let Ok(p) = std::env::var("RAFT_OPERATOR_BIN") {
            return p.into();
        }
        target_dir().join("debug/raft-operator")
    }

    async fn start(watch_namespace: &str) -> Operator {
        if std::env::var("E2E_OPERATOR").as_deref() == Ok("deployment") {
            return Operator::Deployment {
                namespace: std::env::var("E2E_OPERATOR_NAMESPACE")
                    .unwrap_or_else(|_| "raft-operator".into()),
            };
        }
        Operator::Process {
            child: Self::spawn(watch_namespace, &[], watch_namespace),
            namespace: watch_namespace.to_owned(),
        }
    }

    /// One operator process watching `watch_namespace`, logging to
    /// `$TMPDIR/raft-operator-{log_name}.log`.
    fn spawn(watch_namespace: &str, extra_args: &[&str], log_name: &str) -> Child {
        let bin = Self::binary();
        assert!(
            bin.exists(),
            "operator binary {} not found: build it (cargo build -p raft-operator) or set RAFT_OPERATOR_BIN",
            bin.display()
        );
        let log = std::env::temp_dir().join(format!("raft-operator-{log_name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        Command::new(&bin)
            .args([
                "run",
                "--namespace",
                watch_namespace,
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("E2E_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// An operator process contending for the Lease in `ns` as `id` (its log: `<ns>-<id>`).
    fn spawn_elector(ns: &str, id: &str, extra_args: &[&str]) -> Child {
        let mut args = vec![
            "--leader-election",
            "--leader-election-namespace",
            ns,
            "--leader-election-identity",
            id,
        ];
        args.extend_from_slice(extra_args);
        Self::spawn(ns, &args, &format!("{ns}-{id}"))
    }

    /// Replace the test's operator process by one process per identity, electing a leader on
    /// the Lease `LEASE` in the test's namespace. The chart's Deployment already runs two
    /// replicas with leader election: left as it is.
    pub async fn start_elected(&mut self, identities: &[&str]) {
        let Operator::Process { child, namespace } = self else {
            return;
        };
        child.kill().await.unwrap();
        let ns = namespace.clone();
        let children = identities
            .iter()
            .map(|id| ((*id).to_owned(), Self::spawn_elector(&ns, id, &[])))
            .collect();
        *self = Operator::Elected {
            children,
            namespace: ns,
        };
    }

    /// The holder of the leader Lease, if any holds it.
    pub async fn leader(&self, client: &Client) -> Option<String> {
        let namespace = match self {
            Operator::Elected { namespace, .. } | Operator::Deployment { namespace } => namespace,
            Operator::Process { .. } => return None,
        };
        let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let lease = leases.get_opt(LEASE).await.ok()??;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    }

    /// Kill the replica holding the Lease without warning (it cannot release it): the process,
    /// or the pod with no grace period. Returns its identity.
    pub async fn kill_leader(&mut self, client: &Client) -> String {
        let leader = wait_for("an operator holding the Lease", WAIT, || {
            self.leader(client)
        })
        .await;
        match self {
            Operator::Elected { children, .. } => {
                let (_, child) = children
                    .iter_mut()
                    .find(|(id, _)| *id == leader)
                    .unwrap_or_else(|| panic!("the Lease names {leader}, no process of ours"));
                child.kill().await.unwrap();
            }
            Operator::Deployment { namespace } => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                pods.delete(&leader, &dp).await.unwrap();
            }
            Operator::Process { .. } => panic!("a single operator process has no leader election"),
        }
        leader
    }

    /// Kill the operator without warning (a crash at any point of a step).
    pub async fn crash_and_restart(&mut self, client: &Client) {
        match self {
            Operator::Process { child, namespace } => {
                child.kill().await.unwrap();
                let ns = namespace.clone();
                *self = Operator::start(&ns).await;
            }
            Operator::Elected {
                children,
                namespace,
            } => {
                let ns = namespace.clone();
                for (id, child) in children.iter_mut() {
                    child.kill().await.unwrap();
                    *child = Self::spawn_elector(&ns, id, &[]);
                }
            }
            Operator::Deployment { namespace } => {
                let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                pods.delete_collection(
                    &dp,
                    &ListParams::default().labels("app.kubernetes.io/name=raft-operator"),
                )
                .await
                .unwrap();
            }
        }
    }

    /// Restart every operator replica with `image` as the sidecar image of clusters that name
    /// none (`--sidecar-image`): to the clusters, an operator upgrade. The chart's Deployment
    /// gets the image in `RAFT_OPERATOR_SIDECAR_IMAGE`, and its rollout is awaited.
    pub async fn restart_with_sidecar_image(&mut self, client: &Client, image: &str) {
        let args = ["--sidecar-image", image];
        match self {
            Operator::Process { child, namespace } => {
                child.kill().await.unwrap();
                *child = Self::spawn(namespace, &args, namespace);
            }
            Operator::Elected {
                children,
                namespace,
            } => {
                for (id, child) in children.iter_mut() {
                    child.kill().await.unwrap();
                    *child = Self::spawn_elector(namespace, id, &args);
                }
            }
            Operator::Deployment { namespace } => {
                let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                let operators =
                    ListParams::default().labels("app.kubernetes.io/name=raft-operator");
                let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "operator", "env": [
                        {"name": "RAFT_OPERATOR_SIDECAR_IMAGE", "value": image}
                    ]}
                ]}}}});
                for d in deployments.list(&operators).await.unwrap() {
                    deployments
                        .patch(
                            &d.name_any(),
                            &PatchParams::default(),
                            &Patch::Strategic(&patch),
                        )
                        .await
                        .unwrap();
                }
                wait_for("the operator Deployment rolled out", WAIT, || async {
                    let list = deployments.list(&operators).await.ok()?;
                    list.items
                        .iter()
                        .all(|d| {
                            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                            d.status.as_ref().is_some_and(|s| {
                                s.observed_generation >= d.metadata.generation
                                    && s.updated_replicas == Some(want)
                                    && s.replicas == Some(want)
                                    && s.available_replicas == Some(want)
                            })
                        })
                        .then_some(())
                })
                .await;
            }
        }
    }

    /// Whether the operator's whole log has a line containing `needle` (`None` when it runs
    /// as a Deployment: its log is the cluster's).
    pub fn logged(&self, needle: &str) -> Option<bool> {
        let has = |log_name: &str| {
            let log = std::env::temp_dir().join(format!("raft-operator-{log_name}.log"));
            std::fs::read_to_string(log).is_ok_and(|text| text.contains(needle))
        };
        match self {
            Operator::Process { namespace, .. } => Some(has(namespace)),
            Operator::Elected {
                children,
                namespace,
            } => Some(
                children
                    .iter()
                    .any(|(id, _)| has(&format!("{namespace}-{id}"))),
            ),
            Operator::Deployment { .. } => None,
        }
    }

    pub fn log_tail(&self) -> String {
        match self {
            Operator::Process { namespace, .. } => tail_of_log(namespace),
            Operator::Elected {
                children,
                namespace,
            } => children
                .iter()
                .map(|(id, _)| format!("--- {id}\n{}", tail_of_log(&format!("{namespace}-{id}"))))
                .collect::<Vec<_>>()
                .join("\n"),
            Operator::Deployment { .. } => {
                "(operator runs as a Deployment: kubectl logs it)".into()
            }
        }
    }
}

fn tail_of_log(log_name: &str) -> String {
    let log = std::env::temp_dir().join(format!("raft-operator-{log_name}.log"));
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One test's world: a client, its namespace, its operator.
pub struct Env {
    pub client: Client,
    pub ns: String,
    pub operator: Operator,
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "raftclusters.consensus.unrdf.io",
        &PatchParams::apply("raft-e2e").force(),
        &Patch::Apply(RaftCluster::crd()),
    )
    .await
    .unwrap();
    wait_for("the RaftCluster CRD to be established", WAIT, || async {
        let crd = crds.get("raftclusters.consensus.unrdf.io").await.ok()?;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// Run one scenario in a fresh namespace; on failure dump what helps and re-raise.
pub async fn scenario<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = Env>,
{
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: start a cluster (e2e/local/cluster up, or kind) and export it"
    );
    let client = Client::try_default().await.unwrap();
    install_crd(&client).await;
    let suffix: u32 = rand::random::<u32>() % 100_000;
    let ns = format!("e2e-{name}-{suffix}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut object = Namespace::default();
    object.metadata.name = Some(ns.clone());
    // Every scenario runs under the "restricted" Pod Security Standard, enforced by the API
    // server: a pod the operator makes that does not meet it is refused.
    object.metadata.labels = Some(
        [
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let operator = Operator::start(&ns).await;
    let env = Env {
        client: client.clone(),
        ns: ns.clone(),
        operator,
    };
    let outcome = AssertUnwindSafe(body(env)).catch_unwind().await;
    match outcome {
        Ok(env) => {
            drop(env);
            let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
        }
        Err(panic) => {
            dump(&client, &ns).await;
            if std::env::var("E2E_KEEP").as_deref() != Ok("1") {
                let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
            }
            std::panic::resume_unwind(panic);
        }
    }
}

/// Pods, events and the tail of every sidecar's log, to stderr.
async fn dump(client: &Client, ns: &str) {
    eprintln!("===== e2e failure dump: namespace {ns} =====");
    let log = std::env::temp_dir().join(format!("raft-operator-{ns}.log"));
    if let Ok(text) = std::fs::read_to_string(&log) {
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- operator log (last 60 lines of {}) ---", log.display());
        eprintln!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
    }
    let rcs: Api<RaftCluster> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = rcs.list(&ListParams::default()).await {
        for rc in list {
            eprintln!(
                "--- raftcluster {} status ---\n{}",
                rc.name_any(),
                serde_json::to_string_pretty(&rc.status).unwrap_or_default()
            );
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for p in list {
            let status = p.status.clone().unwrap_or_default();
            eprintln!(
                "--- pod {} phase={:?} ip={:?} conditions={:?}",
                p.name_any(),
                status.phase,
                status.pod_ip,
                status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .map(|c| format!("{}={}", c.type_, c.status))
                    .collect::<Vec<_>>()
            );
            for container in ["raft-sidecar", "daemon"] {
                let lp = LogParams {
                    container: Some(container.into()),
                    tail_lines: Some(30),
                    ..LogParams::default()
                };
                if let Ok(text) = pods.logs(&p.name_any(), &lp).await {
                    eprintln!(
                        "--- {} / {container} (last 30 lines) ---\n{text}",
                        p.name_any()
                    );
                }
            }
        }
    }
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = events.list(&ListParams::default()).await {
        eprintln!("--- events ---");
        for e in list {
            eprintln!(
                "{} {} {}: {}",
                e.type_.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            );
        }
    }
    eprintln!("===== end of dump =====");
}

impl Env {
    pub fn clusters(&self) -> Api<RaftCluster> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn spec(&self, replicas: i32) -> RaftClusterSpec {
        let mut spec = RaftClusterSpec {
            replicas,
            ..RaftClusterSpec::default()
        };
        spec.sidecar.image = Some(sidecar_image());
        spec
    }

    pub async fn create(
        &self,
        name: &str,
        spec: RaftClusterSpec,
    ) -> Result<RaftCluster, kube::Error> {
        self.clusters()
            .create(&PostParams::default(), &RaftCluster::new(name, spec))
            .await
    }

    pub async fn status(&self, name: &str) -> RaftClusterStatus {
        self.clusters()
            .get(name)
            .await
            .ok()
            .and_then(|rc| rc.status)
            .unwrap_or_default()
    }

    /// Wait until a condition has the given status.
    pub async fn wait_condition(&self, name: &str, type_: &str, want: &str) -> RaftClusterStatus {
        wait_for(
            &format!("raftcluster {name} condition {type_}={want}"),
            WAIT,
            || async {
                let s = self.status(name).await;
                s.conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == want)
                    .then_some(s)
            },
        )
        .await
    }

    /// Wait until the cluster is Available with exactly `voters` voters and no step in flight.
    pub async fn wait_settled(&self, name: &str, voters: usize) -> RaftClusterStatus {
        wait_for(
            &format!("raftcluster {name} Available with {voters} voters and idle"),
            WAIT,
            || async {
                let s = self.status(name).await;
                let available = s
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "True");
                let n = s
                    .members
                    .iter()
                    .filter(|m| m.role == raft_crds::MemberRole::Voter && m.healthy)
                    .count();
                (available && n == voters && s.members.len() == voters && s.operation.is_none())
                    .then_some(s)
            },
        )
        .await
    }

    pub async fn scale(&self, name: &str, replicas: i32) -> Result<(), kube::Error> {
        self.clusters()
            .patch_scale(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
            )
            .await
            .map(|_| ())
    }

    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.clusters()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    pub async fn pod_ip(&self, pod: &str) -> Option<String> {
        self.pods().get(pod).await.ok()?.status?.pod_ip
    }
}

/// Every pod's uid, by name.
/// The example daemon's `GET /digest` in `pod` (what it executed, and the digest of it).
pub async fn daemon_digest(
    http: &reqwest::Client,
    env: &Env,
    pod: &str,
) -> Option<serde_json::Value> {
    let ip = env.pod_ip(pod).await?;
    http.get(format!("http://{ip}:8081/digest"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Each example daemon's `/digest` of pods c-0..c-2, once all three executed `executed`
/// operations and agree on what they executed.
pub async fn daemon_digests(env: &Env, executed: u64) -> Vec<serde_json::Value> {
    daemon_digests_of(env, "c", executed).await
}

/// [`daemon_digests`] of the three pods of RaftCluster `cluster`.
pub async fn daemon_digests_of(env: &Env, cluster: &str, executed: u64) -> Vec<serde_json::Value> {
    daemon_digests_of_members(env, cluster, 3, executed).await
}

/// [`daemon_digests`] of the `members` pods of RaftCluster `cluster`.
pub async fn daemon_digests_of_members(
    env: &Env,
    cluster: &str,
    members: u32,
    executed: u64,
) -> Vec<serde_json::Value> {
    let pods: Vec<String> = (0..members).map(|i| format!("{cluster}-{i}")).collect();
    let http = reqwest::Client::new();
    wait_for(
        &format!("all {members} daemons applied all {executed} operations"),
        WAIT,
        || {
            let (http, pods) = (&http, &pods);
            async move {
                let mut out = Vec::new();
                for pod in pods {
                    let v = daemon_digest(http, env, pod).await?;
                    if v["executed"].as_u64()? < executed {
                        return None;
                    }
                    out.push(v);
                }
                let same = out.windows(2).all(|w| {
                    w[0]["appliedIndex"] == w[1]["appliedIndex"] && w[0]["digest"] == w[1]["digest"]
                });
                same.then_some(out)
            }
        },
    )
    .await
}

/// A metric's value in a Prometheus text exposition: the first sample whose name and labels
/// are `series` (e.g. `consensus_tls_reloads_total{reason="loaded"}`); None if absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Who each of `pods` is now, its uid and each container's restart count: a restart or a
/// recreation changes it.
pub async fn pod_identities(
    env: &Env,
    pods: &[&str],
) -> BTreeMap<String, (String, BTreeMap<String, i32>)> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let p = env.pods().get(pod).await.unwrap();
        let restarts = p
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.restart_count))
            .collect();
        out.insert(
            (*pod).to_owned(),
            (p.metadata.uid.unwrap_or_default(), restarts),
        );
    }
    out
}

pub async fn pod_uids(env: &Env) -> BTreeMap<String, String> {
    let pods = env.pods().list(&ListParams::default()).await.unwrap();
    pods.items
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

pub async fn update_revision(env: &Env) -> Option<String> {
    let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    sts.get("c").await.ok()?.status?.update_revision
}

/// Cordon (or uncordon) every node: pods that are deleted or added stay Pending.
pub async fn set_unschedulable(env: &Env, unschedulable: bool) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(env.client.clone());
    for n in nodes.list(&ListParams::default()).await.unwrap() {
        nodes
            .patch(
                &n.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"unschedulable": unschedulable}})),
            )
            .await
            .unwrap();
    }
}

/// Run a future, catching a panic so cleanup (uncordon) happens before it is re-raised.
pub struct AssertRecover<F>(pub F);

impl<F: std::future::Future<Output = ()>> AssertRecover<F> {
    pub async fn run(self) -> Result<(), Box<dyn std::any::Any + Send>> {
        use futures_util::FutureExt;
        std::panic::AssertUnwindSafe(self.0).catch_unwind().await
    }
}
