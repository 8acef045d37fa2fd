//! openraft's network (`RaftNetworkFactory`/`RaftNetwork`) over our [`Links`].
//!
//! `new_client` runs inside RaftCore on every election, so it only hands out a handle on the
//! shared, lazily dialled link. Errors follow notes/openraft.md: `Unreachable` only when the
//! peer cannot be connected at all (openraft then pauses RPCs to it by `backoff()`), `Network`
//! otherwise.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::frame::{PeerRequest, PeerResponse};
use super::link::{CallError, Link, Links};
use crate::types::{Member, NodeId, TypeConfig};

/// Hands openraft one [`PeerConn`] per target.
pub struct Network {
    links: Links,
    backoff_max: Duration,
}

impl Network {
    pub fn new(links: Links, backoff_max: Duration) -> Self {
        Self { links, backoff_max }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerConn {
        PeerConn {
            target,
            link: self.links.get(target, &node.peer_addr),
            backoff_max: self.backoff_max,
        }
    }
}

pub struct PeerConn {
    target: NodeId,
    link: Arc<Link>,
    backoff_max: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {peer} answered {what} to {asked}")]
struct UnexpectedAnswer {
    peer: String,
    asked: &'static str,
    what: String,
}

fn call_error<E: std::error::Error>(e: CallError) -> RPCError<NodeId, Member, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        CallError::Network { .. } | CallError::Timeout { .. } => {
            RPCError::Network(NetworkError::new(&e))
        }
    }
}

impl PeerConn {
    fn unexpected<E: std::error::Error>(
        &self,
        asked: &'static str,
        got: PeerResponse,
    ) -> RPCError<NodeId, Member, E> {
        let what = match got {
            PeerResponse::Refused(reason) => format!("refused ({reason})"),
            other => format!("{other:?}").chars().take(80).collect(),
        };
        RPCError::Network(NetworkError::new(&UnexpectedAnswer {
            peer: self.link.addr().to_string(),
            asked,
            what,
        }))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self
            .link
            .call(PeerRequest::AppendEntries(rpc), option.hard_ttl())
            .await
            .map_err(call_error)?
        {
            PeerResponse::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected("append_entries", other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .link
            .call(PeerRequest::InstallSnapshot(rpc), option.hard_ttl())
            .await
            .map_err(call_error)?
        {
            PeerResponse::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected("install_snapshot", other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        match self
            .link
            .call(PeerRequest::Vote(rpc), option.hard_ttl())
            .await
            .map_err(call_error)?
        {
            PeerResponse::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected("vote", other)),
        }
    }

    /// Exponential from 10 ms, capped near election_timeout_min / 3 (openraft's constant 500 ms
    /// lets a restarted follower depose a healthy leader).
    fn backoff(&self) -> Backoff {
        let cap = self.backoff_max;
        Backoff::new(std::iter::successors(
            Some(Duration::from_millis(10)),
            move |d| Some((*d * 2).min(cap)),
        ))
    }
}
