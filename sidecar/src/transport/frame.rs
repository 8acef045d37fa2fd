//! The peer wire format: postcard-encoded envelopes in binary WebSocket messages, each with a
//! request id so many RPCs share one socket. No JSON on the peer path.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use raft_api::daemon::PartitionState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::MAX_FRAME_BYTES;
use crate::journal::StoredOperation;
use crate::types::{NodeId, StoredMembership, TypeConfig};
use crate::write::{WriteFailure, WriteResult};

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A daemon write submitted on a follower, for the leader to propose.
    Forward(StoredOperation),
    /// "What is the committed membership and who leads?" (removed-node detection).
    Membership,
    /// "Who are you?" (static bootstrap learns peers' node ids).
    Identify,
    /// The leader tells a node that a committed configuration removed it.
    Removed {
        term: u64,
        target: NodeId,
    },
    /// "Do you lead, and can you reach a majority?" A follower asks its leader, so that the
    /// followers of a leader cut off in a minority also report `minority`.
    Health,
    /// "Confirm you lead and give me the read index" (a follower's linearizable read).
    ReadIndex,
    /// The leader hands leadership over: "stand for election now". Sent only once the
    /// receiver holds the leader's whole log (`last_log_index`) in `term`, and honoured only
    /// from the leader of that term. Appended last: the variants before keep their encoding.
    Campaign {
        term: u64,
        last_log_index: u64,
    },
}

/// Answer to [`PeerRequest::Identify`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: NodeId,
    pub name: String,
    pub admin_addr: String,
    pub initialized: bool,
}

/// A node's answer to [`PeerRequest::Health`]: whether it leads, and its `partitionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    pub leading: bool,
    pub term: u64,
    pub partition: PartitionState,
}

/// A node's view of the cluster, answered to [`PeerRequest::Membership`]: its leader and its
/// *applied* (hence committed) membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipView {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub membership: StoredMembership,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Forward(WriteResult),
    Membership(MembershipView),
    Identity(NodeIdentity),
    /// Acknowledges a notification.
    Ack,
    /// Answer to [`PeerRequest::Health`].
    Health(HealthView),
    /// Answer to [`PeerRequest::ReadIndex`]: the Raft index a linearizable read must see.
    ReadIndex(Result<u64, WriteFailure>),
    /// The peer could not handle the request (not ready yet, shutting down, bad frame).
    Refused(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    pub body: T,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("frame does not encode: {0}")]
    Encode(String),
}

pub fn encode<T: Serialize>(envelope: &Envelope<T>) -> Result<Vec<u8>, FrameError> {
    let bytes = postcard::to_stdvec(envelope).map_err(|e| FrameError::Encode(e.to_string()))?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>, FrameError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(bytes.len()));
    }
    match postcard::take_from_bytes(bytes) {
        Ok((envelope, [])) => Ok(envelope),
        Ok((_, rest)) => Err(FrameError::Decode(format!(
            "{} trailing bytes after the frame",
            rest.len()
        ))),
        Err(e) => Err(FrameError::Decode(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;

    #[test]
    fn requests_round_trip() {
        let vote = VoteRequest {
            vote: Vote::new(3, 7),
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 7), 41)),
        };
        let bytes = encode(&Envelope {
            id: 9,
            body: PeerRequest::Vote(vote.clone()),
        })
        .unwrap();
        let back: Envelope<PeerRequest> = decode(&bytes).unwrap();
        assert_eq!(back.id, 9);
        match back.body {
            PeerRequest::Vote(v) => assert_eq!(v, vote),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        for garbage in [
            &b""[..],
            &[0xff; 3],
            &[0x01, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(
                decode::<PeerRequest>(garbage).is_err(),
                "{garbage:?} decoded"
            );
        }
        let huge = vec![0u8; MAX_FRAME_BYTES + 1];
        assert_eq!(
            decode::<PeerRequest>(&huge).unwrap_err(),
            FrameError::TooLarge(MAX_FRAME_BYTES + 1)
        );
    }
}
