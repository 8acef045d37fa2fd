//! The PodDisruptionBudget: voluntary evictions (node drains) take one member at a time, so a
//! drain never costs quorum on its own.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use raft_crds::RaftCluster;

use super::meta::owned_meta;
use super::names::ClusterNames;

pub fn pod_disruption_budget(rc: &RaftCluster, names: &ClusterNames) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned_meta(rc, names, names.pdb()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
