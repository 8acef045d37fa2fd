//! The HTTP error model: every failure becomes `{"error": {...}}` with the status of its code,
//! including warp's own rejections (bad query, unknown path, body too large).

use std::convert::Infallible;

use raft_api::{ErrorBody, ErrorCode, ErrorDetail};
use warp::http::StatusCode;
use warp::reject::Rejection;
use warp::reply::{Reply, Response};

use crate::raft::membership::MembershipError;
use crate::write::WriteFailure;

/// An error answer; also a warp rejection so filters can bail out with it.
#[derive(Debug, Clone)]
pub struct ApiError(pub ErrorBody);

impl warp::reject::Reject for ApiError {}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(code, message))
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidOperation, message)
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, e.to_string())
    }

    pub fn code(&self) -> ErrorCode {
        self.0.error.code
    }

    pub fn with_leader(mut self, leader: Option<String>) -> Self {
        self.0.error.leader_id = leader;
        self
    }

    /// The error as answered: a retryable one says when to try again.
    pub fn detail(self) -> ErrorDetail {
        let mut detail = self.0.error;
        if detail.code.is_retryable() && detail.retry_after_ms.is_none() {
            detail.retry_after_ms = Some(match detail.code {
                ErrorCode::Timeout => 100,
                ErrorCode::Busy => 250,
                _ => 500,
            });
        }
        detail
    }

    pub fn into_response(self) -> Response {
        let code = self.0.error.code;
        let body = ErrorBody {
            error: self.detail(),
        };
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = body.error.retry_after_ms;
        let reply = warp::reply::with_status(warp::reply::json(&body), status);
        match retry_after {
            // In whole seconds (RFC 9110), rounded up; `retryAfterMs` in the body is finer.
            Some(ms) => warp::reply::with_header(reply, "retry-after", ms.div_ceil(1000).max(1))
                .into_response(),
            None => reply.into_response(),
        }
    }
}

impl From<WriteFailure> for ApiError {
    fn from(f: WriteFailure) -> Self {
        ApiError::new(f.code, f.message).with_leader(f.leader)
    }
}

impl From<MembershipError> for ApiError {
    fn from(e: MembershipError) -> Self {
        let msg = e.to_string();
        match e {
            MembershipError::NotLeader { leader } => {
                let mut err = ApiError::new(ErrorCode::NotLeader, msg);
                if let Some(l) = leader {
                    err.0.error.leader_id = Some(l.name);
                    err.0.error.leader_admin_addr = Some(l.admin_addr).filter(|a| !a.is_empty());
                }
                err
            }
            MembershipError::Refused(_) => ApiError::new(ErrorCode::Refused, msg),
            MembershipError::Timeout => ApiError::new(ErrorCode::Timeout, msg),
            MembershipError::NoLeader => ApiError::new(ErrorCode::NoLeader, msg),
            MembershipError::Incomplete(_) => ApiError::new(ErrorCode::Timeout, msg),
            MembershipError::Internal(_) => ApiError::new(ErrorCode::Internal, msg),
        }
    }
}

/// Turn any rejection into our error body.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::new(ErrorCode::NotFound, "no such endpoint")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request body exceeds --max-operation-bytes",
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::invalid("a Content-Length header is required")
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::invalid(format!("bad query string: {e}"))
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        ApiError::invalid(e.to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        let body = ErrorBody::new(
            ErrorCode::InvalidOperation,
            "method not allowed on this path",
        );
        return Ok(warp::reply::with_status(
            warp::reply::json(&body),
            StatusCode::METHOD_NOT_ALLOWED,
        )
        .into_response());
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        ApiError::invalid("unsupported content type; send application/json")
    } else {
        ApiError::internal(format!("unhandled rejection: {rejection:?}"))
    };
    Ok(err.into_response())
}
