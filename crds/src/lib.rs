//! The `RaftCluster` custom resource (`consensus.unrdf.io/v1alpha1`): the Rust types the operator
//! reconciles, the CEL rules the API server enforces on them, and the CRD generated from both.
//!
//! Data flow: users write a [`RaftCluster`] (desired state in [`RaftClusterSpec`]); the operator
//! reads it, observes the cluster and writes [`RaftClusterStatus`] back through the status
//! subresource. The CRD installed in the cluster is [`crd_yaml`]'s output, committed as
//! `crds/raftcluster.yaml` and kept equal to the types by a test.
//!
//! This crate links no Kubernetes version: binaries and tests pick one through
//! `k8s-openapi`'s `v1_*` feature (see `.cargo/config.toml` for the workspace default).

pub mod spec;
pub mod status;

pub use spec::{
    BackupSpec, BootstrapSpec, DEFAULT_BACKUP_RETENTION, DaemonSpec, Destination, FromBackupSpec,
    IssuerRef, LATEST_BACKUP, MAX_NAME_LENGTH, NetworkPolicySpec, PodTemplateOverrides,
    RaftCluster, RaftClusterSpec, RaftSpec, S3Destination, SidecarSpec, StorageSpec, TlsSpec,
    VolumeDestination,
};
pub use status::{
    BackupFailure, BackupRecord, BackupStatus, ClusterPhase, MemberRole, MemberStatus,
    OperationKind, OperationPhase, OperationStatus, RaftClusterStatus, RecoveryState,
    RecoveryStatus, RestoredFromStatus,
};

use kube::CustomResourceExt;

/// Failure to render the CRD.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("failed to serialize the RaftCluster CRD as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// The `RaftCluster` CustomResourceDefinition as YAML, exactly as committed in
/// `crds/raftcluster.yaml` (what `raft-operator crd` prints and the Helm chart installs).
pub fn crd_yaml() -> Result<String, CrdError> {
    Ok(serde_saphyr::to_string(&RaftCluster::crd())?)
}
