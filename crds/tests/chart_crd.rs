#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]
//! The Helm chart ships its own copy of the CRD (`charts/raft-operator/crds/raftcluster.yaml`,
//! installed by `helm install`); it must be the committed `crds/raftcluster.yaml`, byte for byte.

use std::path::PathBuf;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crds/ has a parent")
        .to_path_buf()
}

#[test]
fn chart_crd_is_the_committed_crd() {
    let root = repo_root();
    let chart_crd = root.join("charts/raft-operator/crds/raftcluster.yaml");
    if std::env::var_os("UPDATE_CRDS").is_some() {
        // Written from the Rust types, like `crds/tests/crd.rs` does for crds/raftcluster.yaml,
        // so the result does not depend on which of the two test binaries runs first.
        let generated = raft_crds::crd_yaml().expect("CRD serializes");
        std::fs::write(&chart_crd, generated).expect("write the chart's CRD file");
        return;
    }
    let committed = std::fs::read_to_string(root.join("crds/raftcluster.yaml"))
        .expect("read crds/raftcluster.yaml");
    let in_chart = std::fs::read_to_string(&chart_crd).unwrap_or_default();
    assert!(
        in_chart == committed,
        "{} differs from crds/raftcluster.yaml.\n\
         Regenerate both with: UPDATE_CRDS=1 cargo test -p raft-crds --test crd --test chart_crd\n\
         and commit the result.",
        chart_crd.display()
    );
}
