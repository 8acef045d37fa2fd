//! The apply stage: server-side apply of the owned objects (every reconcile, with the
//! StatefulSet size the plan chose), then the plan's one action against the API server or the
//! cluster's leader. Every action is idempotent (see `plan`), so repeating one after a crash is
//! harmless.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, Preconditions};
use raft_crds::RaftCluster;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use super::model::Observed;
use super::observe::AdminAccess;
use super::plan::Action;
use crate::error::Error;
use crate::resources::cert_manager::{self, Certificate};
use crate::resources::names::{ClusterNames, FIELD_MANAGER};
use crate::resources::tls::ClusterPki;
use crate::resources::{self, ClusterSecret, OperatorPods, StatefulSetParams};

/// Apply the Secrets (token, CA, members' certificates), headless Service,
/// PodDisruptionBudget, NetworkPolicy (or delete ours when it is off) and StatefulSet.
///
/// An object of one of those names that this RaftCluster does not control (no controller
/// owner reference with its uid) is left alone and the reconcile fails with
/// [`Error::NotOwned`]: applying over it would take it over, and deleting the RaftCluster would
/// then delete it.
pub async fn apply_owned(
    client: &kube::Client,
    rc: &RaftCluster,
    names: &ClusterNames,
    owned: &OwnedObjects<'_>,
) -> Result<(), Error> {
    let apply = Applier::of(client, rc, names)?;
    // The identity is retained (no owner reference): the one a deleted RaftCluster of this
    // name left behind is adopted.
    apply
        .ssa_as::<Secret>(
            &names.secret(),
            &resources::secret(names, owned.secret),
            Claim::Retained,
        )
        .await?;
    apply
        .ssa::<Secret>(&names.ca_secret(), &owned.pki.ca_secret(rc, names))
        .await?;
    // Before the StatefulSet: a pod it starts finds its certificate already there.
    apply
        .ssa::<Secret>(&names.tls_secret(), &owned.pki.members_secret(rc, names))
        .await?;
    apply
        .ssa::<Service>(names.service(), &resources::headless_service(rc, names))
        .await?;
    apply
        .ssa::<PodDisruptionBudget>(names.pdb(), &resources::pod_disruption_budget(rc, names))
        .await?;
    if rc.spec.network_policy.enabled {
        let policy = resources::network_policy(rc, names, owned.operator_pods);
        apply
            .ssa::<NetworkPolicy>(names.network_policy(), &policy)
            .await?;
    } else {
        apply
            .delete_if_ours::<NetworkPolicy>(names.network_policy())
            .await?;
    }
    apply
        .ssa::<StatefulSet>(
            names.statefulset(),
            &resources::statefulset(rc, names, owned.statefulset),
        )
        .await
}

/// With `spec.tls.issuerRef`: the cert-manager `Certificate`s of the operator and of the first
/// `members` members. Those of members no longer needed stay (a few hundred bytes each) and go
/// with the RaftCluster.
pub async fn apply_certificates(
    client: &kube::Client,
    rc: &RaftCluster,
    names: &ClusterNames,
    issuer: &raft_crds::IssuerRef,
    members: u32,
) -> Result<(), Error> {
    let apply = Applier::of(client, rc, names)?;
    let operator = cert_manager::operator_certificate(rc, names, issuer);
    let members = (0..members).map(|o| {
        let pod = names.pod(o);
        cert_manager::member_certificate(rc, names, issuer, &pod)
    });
    for certificate in std::iter::once(operator).chain(members) {
        let name = certificate.metadata.name.clone().unwrap_or_default();
        apply
            .ssa::<Certificate>(&name, &certificate)
            .await
            .map_err(|e| match e {
                Error::Kube {
                    source: kube::Error::Api(s),
                    ..
                } if s.code == 404 => Error::CertManagerMissing,
                other => other,
            })?;
    }
    Ok(())
}

/// What [`apply_owned`] builds the objects from, besides the RaftCluster.
pub struct OwnedObjects<'a> {
    pub secret: &'a ClusterSecret,
    pub pki: &'a ClusterPki,
    pub statefulset: &'a StatefulSetParams,
    pub operator_pods: Option<&'a OperatorPods>,
}

