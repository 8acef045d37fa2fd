//! The generated CRD: the committed `crds/raftcluster.yaml` matches the Rust types, and the
//! resource has the shape `kubectl` users rely on (subresources, short name, columns).

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion;
use kube::CustomResourceExt;
use raft_crds::{RaftCluster, crd_yaml};

fn committed_crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("raftcluster.yaml")
}

fn only_version() -> CustomResourceDefinitionVersion {
    let crd = RaftCluster::crd();
    assert_eq!(crd.spec.versions.len(), 1, "one served version");
    crd.spec.versions[0].clone()
}

#[test]
fn committed_crd_yaml_matches_the_rust_types() {
    let path = committed_crd_path();
    let generated = crd_yaml().expect("CRD serializes");
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("write the CRD file");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the RaftCluster types.\n\
         Regenerate it with: UPDATE_CRDS=1 cargo test -p raft-crds --test crd\n\
         and commit the result.",
        path.display()
    );
}

#[test]
fn crd_is_namespaced_in_the_consensus_group_with_short_name_rc() {
    let crd = RaftCluster::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("raftclusters.consensus.unrdf.io")
    );
    assert_eq!(crd.spec.group, "consensus.unrdf.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "RaftCluster");
    assert_eq!(crd.spec.names.short_names, Some(vec!["rc".to_owned()]));
    let version = only_version();
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
}

#[test]
fn crd_has_status_and_scale_subresources_driven_by_spec_and_status_replicas() {
    let subresources = only_version().subresources.expect("subresources");
    assert!(subresources.status.is_some(), "status subresource");
    let scale = subresources.scale.expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );
}

#[test]
fn crd_prints_replicas_ready_leader_term_phase_and_age() {
    let columns = only_version()
        .additional_printer_columns
        .expect("printer columns");
    let shown: Vec<(&str, &str, &str)> = columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("Replicas", "integer", ".spec.replicas"),
            ("Ready", "integer", ".status.readyReplicas"),
            ("Leader", "string", ".status.leader"),
            ("Term", "integer", ".status.term"),
            ("Phase", "string", ".status.phase"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn status_conditions_are_a_list_map_keyed_by_type() {
    let schema = serde_json::to_value(only_version().schema.expect("schema")).expect("json");
    let conditions = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
}

#[test]
fn spec_defaults_match_the_sidecar_flag_defaults() {
    let schema = serde_json::to_value(only_version().schema.expect("schema")).expect("json");
    let spec = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["replicas"]["default"], 3);
    assert_eq!(spec["storage"]["properties"]["size"]["default"], "1Gi");
    assert_eq!(spec["paused"]["default"], false);
    assert_eq!(
        spec["raft"]["default"],
        serde_json::json!({
            "heartbeatMs": 50,
            "electionTimeoutMinMs": 200,
            "electionTimeoutMaxMs": 400,
            "partitionDetectionMs": 3000,
            "snapshotInterval": 5000,
            "logCompactionThreshold": 5000,
            "maxLogSize": 10000,
        })
    );
}
