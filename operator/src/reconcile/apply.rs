//! The apply stage: server-side apply of the owned objects (every reconcile, with the
//! StatefulSet size the plan chose), then the plan's one action against the API server or the
//! cluster's leader. Every action is idempotent (see `plan`), so repeating one after a crash is
//! harmless.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use raft_crds::RaftCluster;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::model::Observed;
use super::observe::AdminAccess;
use super::plan::Action;
use crate::error::Error;
use crate::resources::names::{ClusterNames, FIELD_MANAGER};
use crate::resources::tls::ClusterPki;
use crate::resources::{self, ClusterSecret, StatefulSetParams};

/// Apply the Secrets (token, CA, members' certificates), headless Service,
/// PodDisruptionBudget and StatefulSet.
pub async fn apply_owned(
    client: &kube::Client,
    rc: &RaftCluster,
    names: &ClusterNames,
    secret: &ClusterSecret,
    pki: &ClusterPki,
    sts: &StatefulSetParams,
) -> Result<(), Error> {
    let ns = &names.namespace;
    ssa::<Secret>(
        client,
        ns,
        &names.secret(),
        &resources::secret(rc, names, secret),
    )
    .await?;
    ssa::<Secret>(client, ns, &names.ca_secret(), &pki.ca_secret(rc, names)).await?;
    // Before the StatefulSet: a pod it starts finds its certificate already there.
    ssa::<Secret>(
        client,
        ns,
        &names.tls_secret(),
        &pki.members_secret(rc, names),
    )
    .await?;
    ssa::<Service>(
        client,
        ns,
        names.service(),
        &resources::headless_service(rc, names),
    )
    .await?;
    ssa::<PodDisruptionBudget>(
        client,
        ns,
        names.pdb(),
        &resources::pod_disruption_budget(rc, names),
    )
    .await?;
    ssa::<StatefulSet>(
        client,
        ns,
        names.statefulset(),
        &resources::statefulset(rc, names, sts),
    )
    .await
}

async fn ssa<K>(client: &kube::Client, ns: &str, name: &str, obj: &K) -> Result<(), Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))?;
    Ok(())
}

fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Perform the plan's action.
pub async fn act(
    client: &kube::Client,
    o: &Observed,
    action: &Action,
    access: &AdminAccess,
) -> Result<(), Error> {
    let ns = &o.names.namespace;
    let leader = || -> Result<(String, raft_api::client::SidecarClient), Error> {
        let l = o
            .leader
            .as_ref()
            .ok_or(Error::InvalidObject("leader (the plan acted without one)"))?;
        sidecar_of(o, &l.pod, access).map(|c| (l.pod.clone(), c))
    };
    match action {
        Action::None => Ok(()),
        Action::Initialize { pod, members } => {
            let c = sidecar_of(o, pod, access)?;
            c.initialize(members.clone())
                .await
                .map(|_| ())
                .map_err(|source| Error::Sidecar {
                    pod: pod.clone(),
                    call: "initialize",
                    source,
                })
        }
        Action::AddLearner(spec) => {
            let (pod, c) = leader()?;
            c.add_learner(spec)
                .await
                .map(|_| ())
                .map_err(|source| Error::Sidecar {
                    pod,
                    call: "add learner",
                    source,
                })
        }
        Action::Promote(id) => {
            let (pod, c) = leader()?;
            c.promote(*id)
                .await
                .map(|_| ())
                .map_err(|source| Error::Sidecar {
                    pod,
                    call: "promote",
                    source,
                })
        }
        Action::Remove(id) => {
            let (pod, c) = leader()?;
            c.remove(*id)
                .await
                .map(|_| ())
                .map_err(|source| Error::Sidecar {
                    pod,
                    call: "remove member",
                    source,
                })
        }
        Action::DeletePod { name, uid } => delete_pod(client, ns, name, uid).await,
        Action::DeletePvc { name } => delete_pvc(client, ns, name).await,
        Action::DiscardVolume { pod, uid, pvc } => {
            // The claim first: it stays (protected) until the pod is gone, so the recreated
            // pod gets a new, empty claim.
            delete_pvc(client, ns, pvc).await?;
            delete_pod(client, ns, pod, uid).await
        }
    }
}

fn sidecar_of(
    o: &Observed,
    pod: &str,
    access: &AdminAccess,
) -> Result<raft_api::client::SidecarClient, Error> {
    let view = o.pods.values().find(|p| p.name == pod);
    let ip = view
        .and_then(|p| p.ip.as_deref())
        .ok_or_else(|| Error::NoPodAddress(pod.to_owned()))?;
    let port = view.map_or(crate::resources::names::ADMIN_PORT, |p| p.admin_port);
    access
        .client(pod, ip, port)
        .map_err(|reason| Error::AdminClient {
            pod: pod.to_owned(),
            reason,
        })
}

async fn delete_pod(client: &kube::Client, ns: &str, name: &str, uid: &str) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        // 409: the uid precondition failed, the pod was already replaced.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        r => ignore_not_found(r).map_err(Error::kube(format!("delete pod {name}"))),
    }
}

async fn delete_pvc(client: &kube::Client, ns: &str, name: &str) -> Result<(), Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    ignore_not_found(api.delete(name, &DeleteParams::default()).await)
        .map_err(Error::kube(format!("delete persistentvolumeclaim {name}")))
}