/// Server-side apply of one RaftCluster's objects, refusing objects it does not control.
struct Applier<'a> {
    client: &'a kube::Client,
    ns: &'a str,
    /// The RaftCluster's uid.
    owner: &'a str,
    names: &'a ClusterNames,
}

impl<'a> Applier<'a> {
    fn of(
        client: &'a kube::Client,
        rc: &'a RaftCluster,
        names: &'a ClusterNames,
    ) -> Result<Self, Error> {
        let owner = rc
            .metadata
            .uid
            .as_deref()
            .ok_or(Error::InvalidObject("metadata.uid"))?;
        Ok(Applier {
            client,
            ns: &names.namespace,
            owner,
            names,
        })
    }
}

/// A namespaced kind the operator applies.
trait Applied:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
{
}

impl<K> Applied for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
{
}

/// Which existing object of a name the cluster may apply over.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Only one it controls (owner reference with its uid).
    Controlled,
    /// Also one without any controller that carries the cluster's labels: what a deleted
    /// RaftCluster of the same name left behind.
    Retained,
}

impl Applier<'_> {
    async fn ssa<K: Applied>(&self, name: &str, obj: &K) -> Result<(), Error> {
        self.ssa_as(name, obj, Claim::Controlled).await
    }

    async fn ssa_as<K: Applied>(&self, name: &str, obj: &K, claim: Claim) -> Result<(), Error> {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        let params = match self.existing::<K>(&api, name).await? {
            // Creating: nobody else's fields to override.
            None => PatchParams::apply(FIELD_MANAGER),
            // Ours: our fields win over edits made by hand (drift is reverted).
            Some(meta)
                if controlled_by(&meta, self.owner)
                    || (claim == Claim::Retained && left_behind(&meta, self.names)) =>
            {
                PatchParams::apply(FIELD_MANAGER).force()
            }
            Some(_) => {
                return Err(Error::NotOwned {
                    kind: K::kind(&()).into_owned(),
                    name: name.to_owned(),
                });
            }
        };
        api.patch(name, &params, &Patch::Apply(obj))
            .await
            .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))?;
        Ok(())
    }

    /// Delete `name` if this RaftCluster controls it; anything else of that name is left alone.
    async fn delete_if_ours<K: Applied>(&self, name: &str) -> Result<(), Error> {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        let Some(existing) = self.existing::<K>(&api, name).await? else {
            return Ok(());
        };
        if !controlled_by(&existing, self.owner) {
            return Ok(());
        }
        // Only the object just checked, not one re-created under that name since.
        let that_one = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        ignore_not_found(api.delete(name, &that_one).await)
            .map_err(Error::kube(format!("delete {} {name}", K::kind(&()))))
    }

    /// The metadata of `name`, if it exists.
    async fn existing<K: Applied>(
        &self,
        api: &Api<K>,
        name: &str,
    ) -> Result<Option<ObjectMeta>, Error> {
        let existing = api
            .get_metadata_opt(name)
            .await
            .map_err(Error::kube(format!("get {} {name}", K::kind(&()))))?;
        Ok(existing.map(|o| o.metadata))
    }
}

/// Whether `meta` has no controller and the labels this cluster gives its objects.
fn left_behind(meta: &ObjectMeta, names: &ClusterNames) -> bool {
    let no_controller = !meta
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true));
    let labels = meta.labels.clone().unwrap_or_default();
    no_controller && names.labels().iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether `meta`'s controller owner reference is the object with uid `owner`.
fn controlled_by(meta: &ObjectMeta, owner: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == owner)
}

fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Perform the plan's action.
/// What an action left to record besides the step's next phase.
#[derive(Debug)]
pub enum Acted {
    Done,
    /// A backup is staged in the first member ([`Action::RestoreFromBackup`]).
    Restored(Option<crate::backup::restore::Staged>),
}

