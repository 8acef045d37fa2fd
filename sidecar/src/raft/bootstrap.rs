//! Static bootstrap (`--initial-members`): the member with the lowest name learns every peer's
//! node id over the peer transport and initializes the cluster once. Nobody else initializes;
//! a member that finds any peer already initialized stops trying.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::node::{Lifecycle, Node};
use crate::transport::frame::{PeerRequest, PeerResponse};
use crate::types::{Member, NodeId};

const RETRY: Duration = Duration::from_millis(500);

pub async fn run(node: Arc<Node>) {
    let members = node.cfg.initial_members.clone();
    let lowest = members.first().is_some_and(|m| m.name == node.cfg.name);
    if !lowest {
        return;
    }
    loop {
        if node.lifecycle() != Lifecycle::Running || node.is_member(&node.raft_metrics()) {
            return;
        }
        match gather(&node).await {
            Gather::Ready(all) => {
                match node.raft.initialize(all).await {
                    Ok(()) => tracing::info!(
                        members = members.len(),
                        "cluster initialized from --initial-members"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "initialize from --initial-members failed")
                    }
                }
                return;
            }
            Gather::AlreadyInitialized(peer) => {
                tracing::info!(%peer, "a peer is already initialized; not bootstrapping");
                return;
            }
            Gather::Waiting(peer) => tracing::debug!(%peer, "waiting for initial member"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

enum Gather {
    Ready(BTreeMap<NodeId, Member>),
    AlreadyInitialized(String),
    Waiting(String),
}

async fn gather(node: &Node) -> Gather {
    let mut all = BTreeMap::new();
    for m in &node.cfg.initial_members {
        if m.name == node.cfg.name {
            let me = Member {
                name: node.cfg.name.clone(),
                peer_addr: node.cfg.advertise_peer.clone(),
                admin_addr: node.cfg.advertise_admin.clone(),
            };
            all.insert(node.id, me);
            continue;
        }
        let link = node.links.probe(&m.peer_addr);
        match link
            .call(PeerRequest::Identify, Duration::from_secs(1))
            .await
        {
            Ok(PeerResponse::Identity(id)) if id.initialized => {
                return Gather::AlreadyInitialized(m.name.clone());
            }
            Ok(PeerResponse::Identity(id)) if id.name == m.name => {
                all.insert(
                    id.node_id,
                    Member {
                        name: id.name,
                        peer_addr: m.peer_addr.clone(),
                        admin_addr: id.admin_addr,
                    },
                );
            }
            Ok(PeerResponse::Identity(id)) => {
                tracing::warn!(expected = %m.name, answered = %id.name, addr = %m.peer_addr, "initial member answered with another name");
                return Gather::Waiting(m.name.clone());
            }
            _ => return Gather::Waiting(m.name.clone()),
        }
    }
    Gather::Ready(all)
}
