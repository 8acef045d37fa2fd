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

    pub fn with_leader(mut self, leader: Option<String>) -> Self {
        self.leader = leader;
        self
    }
}

/// What the leader answers for one operation.
pub type WriteResult = Result<OpOutcome, WriteFailure>;
