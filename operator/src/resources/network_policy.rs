//! The NetworkPolicy of a cluster's pods (`spec.networkPolicy`): the peer port admits only the
//! cluster's own pods, the admin port only the operator's pods, the cluster's backup and restore
//! Jobs (when it has a volume destination) and `spec.networkPolicy.adminFrom`,
//! and every other port (the daemon's, which the operator does not know) stays open, expressed
//! as port ranges around the two. Ingress only: egress is the daemon's business.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use raft_crds::RaftCluster;

use super::backup_job::job_pod_labels;
use super::meta::owned_meta;
use super::names::{ADMIN_PORT, ClusterNames, PEER_PORT};

/// Where the operator's own pods run, so the policy can admit them to the admin port. Unknown
/// when the operator runs outside the cluster (then only `adminFrom` is admitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// Label every namespace carries with its own name (set by the API server since 1.22).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub fn network_policy(
    rc: &RaftCluster,
    names: &ClusterNames,
    operator: Option<&OperatorPods>,
) -> NetworkPolicy {
    let tcp = |port: u16| NetworkPolicyPort {
        protocol: Some("TCP".to_owned()),
        port: Some(IntOrString::Int(i32::from(port))),
        end_port: None,
    };
    let cluster_pods = NetworkPolicyPeer {
        pod_selector: Some(selector(names.selector_labels())),
        ..NetworkPolicyPeer::default()
    };
    let admin_clients: Vec<NetworkPolicyPeer> = operator
        .map(|op| NetworkPolicyPeer {
            namespace_selector: Some(selector(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                op.namespace.clone(),
            )]))),
            pod_selector: Some(selector(op.labels.clone())),
            ..NetworkPolicyPeer::default()
        })
        .into_iter()
        .chain(uses_volume_jobs(rc).then(|| NetworkPolicyPeer {
            pod_selector: Some(selector(job_pod_labels(names))),
            ..NetworkPolicyPeer::default()
        }))
        .chain(rc.spec.network_policy.admin_from.iter().cloned())
        .collect();

    let mut ingress = vec![NetworkPolicyIngressRule {
        ports: Some(vec![tcp(PEER_PORT)]),
        from: Some(vec![cluster_pods]),
    }];
    // A rule without peers would admit everyone: with no admin client known, the admin port
    // gets no rule at all and is closed to other pods.
    if !admin_clients.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp(ADMIN_PORT)]),
            from: Some(admin_clients),
        });
    }
    ingress.push(NetworkPolicyIngressRule {
        ports: Some(other_ports(&[PEER_PORT, ADMIN_PORT])),
        from: None,
    });

    NetworkPolicy {
        metadata: owned_meta(rc, names, names.network_policy()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(names.selector_labels())),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

/// Whether backups or the restore go through a PersistentVolumeClaim, whose Jobs call the admin
/// port ([`super::backup_job`]).
fn uses_volume_jobs(rc: &RaftCluster) -> bool {
    let backup = rc
        .spec
        .backup
        .as_ref()
        .is_some_and(|b| b.persistent_volume_claim.is_some());
    let restore = rc
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.from_backup.as_ref())
        .is_some_and(|f| f.persistent_volume_claim.is_some());
    backup || restore
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

/// Every port but `closed`, for each protocol a NetworkPolicy knows, as `port`..`endPort`
/// ranges (`endPort` is stable since Kubernetes 1.25).
fn other_ports(closed: &[u16]) -> Vec<NetworkPolicyPort> {
    let mut closed = closed.to_vec();
    closed.sort_unstable();
    let mut ranges = Vec::new();
    let mut next = 1u16;
    for &port in &closed {
        if port > next {
            ranges.push((next, port - 1));
        }
        next = port.saturating_add(1);
    }
    if closed.last() != Some(&u16::MAX) {
        ranges.push((next, u16::MAX));
    }
    ["TCP", "UDP", "SCTP"]
        .into_iter()
        .flat_map(|protocol| {
            ranges.iter().map(move |&(first, last)| NetworkPolicyPort {
                protocol: Some(protocol.to_owned()),
                port: Some(IntOrString::Int(i32::from(first))),
                end_port: (last > first).then_some(i32::from(last)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_crds::RaftClusterSpec;

    fn cluster(admin_from: Vec<NetworkPolicyPeer>) -> (RaftCluster, ClusterNames) {
        let mut spec = RaftClusterSpec::default();
        spec.network_policy.admin_from = admin_from;
        let mut rc = RaftCluster::new("c", spec);
        rc.metadata.namespace = Some("prod".into());
        rc.metadata.uid = Some("uid-1".into());
        (rc, ClusterNames::new("c", "prod", "cluster.local"))
    }

    fn operator() -> OperatorPods {
        OperatorPods {
            namespace: "raft-system".into(),
            labels: BTreeMap::from([("app.kubernetes.io/name".into(), "raft-operator".into())]),
        }
    }

    fn rule_for(np: &NetworkPolicy, port: u16) -> Option<NetworkPolicyIngressRule> {
        np.spec
            .as_ref()?
            .ingress
            .as_ref()?
            .iter()
            .find(|r| {
                r.ports.iter().flatten().any(|p| {
                    let first = match p.port {
                        Some(IntOrString::Int(n)) => n,
                        _ => return false,
                    };
                    p.protocol.as_deref() == Some("TCP")
                        && first <= i32::from(port)
                        && i32::from(port) <= p.end_port.unwrap_or(first)
                })
            })
            .cloned()
    }

    #[test]
    fn the_peer_port_admits_only_the_clusters_own_pods() {
        let (rc, names) = cluster(vec![]);
        let np = network_policy(&rc, &names, Some(&operator()));
        let rule = rule_for(&np, PEER_PORT).unwrap();
        let from = rule.from.unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0].pod_selector.as_ref().unwrap().match_labels,
            Some(names.selector_labels())
        );
        assert!(from[0].namespace_selector.is_none(), "same namespace only");
        assert_eq!(
            np.spec.unwrap().pod_selector.unwrap().match_labels,
            Some(names.selector_labels())
        );
    }

    #[test]
    fn the_admin_port_admits_the_operators_pods_and_admin_from() {
        let prometheus = NetworkPolicyPeer {
            namespace_selector: Some(selector(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                "monitoring".to_owned(),
            )]))),
            ..NetworkPolicyPeer::default()
        };
        let (rc, names) = cluster(vec![prometheus.clone()]);
        let np = network_policy(&rc, &names, Some(&operator()));
        let from = rule_for(&np, ADMIN_PORT).unwrap().from.unwrap();
        assert_eq!(from.len(), 2);
        let op = &from[0];
        assert_eq!(
            op.namespace_selector.as_ref().unwrap().match_labels,
            Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                "raft-system".to_owned()
            )]))
        );
        assert_eq!(
            op.pod_selector.as_ref().unwrap().match_labels,
            Some(operator().labels)
        );
        assert_eq!(from[1], prometheus);
    }

    #[test]
    fn backups_to_a_volume_admit_the_clusters_own_backup_jobs_to_the_admin_port_only() {
        let (mut rc, names) = cluster(vec![]);
        rc.spec.backup = Some(raft_crds::BackupSpec {
            schedule: "0 * * * *".into(),
            retention: 3,
            s3: None,
            persistent_volume_claim: Some(raft_crds::VolumeDestination {
                claim_name: "backups".into(),
                path: None,
            }),
        });
        let np = network_policy(&rc, &names, Some(&operator()));
        let from = rule_for(&np, ADMIN_PORT).unwrap().from.unwrap();
        assert_eq!(from.len(), 2);
        assert_eq!(
            from[1].pod_selector.as_ref().unwrap().match_labels,
            Some(job_pod_labels(&names))
        );
        assert!(from[1].namespace_selector.is_none(), "same namespace only");
        let peer = rule_for(&np, PEER_PORT).unwrap().from.unwrap();
        assert_eq!(peer.len(), 1, "not the peer port");

        rc.spec.backup = None;
        let np = network_policy(&rc, &names, Some(&operator()));
        assert_eq!(rule_for(&np, ADMIN_PORT).unwrap().from.unwrap().len(), 1);
    }

    #[test]
    fn with_no_admin_client_known_the_admin_port_is_closed_not_open_to_all() {
        let (rc, names) = cluster(vec![]);
        let np = network_policy(&rc, &names, None);
        assert!(rule_for(&np, ADMIN_PORT).is_none());
        // Every rule names its sources, except the one for the daemon's ports.
        for rule in np.spec.unwrap().ingress.unwrap() {
            let opens_sidecar_port = rule.ports.iter().flatten().any(|p| {
                matches!(p.port, Some(IntOrString::Int(n)) if n == i32::from(PEER_PORT) || n == i32::from(ADMIN_PORT))
            });
            assert!(rule.from.is_some() || !opens_sidecar_port);
        }
    }

    #[test]
    fn every_other_port_stays_open_for_the_daemon() {
        let ports = other_ports(&[ADMIN_PORT, PEER_PORT]);
        let tcp: Vec<(i32, Option<i32>)> = ports
            .iter()
            .filter(|p| p.protocol.as_deref() == Some("TCP"))
            .map(|p| match p.port {
                Some(IntOrString::Int(n)) => (n, p.end_port),
                _ => panic!("numeric ports only"),
            })
            .collect();
        assert_eq!(
            tcp,
            [(1, Some(7069)), (7071, Some(7089)), (7091, Some(65535))]
        );
        assert_eq!(ports.len(), 9, "TCP, UDP and SCTP");
        // Adjacent and edge ports leave no empty or inverted range.
        let edge: Vec<_> = other_ports(&[1, 2, u16::MAX])
            .into_iter()
            .filter(|p| p.protocol.as_deref() == Some("TCP"))
            .map(|p| (p.port, p.end_port))
            .collect();
        assert_eq!(edge, [(Some(IntOrString::Int(3)), Some(65534))]);
    }

    #[test]
    fn the_policy_is_owned_by_its_raftcluster() {
        let (rc, names) = cluster(vec![]);
        let np = network_policy(&rc, &names, None);
        let owner = &np.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(np.metadata.name.as_deref(), Some(names.network_policy()));
    }
}
