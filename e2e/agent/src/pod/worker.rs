//! One pod's life on this node: prepare (pod IP, network namespace, hosts file, volumes), start
//! its init containers in order and then its containers, supervise them (restart per
//! `restartPolicy` with back-off, probes), report `pods/status` on every change, and on stop:
//! SIGTERM, wait the grace period, SIGKILL, remove the namespace and scratch volumes and, for a
//! pod deleted through the API, DELETE it with grace 0 and a uid precondition.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::container::{ContainerRun, RestartPolicy, now_time};
use super::shared::Shared;
use super::status::{self, ConditionType, Conditions, ContainerView, Phase, RunState};
use crate::config::Bind;
use crate::dns::PodEntry;
use crate::env::{self, EnvError, PodFacts, Sources};
use crate::image;
use crate::ipam::IpamError;
use crate::network::{self, NetworkError, PodNetwork};
use crate::probe::{self, Verdict};
use crate::process::{self, Launch, ProcessError};
use crate::volumes::{PodVolumes, VolumeError};

/// Why a pod cannot start yet (shown as the pod's status `message`; retried every 2 s).
#[derive(Debug, thiserror::Error)]
enum PrepareError {
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("the pod IP allocator lock is poisoned")]
    Poisoned,
}

/// Why a container did not start (its `state.waiting`; retried every 2 s).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("the pod network or volumes are not ready")]
    NotPrepared,
    #[error("no --image rule maps image '{0}' to a local binary")]
    NoImageRule(String),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("volume {0} not found")]
    UnknownVolume(String),
    #[error("failed to create subPath {path}: {source}")]
    SubPath {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

impl StartError {
    /// The `state.waiting.reason` a kubelet would report.
    fn reason(&self) -> &'static str {
        match self {
            Self::NotPrepared => "ContainerCreating",
            Self::NoImageRule(_) => "ErrImagePull",
            Self::Env(_)
            | Self::UnknownVolume(_)
            | Self::SubPath { .. }
            | Self::Process(ProcessError::MountPoint { .. }) => "CreateContainerConfigError",
            Self::Process(_) => "RunContainerError",
        }
    }
}

/// What the controller tells a worker.
#[derive(Debug, Clone, Copy)]
pub enum Msg {
    /// Stop every container (SIGTERM, `grace`, SIGKILL) and clean up; `delete_from_api` for a
    /// pod whose deletion was requested through the API (the agent completes it).
    Stop {
        grace: Duration,
        delete_from_api: bool,
    },
}

