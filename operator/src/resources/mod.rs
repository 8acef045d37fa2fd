//! The Kubernetes objects a `RaftCluster` owns, built as pure functions of the resource (the
//! "build" stage of the pipeline). `reconcile::apply` sends them with server-side apply; tests
//! check the safety-relevant fields (Parallel, OnDelete, PVC retention, local-only probes).

pub mod backup_job;
pub mod ca_rotation;
pub mod cert_manager;
mod meta;
pub mod names;
mod network_policy;
mod pdb;
pub mod pod_template;
mod secret;
mod service;
pub mod sidecar_image;
mod statefulset;
pub mod tls;

pub use network_policy::{OperatorPods, network_policy};
pub use pdb::pod_disruption_budget;
pub use secret::{ClusterSecret, SecretError, secret};
pub use service::headless_service;
pub use statefulset::{StatefulSetParams, statefulset};
