//! The error model shared by every endpoint: `{"error": {"code", "message", "leaderId"?, "retryAfterMs"?}}`.

use serde::{Deserialize, Serialize};

/// Every error code the sidecar answers with. The HTTP status of each is fixed
/// (docs/sidecar.md "Error codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidOperation,
    IdConflict,
    PayloadTooLarge,
    NotFound,
    Compacted,
    NoLeader,
    NoQuorum,
    NotInitialized,
    Timeout,
    ShuttingDown,
    /// Admin API: a membership call reached a follower (421).
    NotLeader,
    /// Admin API: missing or wrong bearer token (401).
    Unauthorized,
    /// Admin API: the request is well-formed but refused by a safety rule (409).
    Refused,
    /// Anything the sidecar could not classify (500); the message says what failed.
    Internal,
    /// Overload (429): a majority answers but the leader could not take the operation before
    /// its wait ended. Nothing was proposed; retry after `retryAfterMs` with the same id.
    Busy,
}

impl ErrorCode {
    /// HTTP status this code is always answered with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidOperation => 400,
            Self::Unauthorized => 401,
            Self::NotFound => 404,
            Self::IdConflict | Self::Refused => 409,
            Self::Compacted => 410,
            Self::PayloadTooLarge => 413,
            Self::Busy => 429,
            Self::NotLeader => 421,
            Self::Internal => 500,
            Self::NoLeader | Self::NoQuorum | Self::NotInitialized | Self::ShuttingDown => 503,
            Self::Timeout => 504,
        }
    }

    /// The code as it appears on the wire (`"NO_QUORUM"`); also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidOperation => "INVALID_OPERATION",
            Self::IdConflict => "ID_CONFLICT",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::NotFound => "NOT_FOUND",
            Self::Compacted => "COMPACTED",
            Self::NoLeader => "NO_LEADER",
            Self::NoQuorum => "NO_QUORUM",
            Self::NotInitialized => "NOT_INITIALIZED",
            Self::Timeout => "TIMEOUT",
            Self::ShuttingDown => "SHUTTING_DOWN",
            Self::NotLeader => "NOT_LEADER",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Refused => "REFUSED",
            Self::Internal => "INTERNAL",
            Self::Busy => "BUSY",
        }
    }

    /// Whether retrying the same request (same operation id) later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::NoLeader
                | Self::NoQuorum
                | Self::Busy
                | Self::Timeout
                | Self::ShuttingDown
                | Self::NotInitialized
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// Name of the leader when one is known (NO_QUORUM, NOT_LEADER, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<String>,
    /// Admin address of the leader (NOT_LEADER only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_admin_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// Oldest retained journal index (COMPACTED only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_index: Option<u64>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
                leader_id: None,
                leader_admin_addr: None,
                retry_after_ms: None,
                first_index: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_the_spec_spells_them() {
        let body = ErrorBody::new(ErrorCode::NoQuorum, "minority");
        let json = serde_json::to_value(&body).unwrap_or_default();
        assert_eq!(json["error"]["code"], "NO_QUORUM");
        assert_eq!(json["error"]["message"], "minority");
        assert!(json["error"].get("leaderId").is_none());
        for code in [
            ErrorCode::IdConflict,
            ErrorCode::Timeout,
            ErrorCode::NotInitialized,
        ] {
            let wire = serde_json::to_value(code).unwrap_or_default();
            assert_eq!(wire, code.as_str());
        }
    }

    #[test]
    fn statuses_match_the_spec_table() {
        assert_eq!(ErrorCode::InvalidOperation.http_status(), 400);
        assert_eq!(ErrorCode::IdConflict.http_status(), 409);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::Compacted.http_status(), 410);
        assert_eq!(ErrorCode::NoLeader.http_status(), 503);
        assert_eq!(ErrorCode::NoQuorum.http_status(), 503);
        assert_eq!(ErrorCode::NotInitialized.http_status(), 503);
        assert_eq!(ErrorCode::Timeout.http_status(), 504);
        assert_eq!(ErrorCode::ShuttingDown.http_status(), 503);
        assert_eq!(ErrorCode::NotLeader.http_status(), 421);
    }
}
