//! The observe stage: read the cluster's Kubernetes objects and ask every sidecar for its
//! status (admin API at the pod IP, with the cluster token), then the leader for its membership
//! and metrics. Sidecars are queried concurrently, each with the configured deadline; a sidecar
//! that does not answer is recorded as such, never an error of the whole reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use raft_api::admin::NodeRole;
use raft_api::client::SidecarClient;
use raft_crds::RaftCluster;

use super::model::{LeaderView, Observed, PodView, StatefulSetView};
use super::sidecar_metrics;
use crate::error::Error;
use crate::resources::ClusterSecret;
use crate::resources::names::{ADMIN_PORT, ClusterNames, SIDECAR_CONTAINER};

/// What observe hands on besides the model: the Secret's contents, if it exists.
pub struct Observation {
    pub observed: Observed,
    pub secret: Option<ClusterSecret>,
}

pub fn admin_client(ip: &str, port: u16, token: &str, timeout: Duration) -> SidecarClient {
    let addr = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    SidecarClient::new(None, Some(&addr), Some(token.to_owned()), timeout)
}

pub async fn observe(
    client: &kube::Client,
    rc: &RaftCluster,
    names: &ClusterNames,
    sidecar_timeout: Duration,
) -> Result<Observation, Error> {
    let ns = &names.namespace;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt(&names.secret())
        .await
        .map_err(Error::kube(format!("get secret {}", names.secret())))?
        .map(|s| ClusterSecret::from_secret(&s))
        .transpose()?;

    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let statefulset = sts
        .get_opt(names.statefulset())
        .await
        .map_err(Error::kube(format!(
            "get statefulset {}",
            names.statefulset()
        )))?
        .map(|s| StatefulSetView {
            replicas: s
                .spec
                .as_ref()
                .and_then(|spec| spec.replicas)
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(0),
            update_revision: s.status.and_then(|st| st.update_revision),
        });

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = names.selector_string();
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("list pods {selector}")))?;
    let token = secret.as_ref().map(|s| s.token.clone());
    let views = join_all(
        pods.items
            .into_iter()
            .filter_map(|p| Some((names.ordinal_of(p.metadata.name.as_deref()?)?, p)))
            .map(|(ordinal, pod)| {
                let token = token.clone();
                async move {
                    (
                        ordinal,
                        pod_view(pod, token.as_deref(), sidecar_timeout).await,
                    )
                }
            }),
    )
    .await;
    let pods: BTreeMap<u32, PodView> = views.into_iter().collect();

    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvcs: BTreeSet<u32> = pvc_api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list persistentvolumeclaims"))?
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| {
            let name = c.metadata.name?;
            let pod = name.strip_prefix("data-")?;
            names.ordinal_of(pod)
        })
        .collect();

    let leader = match &token {
        Some(token) => leader_view(&pods, token, sidecar_timeout).await,
        None => None,
    };

    let status = rc.status.clone().unwrap_or_default();
    Ok(Observation {
        observed: Observed {
            names: names.clone(),
            generation: rc.metadata.generation,
            desired_replicas: u32::try_from(rc.spec.replicas).unwrap_or(0),
            paused: rc.spec.paused,
            cluster_id: status.cluster_id.clone(),
            operation: status.operation.clone(),
            recorded_members: status.members.len() as u32,
            statefulset,
            pods,
            pvcs,
            leader,
            now: Timestamp::now(),
        },
        secret,
    })
}

async fn pod_view(pod: Pod, token: Option<&str>, timeout: Duration) -> PodView {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let ip = status
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty());
    let admin_port = admin_port(&pod);
    let node = match (&ip, token) {
        (Some(ip), Some(token)) => admin_client(ip, admin_port, token, timeout)
            .status()
            .await
            .map_err(|e| e.to_string()),
        (None, _) => Err("pod has no IP yet".to_owned()),
        (_, None) => Err("cluster secret missing".to_owned()),
    };
    PodView {
        name,
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ready,
        ip,
        admin_port,
        revision: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("controller-revision-hash").cloned()),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        node,
    }
}

/// The sidecar container's port named `admin` (what the StatefulSet declares), else the default.
fn admin_port(pod: &Pod) -> u16 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter(|c| c.name == SIDECAR_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("admin"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(ADMIN_PORT)
}

/// The member that claims leadership in the highest term, asked for its membership view.
async fn leader_view(
    pods: &BTreeMap<u32, PodView>,
    token: &str,
    timeout: Duration,
) -> Option<LeaderView> {
    let pod = pods
        .values()
        .filter(|p| p.status().is_some_and(|s| s.role == NodeRole::Leader))
        .max_by_key(|p| p.status().map_or(0, |s| s.term))?;
    let client = admin_client(pod.ip.as_deref()?, pod.admin_port, token, timeout);
    let cluster = client.cluster().await.ok()?;
    let health = client
        .metrics()
        .await
        .map(|text| sidecar_metrics::parse(&text))
        .unwrap_or_default();
    Some(LeaderView {
        pod: pod.name.clone(),
        status: pod.status()?.clone(),
        cluster,
        health,
    })
}
