//! The headless Service: stable per-pod DNS names for the peer transport. Not-ready addresses
//! are published because a new pod must be reachable by its peers before it is a member.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use raft_crds::RaftCluster;

use super::meta::owned_meta;
use super::names::{ADMIN_PORT, ClusterNames, PEER_PORT};

pub fn headless_service(rc: &RaftCluster, names: &ClusterNames) -> Service {
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    Service {
        metadata: owned_meta(rc, names, names.service()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector_labels()),
            ports: Some(vec![port("peer", PEER_PORT), port("admin", ADMIN_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
