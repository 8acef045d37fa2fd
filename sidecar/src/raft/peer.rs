//! What a node answers on the peer transport: openraft's RPCs, forwarded daemon writes (this
//! node as leader), identity, membership and health questions, and the leader's removal
//! notice, which is honoured only once the leader's committed membership confirms it.

use std::sync::Arc;

use super::node::{Lifecycle, Node};
use super::{handoff, monitor, read, submit};
use crate::transport::frame::{
    HealthView, MembershipView, NodeIdentity, PeerRequest, PeerResponse,
};
use crate::transport::server::PeerHandler;
use crate::types::NodeId;

/// The node as the peer server sees it.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        Arc::new(Self { node })
    }
}

/// The node a Raft RPC says it comes from (the leader or candidate in its vote); with TLS it
/// must be the node the connection was authenticated as.
fn claimed_sender(request: &PeerRequest) -> Option<NodeId> {
    match request {
        PeerRequest::AppendEntries(rpc) => rpc.vote.leader_id().voted_for(),
        PeerRequest::Vote(rpc) => rpc.vote.leader_id().voted_for(),
        PeerRequest::InstallSnapshot(rpc) => rpc.vote.leader_id().voted_for(),
        _ => None,
    }
}

impl PeerHandler for PeerService {
    async fn handle(&self, from: Option<NodeId>, request: PeerRequest) -> PeerResponse {
        let node = &self.node;
        if let (Some(from), Some(claimed)) = (from, claimed_sender(&request))
            && claimed != from
        {
            return PeerResponse::Refused(format!(
                "the request is node {claimed}'s but the connection is node {from}'s"
            ));
        }
        node.touch(from);
        let removed = node.lifecycle() == Lifecycle::Removed;
        match request {
            PeerRequest::Identify => PeerResponse::Identity(NodeIdentity {
                node_id: node.id,
                name: node.cfg.name.clone(),
                admin_addr: node.cfg.advertise_admin.clone(),
                initialized: node.is_member(&node.raft_metrics()),
            }),
            PeerRequest::Membership => {
                let m = node.raft_metrics();
                PeerResponse::Membership(MembershipView {
                    leader: m.current_leader,
                    term: m.current_term,
                    // The applied membership is committed; the effective one may not be.
                    membership: node.journal.applied().membership,
                })
            }
            PeerRequest::Health => {
                let m = node.raft_metrics();
                PeerResponse::Health(HealthView {
                    leading: node.is_leader(&m),
                    term: m.current_term,
                    partition: node.health().partition,
                })
            }
            _ if removed => PeerResponse::Refused("this node was removed from the cluster".into()),
            PeerRequest::AppendEntries(rpc) => {
                PeerResponse::AppendEntries(node.raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => PeerResponse::Vote(node.raft.vote(rpc).await),
            PeerRequest::InstallSnapshot(rpc) => {
                PeerResponse::InstallSnapshot(node.raft.install_snapshot(rpc).await)
            }
            PeerRequest::Forward(op) => PeerResponse::Forward(submit::forwarded(node, op).await),
            PeerRequest::ReadIndex => {
                let deadline = tokio::time::Instant::now() + node.cfg.write_timeout;
                PeerResponse::ReadIndex(read::read_index(node, deadline).await)
            }
            PeerRequest::Campaign {
                term,
                last_log_index,
            } => handoff::stand(node, from, term, last_log_index).await,
            PeerRequest::Removed { target, .. } => {
                // A notice is a reason to check, never proof (anyone holding the token can send
                // one, in any term): ask the member it claims to come from, at the address our
                // own membership gives for it, for its committed membership.
                if target == node.id
                    && let Some(sender) = from.filter(|f| *f != node.id)
                {
                    let node = node.clone();
                    self.node.spawn_errand(async move {
                        monitor::verify_removal_notice(&node, sender).await;
                    });
                }
                PeerResponse::Ack
            }
        }
    }
}