pub struct Worker {
    shared: Arc<Shared>,
    pod: Pod,
    uid: String,
    namespace: String,
    name: String,
    hostname: String,
    policy: RestartPolicy,
    network: Option<PodNetwork>,
    network_ready: bool,
    binds: Option<std::collections::BTreeMap<String, PathBuf>>,
    /// Keeps Secret/ConfigMap/projected volumes current while the pod runs; aborted at stop.
    volume_refresh: Option<tokio::task::JoinHandle<()>>,
    runs: Vec<ContainerRun>,
    conditions: Conditions,
    start_time: Time,
    message: Option<String>,
    last_reported: Option<serde_json::Value>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>, pod: Pod) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let prev = pod.status.as_ref();
        let find = |list: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>, name: &str| {
            list.and_then(|l| l.iter().find(|s| s.name == name))
                .cloned()
        };
        let mut runs: Vec<ContainerRun> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let p = find(
                    prev.and_then(|s| s.init_container_statuses.as_ref()),
                    &c.name,
                );
                ContainerRun::new(c.clone(), true, p.as_ref())
            })
            .collect();
        runs.extend(spec.containers.iter().map(|c| {
            let p = find(prev.and_then(|s| s.container_statuses.as_ref()), &c.name);
            ContainerRun::new(c.clone(), false, p.as_ref())
        }));
        let name = meta.name.clone().unwrap_or_default();
        Self {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            hostname: spec.hostname.clone().unwrap_or_else(|| name.clone()),
            name,
            policy: RestartPolicy::of(&pod),
            network: None,
            network_ready: false,
            binds: None,
            volume_refresh: None,
            runs,
            conditions: Conditions::default(),
            start_time: prev
                .and_then(|s| s.start_time.clone())
                .unwrap_or_else(now_time),
            message: None,
            last_reported: None,
            shared,
            pod,
        }
    }

    fn pod_dir(&self) -> PathBuf {
        self.shared.cfg.pods_dir().join(&self.uid)
    }

    fn facts(&self) -> Option<PodFacts> {
        let ip = self.network.as_ref()?.ip;
        Some(PodFacts {
            pod_ip: ip,
            host_ip: self.shared.cfg.bridge_ip,
            hostname: self.hostname.clone(),
            apiserver: self.shared.apiserver.clone(),
        })
    }

    /// Runs the pod until it is told to stop, then cleans up.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let phase = self.pod.status.as_ref().and_then(|s| s.phase.clone());
        let terminal = matches!(phase.as_deref(), Some("Succeeded" | "Failed"));
        let msg = if terminal {
            rx.recv().await
        } else {
            match self.prepare_until_ready(&mut rx).await {
                Some(m) => Some(m),
                None => self.supervise(&mut rx).await,
            }
        };
        let msg = msg.unwrap_or(Msg::Stop {
            grace: Duration::ZERO,
            delete_from_api: false,
        });
        let Msg::Stop {
            grace,
            delete_from_api,
        } = msg;
        self.teardown(grace).await;
        if delete_from_api {
            self.delete_from_api().await;
        }
    }

    /// Retries preparation every 2 s until it works or a stop arrives (returned).
    async fn prepare_until_ready(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) -> Option<Msg> {
        loop {
            match self.prepare().await {
                Ok(()) => {
                    self.message = None;
                    return None;
                }
                Err(e) => {
                    tracing::warn!(pod = %self.name, namespace = %self.namespace, error = %e, "pod not ready to start");
                    self.message = Some(e.to_string());
                    self.report().await;
                }
            }
            tokio::select! {
                m = rx.recv() => return Some(m.unwrap_or(Msg::Stop { grace: Duration::ZERO, delete_from_api: false })),
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    }

    /// Pod IP, network namespace, hosts file, volumes. Idempotent across retries.
    async fn prepare(&mut self) -> Result<(), PrepareError> {
        let cfg = &self.shared.cfg;
        if self.network.is_none() {
            let ip = self
                .shared
                .ipam
                .lock()
                .map_err(|_| PrepareError::Poisoned)?
                .allocate()?;
            self.network = Some(PodNetwork::new(&cfg.netns_prefix, &self.uid, ip));
        }
        let Some(net) = self.network.clone() else {
            return Ok(());
        };
        if !self.network_ready {
            net.create(&cfg.bridge, cfg.bridge_ip, cfg.pod_prefix_len)
                .await?;
            let search = format!(
                "{ns}.svc.{d} svc.{d} {d}",
                ns = self.namespace,
                d = cfg.cluster_domain
            );
            let resolv = format!(
                "# written by raft-test-agent: no DNS server, names are in /etc/hosts\nsearch {search}\noptions ndots:5\n"
            );
            net.write_etc(&self.hostname, &resolv).await?;
            let spec = self.pod.spec.as_ref();
            self.shared.dns.upsert_pod(
                &self.uid,
                PodEntry {
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                    hostname: self.hostname.clone(),
                    subdomain: spec.and_then(|s| s.subdomain.clone()),
                    labels: self.pod.metadata.labels.clone().unwrap_or_default(),
                    ip: net.ip,
                    ready: false,
                    netns: net.netns.clone(),
                },
            );
            self.shared
                .dns
                .write_now(&self.uid, &cfg.cluster_domain)
                .await;
            self.network_ready = true;
            self.conditions.set(
                ConditionType::PodReadyToStartContainers,
                true,
                None,
                &now_time(),
            );
        }
        if self.binds.is_none()
            && let Some(facts) = self.facts()
        {
            let dir = self.pod_dir().join("volumes");
            let mut volumes =
                PodVolumes::new(self.shared.client.clone(), self.pod.clone(), facts, dir);
            self.binds = Some(volumes.materialise().await?);
            let period = self.shared.cfg.volume_refresh;
            if !period.is_zero() {
                self.volume_refresh = Some(tokio::spawn(volumes.refresh_every(period)));
            }
        }
        Ok(())
    }

    /// The supervision loop: reap, start, probe, report; returns the stop message.
    async fn supervise(&mut self, rx: &mut mpsc::UnboundedReceiver<Msg>) -> Option<Msg> {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                m = rx.recv() => return m,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            self.reap(now);
            self.start_due(now).await;
            self.probe_due().await;
            self.report().await;
        }
    }

    /// Collects exited processes, decides on restarts, escalates overdue stops to SIGKILL.
    fn reap(&mut self, now: Instant) {
        let policy = self.policy;
        let max_backoff = self.shared.cfg.max_restart_backoff;
        for run in &mut self.runs {
            let Some(status) = run.poll(now) else {
                continue;
            };
            let signal = status.signal();
            let exit_code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
            tracing::info!(pod = %self.name, container = %run.spec.name, exit_code, "container exited");
            run.exited(exit_code, signal, now, policy, max_backoff);
        }
    }

    fn initialized(&self) -> bool {
        self.runs
            .iter()
            .filter(|r| r.init)
            .all(|r| r.finished && matches!(&r.state, RunState::Terminated(e) if e.exit_code == 0))
    }

    /// Starts the next init container, or (once initialized) every due container.
    async fn start_due(&mut self, now: Instant) {
        let initialized = self.initialized();
        let mut due = Vec::new();
        if initialized {
            for (i, r) in self.runs.iter().enumerate() {
                if !r.init && !r.finished && r.child.is_none() && now >= r.next_start {
                    due.push(i);
                }
            }
        } else if let Some(i) = self.runs.iter().position(|r| r.init && !r.finished)
            && self.runs[i].child.is_none()
            && now >= self.runs[i].next_start
        {
            due.push(i);
        }
        for i in due {
            if let Err(e) = self.start(i).await {
                let run = &mut self.runs[i];
                tracing::warn!(pod = %self.name, container = %run.spec.name, error = %e, "container not started");
                run.state = RunState::Waiting {
                    reason: e.reason().to_owned(),
                    message: Some(e.to_string()),
                };
                run.next_start = Instant::now() + Duration::from_secs(2);
            }
        }
    }

    /// Starts container `i`.
    async fn start(&mut self, i: usize) -> Result<(), StartError> {
        let facts = self.facts().ok_or(StartError::NotPrepared)?;
        let net = self.network.clone().ok_or(StartError::NotPrepared)?;
        let spec = self.runs[i].spec.clone();
        let image = spec.image.clone().unwrap_or_default();
        let binary = self
            .shared
            .images
            .binary_for(&image)
            .map(ToOwned::to_owned)
            .ok_or_else(|| StartError::NoImageRule(image.clone()))?;
        let mut sources = Sources::new(self.shared.client.clone(), &self.namespace);
        let env = env::container_env(&mut sources, &self.pod, &spec, &facts).await?;
        let expand = |v: &[String]| v.iter().map(|s| env::expand(s, &env)).collect::<Vec<_>>();
        let argv = image::container_argv(
            &binary,
            &expand(spec.command.as_deref().unwrap_or_default()),
            &expand(spec.args.as_deref().unwrap_or_default()),
        );
        let binds = self.binds_for(&spec)?;
        let launch = Launch {
            container: spec.name.clone(),
            netns: net.netns.clone(),
            hostname: self.hostname.clone(),
            workdir: spec
                .working_dir
                .clone()
                .map_or_else(|| PathBuf::from("/"), PathBuf::from),
            binds,
            argv,
            env,
            log: self
                .shared
                .cfg
                .logs_dir()
                .join(&self.namespace)
                .join(&self.name)
                .join(format!("{}.log", spec.name)),
        };
        let child = process::spawn(&self.shared.self_exe, &launch)?;
        let run = &mut self.runs[i];
        run.started(child, Instant::now());
        tracing::info!(pod = %self.name, container = %spec.name, pid = ?run.pid, "container started");
        Ok(())
    }

    /// The bind mounts of a container's `volumeMounts`.
    fn binds_for(&self, spec: &Container) -> Result<Vec<Bind>, StartError> {
        let volumes = self.binds.as_ref().ok_or(StartError::NotPrepared)?;
        let mut binds = Vec::new();
        for m in spec.volume_mounts.iter().flatten() {
            let mut source = volumes
                .get(&m.name)
                .cloned()
                .ok_or_else(|| StartError::UnknownVolume(m.name.clone()))?;
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                source = source.join(sub);
                if !source.exists() {
                    std::fs::create_dir_all(&source).map_err(|e| StartError::SubPath {
                        path: source.clone(),
                        source: e,
                    })?;
                }
            }
            let target = PathBuf::from(&m.mount_path);
            self.shared.mounts.ensure(&source, &target)?;
            binds.push(Bind {
                source,
                target,
                read_only: m.read_only.unwrap_or(false),
            });
        }
        Ok(binds)
    }

    /// Runs the probes that are due; liveness and startup failures stop the container.
    async fn probe_due(&mut self) {
        let Some(ip) = self.network.as_ref().map(|n| std::net::IpAddr::V4(n.ip)) else {
            return;
        };
        let grace = self.grace();
        for run in &mut self.runs {
            if run.child.is_none() || run.kill_at.is_some() {
                continue;
            }
            let now = Instant::now();
            if let Some(t) = run
                .startup
                .as_mut()
                .filter(|t| t.verdict() != Verdict::Success)
            {
                if t.due(now) {
                    let ok = probe::run(&t.probe, &run.spec, ip, run.pid).await.is_ok();
                    match t.record(ok, Instant::now()) {
                        Verdict::Success => run.started = true,
                        Verdict::Failure => {
                            tracing::info!(pod = %self.name, container = %run.spec.name, "startup probe failed; restarting");
                            run.stop(grace);
                        }
                        Verdict::Unknown => {}
                    }
                }
                continue;
            }
            if let Some(t) = run.liveness.as_mut().filter(|t| t.due(now)) {
                let result = probe::run(&t.probe, &run.spec, ip, run.pid).await;
                if t.record(result.is_ok(), Instant::now()) == Verdict::Failure {
                    tracing::info!(pod = %self.name, container = %run.spec.name, error = ?result.err(), "liveness probe failed; restarting");
                    run.stop(grace);
                    continue;
                }
            }
            if let Some(t) = run.readiness.as_mut().filter(|t| t.due(now)) {
                let result = probe::run(&t.probe, &run.spec, ip, run.pid).await;
                let verdict = t.record(result.is_ok(), Instant::now());
                let ready = verdict == Verdict::Success;
                if ready != run.ready {
                    tracing::info!(pod = %self.name, container = %run.spec.name, ready, error = ?result.err(), "readiness changed");
                }
                run.ready = ready;
            } else if run.readiness.is_none() {
                run.ready = run.started && !run.init;
            }
        }
    }

    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(secs).unwrap_or(30))
    }

    /// Computes the status and patches `pods/status` when it changed.
    async fn report(&mut self) {
        let images = &self.shared.images;
        let init: Vec<ContainerView> = self
            .runs
            .iter()
            .filter(|r| r.init)
            .map(|r| r.view(images))
            .collect();
        let main: Vec<&ContainerRun> = self.runs.iter().filter(|r| !r.init).collect();
        let views: Vec<ContainerView> = main.iter().map(|r| r.view(images)).collect();
        let finished: Vec<bool> = main.iter().map(|r| r.finished).collect();
        let initialized = self.initialized();
        let all_ready = !main.is_empty() && main.iter().all(|r| r.ready);
        let now = now_time();
        let not_ready = (!all_ready).then_some("ContainersNotReady");
        self.conditions.set(
            ConditionType::Initialized,
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            &now,
        );
        self.conditions
            .set(ConditionType::ContainersReady, all_ready, not_ready, &now);
        self.conditions
            .set(ConditionType::Ready, all_ready, not_ready, &now);
        let phase = status::phase(initialized, &views, &finished);
        let report = status::Report {
            phase,
            conditions: &self.conditions,
            init_containers: &init,
            containers: &views,
            pod_ip: self
                .network
                .as_ref()
                .filter(|_| self.network_ready)
                .map(|n| n.ip),
            host_ip: self.shared.cfg.bridge_ip,
            start_time: &self.start_time,
            message: self.message.clone(),
        };
        let status = status::pod_status(&report);
        let value = status::patch_body(&status);
        self.shared.dns.set_ready(&self.uid, all_ready);
        if self.last_reported.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        match api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(&value),
            )
            .await
        {
            Ok(_) => {
                if phase == Phase::Running || phase.is_terminal() {
                    tracing::debug!(pod = %self.name, phase = phase.as_str(), ready = all_ready, "status reported");
                }
                self.last_reported = Some(value);
            }
            Err(e) => {
                tracing::warn!(pod = %self.name, error = %e, "status update failed; will retry");
                self.last_reported = None;
            }
        }
    }

    /// Stops every process (SIGTERM, `grace`, SIGKILL) and removes the pod's network and
    /// scratch volumes. PVC directories are untouched.
    async fn teardown(&mut self, grace: Duration) {
        tracing::info!(pod = %self.name, namespace = %self.namespace, ?grace, "stopping pod");
        // A stopping pod's volumes are no longer kept current (and are about to be removed).
        if let Some(refresh) = self.volume_refresh.take() {
            refresh.abort();
        }
        for run in &mut self.runs {
            run.kill_at = None;
            run.stop(grace);
        }
        let deadline = Instant::now() + grace + Duration::from_secs(5);
        loop {
            let now = Instant::now();
            self.reap_for_teardown(now);
            if self.runs.iter().all(|r| r.child.is_none()) || now >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(net) = self.network.take() {
            let strays = network::netns_pids(&net.netns).await;
            if !strays.is_empty() {
                tracing::warn!(pod = %self.name, ?strays, "killing stray processes in the pod network namespace");
                process::kill_pids(&strays);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            net.delete().await;
            self.shared.dns.remove_pod(&self.uid);
            if let Ok(mut ipam) = self.shared.ipam.lock() {
                ipam.release(net.ip);
            }
        }
        if let Err(e) = tokio::fs::remove_dir_all(self.pod_dir()).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(pod = %self.name, error = %e, "failed to remove pod directory");
        }
    }

    /// During teardown: wait for exits, SIGKILL past the deadline, no restarts.
    fn reap_for_teardown(&mut self, now: Instant) {
        for run in &mut self.runs {
            if run.poll(now).is_some() {
                run.forget_process();
            }
        }
    }

    /// Completes an API deletion: DELETE with grace 0 and the pod's uid as precondition,
    /// retried for up to 30 s.
    async fn delete_from_api(&self) {
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match api.delete(&self.name, &params).await {
                Ok(_) => {
                    tracing::info!(pod = %self.name, namespace = %self.namespace, "pod deleted");
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(pod = %self.name, error = %e, "pod delete failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::error!(pod = %self.name, error = %e, "giving up deleting pod");
                    return;
                }
            }
        }
    }
}
