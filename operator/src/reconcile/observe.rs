//! The observe stage: read the cluster's Kubernetes objects and ask every sidecar for its
//! status (admin API at the pod IP, over mutual TLS, with the cluster token), then the leader for its membership
//! and metrics. Sidecars are queried concurrently, each with the configured deadline; a sidecar
//! that does not answer is recorded as such, never an error of the whole reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use raft_api::admin::NodeRole;
use raft_api::client::{ClientTls, SidecarClient};
use raft_crds::RaftCluster;
use tracing::warn;

use super::model::{LeaderView, Observed, PodView, StatefulSetView};
use super::sidecar_metrics;
use crate::error::Error;
use crate::resources::ClusterSecret;
use crate::resources::cert_manager::{CERTIFICATE_FOR_LABEL, Issued};
use crate::resources::names::{ADMIN_PORT, ClusterNames, SIDECAR_CONTAINER};
use crate::resources::pod_template::{
    AppliedTemplate, TEMPLATE_INPUTS_ANNOTATION, TEMPLATE_RENDERED_ANNOTATION,
};
use crate::resources::tls::ClusterPki;

/// What observe hands on besides the model: the Secrets' contents, if they exist.
pub struct Observation {
    pub observed: Observed,
    pub secret: Option<ClusterSecret>,
    /// What `<name>-ca` and `<name>-tls` hold.
    pub pki: Option<ClusterPki>,
    /// With `spec.tls.issuerRef`: what cert-manager has issued.
    pub issued: Option<Issued>,
}

/// Largest admin answer the operator reads (status, membership, `/metrics` of up to nine
/// members are a few KiB): a member that answers more cannot fill the operator's memory.
const ADMIN_RESPONSE_LIMIT: usize = 1 << 20;

/// How the operator reaches members' admin APIs: the cluster token and, once the cluster has
/// its CA, the operator's client certificate (each pod is dialled at its IP and must present
/// a certificate for its stable DNS name).
#[derive(Clone)]
pub struct AdminAccess {
    pub token: String,
    pub tls: Option<ClientTls>,
    pub names: ClusterNames,
    pub timeout: Duration,
}

impl AdminAccess {
    /// A client of the admin API of `pod` at `ip:port`.
    pub fn client(&self, pod: &str, ip: &str, port: u16) -> Result<SidecarClient, String> {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("pod IP {ip:?} is not an IP address"))?;
        let Some(tls) = &self.tls else {
            let addr = SocketAddr::new(ip, port).to_string();
            return Ok(SidecarClient::new(
                None,
                Some(&addr),
                Some(self.token.clone()),
                self.timeout,
            )
            .with_response_limit(ADMIN_RESPONSE_LIMIT));
        };
        let host = self.names.pod_host(pod);
        let connector = tls
            .connector_for(&host, SocketAddr::new(ip, port))
            .map_err(|e| e.to_string())?;
        Ok(SidecarClient::new(
            None,
            Some(&format!("https://{host}:{port}")),
            Some(self.token.clone()),
            self.timeout,
        )
        .with_tls(&connector)
        .with_response_limit(ADMIN_RESPONSE_LIMIT))
    }
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
    let ca = secrets
        .get_opt(&names.ca_secret())
        .await
        .map_err(Error::kube(format!("get secret {}", names.ca_secret())))?;
    let members = secrets
        .get_opt(&names.tls_secret())
        .await
        .map_err(Error::kube(format!("get secret {}", names.tls_secret())))?;
    let issuer = rc.spec.tls.as_ref().and_then(|t| t.issuer_ref.as_ref());
    let (pki, issued) = match issuer {
        None => (
            ClusterPki::observed(names, ca.as_ref(), members.as_ref())?,
            None,
        ),
        Some(_) => {
            // Only the Secrets cert-manager wrote for this cluster (its labels, set through
            // each Certificate's secretTemplate).
            let selector = format!(
                "app.kubernetes.io/instance={},{CERTIFICATE_FOR_LABEL}",
                names.name
            );
            let issued = secrets
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::kube("list the Secrets cert-manager issued"))?;
            let issued = Issued::from_secrets(names, &issued.items, std::time::SystemTime::now());
            let written = ca
                .as_ref()
                .map(|ca| ClusterPki::written(ca, members.as_ref()))
                .transpose()?;
            (written, Some(issued))
        }
    };
    let access = secret.as_ref().map(|s| AdminAccess {
        token: s.token.clone(),
        tls: pki.as_ref().map(ClusterPki::operator_tls),
        names: names.clone(),
        timeout: sidecar_timeout,
    });

    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let statefulset = sts
        .get_opt(names.statefulset())
        .await
        .map_err(Error::kube(format!(
            "get statefulset {}",
            names.statefulset()
        )))?;
    let statefulset_uid = statefulset.as_ref().and_then(|s| s.metadata.uid.clone());
    let statefulset = statefulset.map(|s| StatefulSetView {
        replicas: s
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0),
        applied: AppliedTemplate {
            inputs: s.annotations().get(TEMPLATE_INPUTS_ANNOTATION).cloned(),
            rendered: s.annotations().get(TEMPLATE_RENDERED_ANNOTATION).cloned(),
            template: s.spec.map(|spec| spec.template).unwrap_or_default(),
        },
        update_revision: s.status.and_then(|st| st.update_revision),
    });

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = names.selector_string();
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!("list pods {selector}")))?;
    let (ours, foreign): (Vec<Pod>, Vec<Pod>) = pods
        .items
        .into_iter()
        .partition(|p| controlled_by_statefulset(p, names, statefulset_uid.as_deref()));
    for pod in &foreign {
        // It carries our labels, but our StatefulSet did not make it: it gets neither the
        // token nor a call.
        warn!(
            cluster = %names.name,
            pod = pod.metadata.name.as_deref().unwrap_or_default(),
            "pod with the cluster's labels is not controlled by its StatefulSet; ignored"
        );
    }
    let views = join_all(
        ours.into_iter()
            .filter_map(|p| Some((names.ordinal_of(p.metadata.name.as_deref()?)?, p)))
            .map(|(ordinal, pod)| {
                let access = access.clone();
                async move { (ordinal, pod_view(pod, access.as_ref()).await) }
            }),
    )
    .await;
    let pods: BTreeMap<u32, PodView> = views.into_iter().collect();

    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    // The claim template labels every claim with the selector labels.
    let pvcs: BTreeSet<u32> = pvc_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "list persistentvolumeclaims {selector}"
        )))?
        .items
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter_map(|c| {
            let name = c.metadata.name?;
            let pod = name.strip_prefix("data-")?;
            names.ordinal_of(pod)
        })
        .collect();

    let leader = match &access {
        Some(access) => leader_view(&pods, access).await,
        None => None,
    };

    let status = rc.status.clone().unwrap_or_default();
    Ok(Observation {
        observed: Observed {
            names: names.clone(),
            generation: rc.metadata.generation,
            desired_replicas: u32::try_from(rc.spec.replicas).unwrap_or(0),
            paused: rc.spec.paused,
            recovery_request: rc
                .annotations()
                .get(crate::reconcile::plan::RECOVER_FROM_ANNOTATION)
                .filter(|v| status.recovery.as_ref().is_none_or(|r| r.request != **v))
                .cloned(),
            recorded_commit_index: status.commit_index.and_then(|i| u64::try_from(i).ok()),
            from_backup: rc
                .spec
                .bootstrap
                .as_ref()
                .and_then(|b| b.from_backup.clone()),
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
        pki,
        issued,
    })
}

