//! The Node object and its heartbeats: registers the Node (capacity, addresses, nodeInfo),
//! reports `Ready=True` with the pressure conditions False, renews the Lease in
//! `kube-node-lease` every `--lease-renew` and refreshes the condition heartbeats every few
//! renewals. Without the Lease the node lifecycle controller marks the node Unknown after ~40 s,
//! taints it and turns every pod NotReady. On shutdown the node is reported NotReady.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("failed to register node {node}: {source}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to update node {node} status: {source}")]
    Status {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to renew lease of node {node}: {source}")]
    Lease {
        node: String,
        #[source]
        source: kube::Error,
    },
}

const FIELD_MANAGER: &str = "raft-test-agent";
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the Node object says about this machine.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub name: String,
    pub internal_ip: Ipv4Addr,
    pub pod_cidr: String,
    pub kubelet_version: String,
    pub kubelet_port: u16,
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn resources() -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    [
        ("cpu", cpus.to_string()),
        ("memory", "16Gi".to_owned()),
        ("pods", "110".to_owned()),
        ("ephemeral-storage", "100Gi".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), quantity(&v)))
    .collect()
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, now: &Time) -> NodeCondition {
    NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The node status this agent reports; `ready` false only on shutdown.
pub fn node_status(id: &NodeIdentity, ready: bool) -> NodeStatus {
    let now = Time(Timestamp::now());
    let (status, reason, message) = if ready {
        (
            "True",
            "KubeletReady",
            "raft-test-agent is posting ready status",
        )
    } else {
        ("False", "KubeletNotReady", "raft-test-agent stopped")
    };
    NodeStatus {
        capacity: Some(resources()),
        allocatable: Some(resources()),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "ok",
                &now,
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "ok",
                &now,
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "ok",
                &now,
            ),
            condition("Ready", status, reason, message, &now),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: id.internal_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: id.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(id.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH
                .replace("x86_64", "amd64")
                .replace("aarch64", "arm64"),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            container_runtime_version: "process://raft-test-agent".to_owned(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: id.kubelet_version.clone(),
            machine_id: String::new(),
            operating_system: "linux".to_owned(),
            os_image: "raft-test-agent (processes, no containers)".to_owned(),
            system_uuid: String::new(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Creates the Node if missing (labels, podCIDR) and reports it Ready.
pub async fn register(client: &Client, id: &NodeIdentity) -> Result<Node, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", id.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("node.kubernetes.io/instance-type", "raft-test-agent"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let node = Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(id.pod_cidr.clone()),
            pod_cidrs: Some(vec![id.pod_cidr.clone()]),
            ..NodeSpec::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %id.name, "registered node"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = %id.name, "node already registered");
        }
        Err(source) => {
            return Err(NodeError::Register {
                node: id.name.clone(),
                source,
            });
        }
    }
    report_status(client, id, true).await
}

/// Patches the node status (conditions with fresh heartbeat times).
pub async fn report_status(
    client: &Client,
    id: &NodeIdentity,
    ready: bool,
) -> Result<Node, NodeError> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = serde_json::json!({ "status": node_status(id, ready) });
    api.patch_status(&id.name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(|source| NodeError::Status {
            node: id.name.clone(),
            source,
        })
}

/// Creates or renews the node's Lease (server-side apply, so create and renew are one call).
pub async fn renew_lease(
    client: &Client,
    id: &NodeIdentity,
    node_uid: &str,
    duration: Duration,
) -> Result<(), NodeError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            namespace: Some(LEASE_NAMESPACE.to_owned()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Node".to_owned(),
                name: id.name.clone(),
                uid: node_uid.to_owned(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(id.name.clone()),
            lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(40)),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    let mut value = serde_json::to_value(&lease).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("apiVersion".into(), "coordination.k8s.io/v1".into());
        obj.insert("kind".into(), "Lease".into());
    }
    api.patch(
        &id.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map_err(|source| NodeError::Lease {
        node: id.name.clone(),
        source,
    })?;
    Ok(())
}

/// Renews the Lease every `every` and the node status every sixth renewal, until cancelled.
/// Errors are logged and retried on the next tick: a missed renewal is not fatal.
pub async fn heartbeat(client: Client, id: NodeIdentity, node_uid: String, every: Duration) {
    let lease_duration = (every * 4).max(Duration::from_secs(40));
    let mut tick = tokio::time::interval(every);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        if let Err(e) = renew_lease(&client, &id, &node_uid, lease_duration).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
        if n % 6 == 5
            && let Err(e) = report_status(&client, &id, true).await
        {
            tracing::warn!(error = %e, "node status update failed");
        }
        n += 1;
    }
}
