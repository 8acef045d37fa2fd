//! Names, labels and addresses every object of a cluster derives from its `RaftCluster` name.
//! One place, so the StatefulSet, the Service, the operator's observation and the e2e tests
//! agree on what `prod-0`'s volume claim or peer address is.

use std::collections::BTreeMap;

/// Port of the daemon API inside the pod (loopback only).
pub const API_PORT: u16 = 7080;
/// Port of the Raft peer transport.
pub const PEER_PORT: u16 = 7070;
/// Port of the admin API, metrics and probes.
pub const ADMIN_PORT: u16 = 7090;
/// Name of the sidecar container.
pub const SIDECAR_CONTAINER: &str = "raft-sidecar";
/// Name of the user's daemon container.
pub const DAEMON_CONTAINER: &str = "daemon";
/// Name of the volume claim template (claims are `data-<pod>`).
pub const DATA_VOLUME: &str = "data";
/// Where the sidecar keeps RocksDB.
pub const DATA_DIR: &str = "/var/lib/raft";
/// Name of the token volume and where it is mounted.
pub const TOKEN_VOLUME: &str = "raft-token";
pub const TOKEN_DIR: &str = "/etc/raft";
/// Keys of the cluster Secret.
pub const TOKEN_KEY: &str = "token";
pub const CLUSTER_ID_KEY: &str = "cluster-id";
/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "raft-operator";
/// Label selector of every object the operator creates (see [`ClusterNames::labels`]): what
/// its watches cache.
pub const MANAGED_BY_US: &str = "app.kubernetes.io/managed-by=raft-operator";

/// Names of one cluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNames {
    /// The RaftCluster's name (also the StatefulSet, headless Service, PDB and NetworkPolicy
    /// name).
    pub name: String,
    pub namespace: String,
    /// DNS suffix of the Kubernetes cluster (`cluster.local`).
    pub cluster_domain: String,
}

impl ClusterNames {
    pub fn new(name: &str, namespace: &str, cluster_domain: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            cluster_domain: cluster_domain.to_owned(),
        }
    }

    pub fn statefulset(&self) -> &str {
        &self.name
    }

    pub fn service(&self) -> &str {
        &self.name
    }

    pub fn pdb(&self) -> &str {
        &self.name
    }

    pub fn network_policy(&self) -> &str {
        &self.name
    }

    pub fn secret(&self) -> String {
        format!("{}-token", self.name)
    }

    /// The cluster CA and the operator's client certificate (never mounted).
    pub fn ca_secret(&self) -> String {
        format!("{}-ca", self.name)
    }

    /// The members' certificates (mounted into every member).
    pub fn tls_secret(&self) -> String {
        format!("{}-tls", self.name)
    }

    /// With `spec.tls.issuerRef`: the cert-manager `Certificate` of a member, and the Secret
    /// cert-manager writes it to (same name). A member's ordinal is one digit, so no other
    /// cluster's certificate can have this name.
    pub fn member_certificate(&self, pod: &str) -> String {
        format!("{pod}-cert")
    }

    /// With `spec.tls.issuerRef`: the operator's client certificate (`Certificate` and Secret).
    pub fn operator_certificate(&self) -> String {
        format!("{}-operator-cert", self.name)
    }

    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    /// The claim the StatefulSet controller creates for a pod.
    pub fn pvc(&self, ordinal: u32) -> String {
        format!("{DATA_VOLUME}-{}-{ordinal}", self.name)
    }

    /// Ordinal of a pod of this cluster (`prod-3` → 3); `None` for any other name.
    pub fn ordinal_of(&self, pod_name: &str) -> Option<u32> {
        let rest = pod_name.strip_prefix(&self.name)?.strip_prefix('-')?;
        if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
            return None;
        }
        rest.parse().ok()
    }

    /// Stable DNS name of a pod through the headless Service.
    pub fn pod_host(&self, pod_name: &str) -> String {
        format!(
            "{pod_name}.{}.{}.svc.{}",
            self.service(),
            self.namespace,
            self.cluster_domain
        )
    }

    /// Labels that select this cluster's pods (also the scale subresource's selector).
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_owned(),
                "raft-cluster".to_owned(),
            ),
            ("app.kubernetes.io/instance".to_owned(), self.name.clone()),
        ])
    }

    /// Labels on every object the operator creates.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels();
        labels.insert(
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        );
        labels.insert(
            "app.kubernetes.io/component".to_owned(),
            "consensus".to_owned(),
        );
        labels
    }

    /// The selector in string form (`status.selector`).
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_parse_only_this_clusters_pods() {
        let n = ClusterNames::new("prod", "ns", "cluster.local");
        assert_eq!(n.ordinal_of("prod-0"), Some(0));
        assert_eq!(n.ordinal_of("prod-12"), Some(12));
        assert_eq!(n.ordinal_of("prod-01"), None);
        assert_eq!(n.ordinal_of("prod-"), None);
        assert_eq!(n.ordinal_of("prod-x"), None);
        assert_eq!(n.ordinal_of("production-1"), None);
        assert_eq!(n.ordinal_of("prod-a-1"), None);
    }

    #[test]
    fn pods_are_reached_through_the_headless_service() {
        let n = ClusterNames::new("prod", "team-a", "cluster.local");
        assert_eq!(n.pod_host("prod-1"), "prod-1.prod.team-a.svc.cluster.local");
        assert_eq!(n.pvc(2), "data-prod-2");
        assert_eq!(n.secret(), "prod-token");
        assert_eq!(
            n.selector_string(),
            "app.kubernetes.io/instance=prod,app.kubernetes.io/name=raft-cluster"
        );
    }

    #[test]
    fn every_object_the_operator_labels_matches_what_its_watches_cache() {
        let labels = ClusterNames::new("prod", "ns", "cluster.local").labels();
        let (key, value) = MANAGED_BY_US.split_once('=').unwrap();
        assert_eq!(labels.get(key).map(String::as_str), Some(value));
    }
}