/// Whether `pod`'s controller is the cluster's StatefulSet (name and uid), the only pods the
/// operator calls with the cluster's token and client certificate.
fn controlled_by_statefulset(pod: &Pod, names: &ClusterNames, uid: Option<&str>) -> bool {
    let Some(uid) = uid else {
        return false;
    };
    pod.metadata.owner_references.iter().flatten().any(|r| {
        r.controller == Some(true)
            && r.kind == "StatefulSet"
            && r.name == names.statefulset()
            && r.uid == uid
    })
}

async fn pod_view(pod: Pod, access: Option<&AdminAccess>) -> PodView {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let ip = status
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty());
    let admin_port = admin_port(&pod);
    let node = match (&ip, access) {
        (Some(ip), Some(access)) => match access.client(&name, ip, admin_port) {
            Ok(client) => client.status().await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
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
async fn leader_view(pods: &BTreeMap<u32, PodView>, access: &AdminAccess) -> Option<LeaderView> {
    let pod = pods
        .values()
        .filter(|p| p.status().is_some_and(|s| s.role == NodeRole::Leader))
        .max_by_key(|p| p.status().map_or(0, |s| s.term))?;
    let client = access
        .client(&pod.name, pod.ip.as_deref()?, pod.admin_port)
        .ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn pod_owned_by(kind: &str, name: &str, uid: &str, controller: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some("prod-0".into());
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(controller),
            ..OwnerReference::default()
        }]);
        pod
    }

    #[test]
    fn only_pods_the_clusters_statefulset_controls_are_called() {
        let names = ClusterNames::new("prod", "team-a", "cluster.local");
        let ours = pod_owned_by("StatefulSet", "prod", "sts-uid", true);
        assert!(controlled_by_statefulset(&ours, &names, Some("sts-uid")));
        // A pod someone made with the cluster's labels, or left by an older StatefulSet.
        for foreign in [
            Pod::default(),
            pod_owned_by("StatefulSet", "prod", "other-uid", true),
            pod_owned_by("StatefulSet", "other", "sts-uid", true),
            pod_owned_by("ReplicaSet", "prod", "sts-uid", true),
            pod_owned_by("StatefulSet", "prod", "sts-uid", false),
        ] {
            assert!(!controlled_by_statefulset(
                &foreign,
                &names,
                Some("sts-uid")
            ));
        }
        assert!(
            !controlled_by_statefulset(&ours, &names, None),
            "no StatefulSet, no pod of ours"
        );
    }
}