pub async fn act(
    client: &kube::Client,
    o: &Observed,
    action: &Action,
    access: &AdminAccess,
    jobs: &crate::backup::volume::JobParams,
) -> Result<Acted, Error> {
    if let Action::RestoreFromBackup { pod, from } = action {
        let c = sidecar_of(o, pod, access)?;
        return crate::backup::restore::restore(client, &o.names, pod, &c, from, jobs)
            .await
            .map(Acted::Restored);
    }
    act_on_cluster(client, o, action, access)
        .await
        .map(|()| Acted::Done)
}

async fn act_on_cluster(
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
        // Handled by `act`.
        Action::None | Action::RestoreFromBackup { .. } => Ok(()),
        Action::Recover { pod } => {
            let c = sidecar_of(o, pod, access)?;
            match c.recover().await {
                Ok(done) => {
                    tracing::warn!(
                        %pod,
                        last_log_index = done.last_log_index,
                        "recovery accepted: the survivor restarts as the only voter"
                    );
                    Ok(())
                }
                // Accepted by an earlier call: it is restarting to carry it out.
                Err(e) if e.code() == Some(raft_api::ErrorCode::ShuttingDown) => Ok(()),
                Err(source) => Err(Error::Sidecar {
                    pod: pod.clone(),
                    call: "recover",
                    source,
                }),
            }
        }
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
            let (mut pod, mut c) = leader()?;
            let leads = o
                .leader
                .as_ref()
                .is_some_and(|l| l.status.node_id.parse() == Ok(*id));
            if leads && let Some(successor) = hand_off(o, access, &pod, &c).await {
                (pod, c) = successor;
            }
            c.remove(*id)
                .await
                .map(|_| ())
                .map_err(|source| Error::Sidecar {
                    pod,
                    call: "remove member",
                    source,
                })
        }
        Action::EvictPod { name, uid } => {
            if o.leader.as_ref().is_some_and(|l| l.pod == *name) {
                let (pod, c) = leader()?;
                hand_off(o, access, &pod, &c).await;
            }
            evict_pod(client, ns, name, uid).await
        }
        Action::DeletePvc { name } => delete_pvc(client, ns, name).await,
        Action::DiscardVolume { pod, uid, pvc } => {
            // The claim first: it stays (protected) until the pod is gone, so the recreated
            // pod gets a new, empty claim.
            delete_pvc(client, ns, pvc).await?;
            delete_pod(client, ns, pod, uid).await
        }
    }
}

/// Before the leader is restarted or removed: ask it to hand leadership to its most caught-up
/// voter, so the cluster need not wait out an election timeout. Best effort: on failure (a
/// sidecar that predates the call, no voter caught up) the action goes ahead as before, and
/// one election follows. Returns the new leader's pod and client.
async fn hand_off(
    o: &Observed,
    access: &AdminAccess,
    pod: &str,
    leader: &raft_api::client::SidecarClient,
) -> Option<(String, raft_api::client::SidecarClient)> {
    match leader.transfer_leadership(None).await {
        Ok(done) => {
            info!(
                from = pod,
                to = %done.leader_id,
                term = done.term,
                took_ms = done.took_ms,
                "leadership handed over"
            );
            let client = sidecar_of(o, &done.leader_id, access).ok()?;
            Some((done.leader_id, client))
        }
        Err(e) => {
            tracing::warn!(pod, error = %e, "leadership handoff failed; going ahead without it");
            None
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

/// Evict `name` if it is still the pod `uid`. The PodDisruptionBudget (one member down at a
/// time) decides with any node drain in progress: a refusal (429) is not an error, the plan
/// asks again at the next reconcile.
async fn evict_pod(client: &kube::Client, ns: &str, name: &str, uid: &str) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        }),
        ..EvictParams::default()
    };
    match api.evict(name, &params).await {
        Err(kube::Error::Api(s)) if s.code == 429 => {
            info!(pod = name, reason = %s.message, "eviction refused for now (PodDisruptionBudget); asking again at the next reconcile");
            Ok(())
        }
        // 409: the uid precondition failed, the pod was already replaced.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        r => ignore_not_found(r).map_err(Error::kube(format!("evict pod {name}"))),
    }
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
