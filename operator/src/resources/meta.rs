//! Metadata every object a `RaftCluster` owns carries: name, namespace, labels and the
//! controller owner reference.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use raft_crds::RaftCluster;

use super::names::ClusterNames;

/// Metadata shared by every owned object: name, namespace, labels and the controller owner
/// reference (so `kubectl delete raftcluster` garbage-collects them and the controller is woken
/// by their changes).
pub(super) fn owned_meta(rc: &RaftCluster, names: &ClusterNames, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        owner_references: owner_reference(rc).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// Metadata of an object that outlives its `RaftCluster` (the cluster's identity, kept with
/// its retained volumes): name, namespace and labels, no owner reference, so deleting the
/// `RaftCluster` leaves it for a re-created one of the same name to adopt.
pub(super) fn retained_meta(names: &ClusterNames, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(names.namespace.clone()),
        labels: Some(names.labels()),
        ..ObjectMeta::default()
    }
}

fn owner_reference(rc: &RaftCluster) -> Option<OwnerReference> {
    rc.controller_owner_ref(&())
}

/// An owned `Opaque` Secret named `name` holding `entries` (key, UTF-8 value).
pub(super) fn opaque_secret(
    rc: &RaftCluster,
    names: &ClusterNames,
    name: &str,
    entries: impl IntoIterator<Item = (String, String)>,
) -> k8s_openapi::api::core::v1::Secret {
    secret_with(owned_meta(rc, names, name), entries)
}

/// An `Opaque` Secret with `metadata`, holding `entries` (key, UTF-8 value).
pub(super) fn secret_with(
    metadata: ObjectMeta,
    entries: impl IntoIterator<Item = (String, String)>,
) -> k8s_openapi::api::core::v1::Secret {
    k8s_openapi::api::core::v1::Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(
            entries
                .into_iter()
                .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}
