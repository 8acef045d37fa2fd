//! A tiny volume provisioner: there is no storage driver, so for every Pending PVC without a
//! volume the agent creates a `hostPath` PersistentVolume pre-bound to it (claimRef), backed by
//! `<state>/volumes/pvc-<uid>`; the PV controller then binds the claim and the scheduler can place
//! the pod. When the claim is deleted the PV becomes Released (or Failed: no plugin can "delete"
//! a hostPath volume), and the agent removes the directory and the PV. The directory therefore
//! outlives pods and dies with its PVC, like a dynamically provisioned volume with reclaim Delete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "raft-test-agent";

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("failed to create PV {pv}: {source}")]
    CreatePv {
        pv: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to delete PV {pv}: {source}")]
    DeletePv {
        pv: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to create or remove {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Provisions for claims, reclaims released volumes.
#[derive(Clone)]
pub struct Provisioner {
    client: Client,
    dir: PathBuf,
    node: String,
}

/// Name of the PV made for a claim.
fn pv_name(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}

/// The PV pre-bound to `claim`, or None when the claim needs nothing from us.
pub fn pv_for_claim(
    claim: &PersistentVolumeClaim,
    dir: &Path,
    node: &str,
) -> Option<PersistentVolume> {
    let spec = claim.spec.as_ref()?;
    let pending = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
        == "Pending";
    if !pending || spec.volume_name.is_some() || claim.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if spec.volume_mode.as_deref() == Some("Block") {
        return None;
    }
    let uid = claim.metadata.uid.clone()?;
    let name = pv_name(&uid);
    let size = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity("1Gi".to_owned()));
    Some(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                "pv.kubernetes.io/provisioned-by".to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([("storage".to_owned(), size)])),
            access_modes: spec.access_modes.clone(),
            host_path: Some(HostPathVolumeSource {
                path: dir.join(&name).to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".to_owned()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("PersistentVolumeClaim".to_owned()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: Some(uid),
                ..ObjectReference::default()
            }),
            persistent_volume_reclaim_policy: Some("Delete".to_owned()),
            storage_class_name: Some(spec.storage_class_name.clone().unwrap_or_default()),
            volume_mode: Some("Filesystem".to_owned()),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".to_owned(),
                            operator: "In".to_owned(),
                            values: Some(vec![node.to_owned()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
            }),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    })
}

/// Whether one of our PVs has lost its claim and should go.
fn reclaimable(pv: &PersistentVolume) -> bool {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Released") | Some("Failed")) && pv.metadata.deletion_timestamp.is_none()
}

impl Provisioner {
    pub fn new(client: Client, dir: PathBuf, node: String) -> Self {
        Self { client, dir, node }
    }

    async fn provision(&self, claim: &PersistentVolumeClaim) -> Result<(), ProvisionError> {
        let Some(pv) = pv_for_claim(claim, &self.dir, &self.node) else {
            return Ok(());
        };
        let name = pv.metadata.name.clone().unwrap_or_default();
        let path = self.dir.join(&name);
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|source| ProvisionError::Dir { path, source })?;
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => {
                tracing::info!(pv = %name, claim = ?claim.metadata.name, "provisioned hostPath PV");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(source) => Err(ProvisionError::CreatePv { pv: name, source }),
        }
    }

    async fn reclaim(&self, pv: &PersistentVolume) -> Result<(), ProvisionError> {
        if !reclaimable(pv) {
            return Ok(());
        }
        let name = pv.metadata.name.clone().unwrap_or_default();
        let path = self.dir.join(&name);
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ProvisionError::Dir { path, source }),
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(pv = %name, "reclaimed PV and removed its directory");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(ProvisionError::DeletePv { pv: name, source }),
        }
    }

    /// Watches claims and provisions for the pending ones, until the process ends.
    pub async fn watch_claims(self) {
        let api: Api<PersistentVolumeClaim> = Api::all(self.client.clone());
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let claim = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "claim watch failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = self.provision(&claim).await {
                tracing::warn!(error = %e, "provisioning failed");
            }
        }
    }

    /// Watches our PVs and reclaims released ones, until the process ends.
    pub async fn watch_volumes(self) {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        let mut stream = watcher(api, cfg).boxed();
        while let Some(event) = stream.next().await {
            let pv = match event {
                Ok(watcher::Event::Apply(pv) | watcher::Event::InitApply(pv)) => pv,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "volume watch failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = self.reclaim(&pv).await {
                tracing::warn!(error = %e, "reclaim failed");
            }
        }
    }

    /// Removes the directories of PVs that no longer exist (e.g. deleted while the agent was
    /// down). Called once at start.
    pub async fn sweep_orphans(&self) {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let Ok(list) = api.list(&ListParams::default()).await else {
            return;
        };
        let live: Vec<String> = list
            .items
            .iter()
            .filter_map(|pv| pv.metadata.name.clone())
            .collect();
        let Ok(mut dir) = tokio::fs::read_dir(&self.dir).await else {
            return;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("pvc-") && !live.contains(&name) {
                tracing::info!(dir = %entry.path().display(), "removing orphaned volume directory");
                let _ = tokio::fs::remove_dir_all(entry.path()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};

    fn claim(phase: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data-raft-0".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Quantity("2Gi".into()))])),
                    ..VolumeResourceRequirements::default()
                }),
                volume_name: volume.map(str::to_owned),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(k8s_openapi::api::core::v1::PersistentVolumeClaimStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_pending_claim_gets_a_prebound_host_path_volume() {
        let pv = pv_for_claim(&claim("Pending", None), Path::new("/s/volumes"), "n1").unwrap();
        let spec = pv.spec.unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-u-1"));
        assert_eq!(spec.host_path.unwrap().path, "/s/volumes/pvc-u-1");
        assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some("u-1"));
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("2Gi".into()));
        assert_eq!(spec.storage_class_name.as_deref(), Some(""));
    }

    #[test]
    fn bound_claims_need_nothing() {
        assert!(pv_for_claim(&claim("Bound", Some("pv")), Path::new("/s"), "n1").is_none());
        assert!(pv_for_claim(&claim("Pending", Some("pv")), Path::new("/s"), "n1").is_none());
    }
}
