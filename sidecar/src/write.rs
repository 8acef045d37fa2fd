//! The result of a daemon write as it travels between the batcher, the peer transport
//! (forwarded writes) and the daemon API.

use raft_api::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::journal::OpOutcome;

/// Why a write was not (or not known to be) committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WriteFailure {
    pub code: ErrorCode,
    pub message: String,
    /// Name of the leader, when one is known.
    pub leader: Option<String>,
}

impl WriteFailure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            leader: None,
        }
    }

    /// The write may or may not have been committed (`TIMEOUT`): `why` says what happened; the
    /// message tells the daemon to retry with the same id, which deduplication makes safe.
    pub fn outcome_unknown(why: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::Timeout,
            format!("{why}; the outcome is unknown, retry with the same id"),
        )
    }

    /// `NO_QUORUM`: this node, or the leader it would forward to, cannot reach a majority of
    /// voters. Nothing was proposed.
    pub fn no_quorum() -> Self {
        Self::new(
            ErrorCode::NoQuorum,
            "this node cannot reach a majority of voters (minority side of a partition?)",
        )
    }

    /// `BUSY`: the leader could not take the operation before its wait ended (a majority is up
    /// but slow, or the queue is full). Nothing was proposed.
    pub fn busy(why: impl std::fmt::Display) -> Self {
        Self::new(
            ErrorCode::Busy,
            format!("{why}; the operation was not proposed, retry with the same id"),
        )
    }

    pub fn with_leader(mut self, leader: Option<String>) -> Self {
        self.leader = leader;
        self
    }
}

/// What the leader answers for one operation.
pub type WriteResult = Result<OpOutcome, WriteFailure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_outcome_is_a_timeout_that_says_to_retry_with_the_same_id() {
        let f = WriteFailure::outcome_unknown("the leader did not answer in time");
        assert_eq!(f.code, ErrorCode::Timeout);
        assert_eq!(
            f.message,
            "the leader did not answer in time; the outcome is unknown, retry with the same id"
        );
    }
}
