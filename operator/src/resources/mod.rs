//! The Kubernetes objects a `RaftCluster` owns, built as pure functions of the resource (the
//! "build" stage of the pipeline). `reconcile::apply` sends them with server-side apply; tests
//! check the safety-relevant fields (Parallel, OnDelete, PVC retention, local-only probes).

pub mod names;
mod pdb;
mod secret;
mod service;
mod statefulset;

pub use pdb::pod_disruption_budget;
pub use secret::{ClusterSecret, SecretError, secret};
pub use service::headless_service;
pub use statefulset::{StatefulSetParams, statefulset};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use raft_crds::RaftCluster;

use names::ClusterNames;

/// Metadata shared by every owned object: name, namespace, labels and the controller owner
/// reference (so `kubectl delete raftcluster` garbage-collects them and the controller is woken
/// by their changes).
fn owned_meta(rc: &RaftCluster, names: &ClusterNames, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        owner_references: owner_reference(rc).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(rc: &RaftCluster) -> Option<OwnerReference> {
    rc.controller_owner_ref(&())
}
