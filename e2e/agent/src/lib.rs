//! Test node agent (a "process kubelet") for the e2e suite on a local control plane, where no
//! container engine exists. It registers a Node, keeps its Lease current, and runs the pods
//! bound to it as local processes: one network namespace per pod on a host bridge, volumes as
//! bind-mounted directories, images mapped to local binaries by configuration.
//!
//! Data flow: [`node`] keeps the Node alive; [`provisioner`] turns PVCs into hostPath PVs;
//! [`pod`] watches this node's pods and runs one worker per pod, which uses [`network`],
//! [`volumes`], [`env`], [`process`] and [`probe`], and reports through `pods/status`;
//! [`dns`] keeps every pod's hosts file current; [`kubelet_api`] serves container logs to
//! `kubectl logs`.

pub mod atomic;
pub mod config;
pub mod dns;
pub mod env;
pub mod image;
pub mod ipam;
pub mod kubelet_api;
pub mod network;
pub mod node;
pub mod pod;
pub mod probe;
pub mod process;
pub mod provisioner;
pub mod volumes;

use std::sync::{Arc, Mutex};

use kube::Client;

use config::AgentConfig;

/// Errors that end the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("no usable kubeconfig: {0}")]
    Kubeconfig(#[source] kube::Error),
    #[error("the API server is unreachable: {0}")]
    Version(#[source] kube::Error),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    Node(#[from] node::NodeError),
    #[error("failed to create {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot find this executable: {0}")]
    SelfExe(#[source] std::io::Error),
    #[error(transparent)]
    KubeletApi(#[from] kubelet_api::KubeletApiError),
    #[error("failed to install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Removes network namespaces (and their processes) left by an earlier agent run.
async fn sweep_stale_netns(prefix: &str) -> Result<(), network::NetworkError> {
    for ns in network::list_netns(prefix).await? {
        tracing::info!(netns = %ns, "removing stale pod network namespace");
        process::kill_pids(&network::netns_pids(&ns).await);
        network::delete_netns(&ns).await;
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Runs the agent until SIGTERM/SIGINT; then stops every pod and reports the node NotReady.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    cfg.validate()?;
    let shutdown = shutdown_signal()?;
    let client = Client::try_default()
        .await
        .map_err(AgentError::Kubeconfig)?;
    let version = client
        .apiserver_version()
        .await
        .map_err(AgentError::Version)?;
    for dir in [cfg.pv_dir(), cfg.pods_dir(), cfg.logs_dir()] {
        std::fs::create_dir_all(&dir)
            .map_err(|source| AgentError::StateDir { path: dir, source })?;
    }
    network::ensure_bridge(&cfg.bridge, cfg.bridge_ip, cfg.pod_prefix_len).await?;
    sweep_stale_netns(&cfg.netns_prefix).await?;
    let pods_dir = cfg.pods_dir();
    if let Ok(entries) = std::fs::read_dir(&pods_dir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }

    let ipam = ipam::Ipam::new(cfg.bridge_ip, cfg.pod_prefix_len);
    let mask = u32::MAX
        .checked_shl(32 - u32::from(cfg.pod_prefix_len))
        .unwrap_or(0);
    let network = std::net::Ipv4Addr::from(u32::from(cfg.bridge_ip) & mask);
    let pod_cidr = format!("{network}/{}", cfg.pod_prefix_len);
    let identity = node::NodeIdentity {
        name: cfg.node_name.clone(),
        internal_ip: cfg.bridge_ip,
        pod_cidr,
        kubelet_version: version.git_version.clone(),
        kubelet_port: cfg.kubelet_port,
    };
    let registered = node::register(&client, &identity).await?;
    let node_uid = registered.metadata.uid.clone().unwrap_or_default();

    let apiserver = match (&cfg.apiserver_host, cfg.apiserver_port) {
        (Some(h), Some(p)) => Some((h.clone(), p)),
        _ => None,
    };
    let dns = dns::DnsRegistry::default();
    let mounts = process::MountPoints::new(cfg.state_dir.join("mountpoints"));
    let shared = Arc::new(pod::Shared {
        client: client.clone(),
        images: image::ImageMap::new(cfg.images.clone()),
        ipam: Mutex::new(ipam),
        dns: dns.clone(),
        mounts: mounts.clone(),
        self_exe: std::env::current_exe().map_err(AgentError::SelfExe)?,
        apiserver,
        cfg: cfg.clone(),
    });

    if let (Some(cert), Some(key)) = (&cfg.kubelet_cert, &cfg.kubelet_key) {
        let addr = std::net::SocketAddr::from((cfg.bridge_ip, cfg.kubelet_port));
        kubelet_api::serve(addr, cert, key, cfg.logs_dir()).await?;
    }
    let provisioner =
        provisioner::Provisioner::new(client.clone(), cfg.pv_dir(), cfg.node_name.clone());
    provisioner.sweep_orphans().await;
    let background = [
        tokio::spawn(node::heartbeat(
            client.clone(),
            identity.clone(),
            node_uid,
            cfg.lease_renew,
        )),
        tokio::spawn(dns::run_writer(dns.clone(), cfg.cluster_domain.clone())),
        tokio::spawn(dns::watch_services(client.clone(), dns)),
        tokio::spawn(provisioner.clone().watch_claims()),
        tokio::spawn(provisioner.watch_volumes()),
    ];
    tracing::info!(node = %cfg.node_name, version = %version.git_version, "agent running");

    pod::run(shared, shutdown).await;

    for task in &background {
        task.abort();
    }
    mounts.remove_all();
    if let Err(e) = node::report_status(&client, &identity, false).await {
        tracing::warn!(error = %e, "could not report the node NotReady");
    }
    tracing::info!("agent stopped");
    Ok(())
}
