//! Submitting: one operation at a time, each retried under the **same id** until the sidecar
//! answers that it is committed, the operation's deadline passes, or the sidecar refuses it for
//! good.
//!
//! Retrying by id is what makes this safe: the sidecar deduplicates by id inside its
//! replicated state machine, so an operation that did commit although the answer was lost
//! (timeout, leader change, cut connection) is answered `"duplicate": true` with its original
//! `logIndex` instead of being appended twice. Never invent a new id for a retry.
//!
//! The answer is only an acknowledgement. The operation is *executed* when it arrives through
//! the journal watch (see `apply`), exactly like everyone else's operations.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raft_api::ErrorCode;
use raft_api::client::{ClientError, SidecarClient};
use raft_api::daemon::{Operation, SubmitResult};
use tokio::time::MissedTickBehavior;

use crate::Shutdown;
use crate::backoff::Backoff;
use crate::checkpoint::Checkpointer;
use crate::config::OPERATION_TYPE;
use crate::state::Shared;

const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Operation `n` of daemon `daemon_id`. Its content depends only on (daemon, n), so a
/// resubmission after a restart is the same operation to the sidecar's dedupe (which ignores
/// `timestamp` and `daemonId`).
pub fn operation(daemon_id: &str, n: u64) -> Operation {
    Operation {
        id: format!("{daemon_id}-{n}"),
        op_type: OPERATION_TYPE.to_string(),
        payload: Some(serde_json::json!({ "by": 1, "n": n })),
        daemon_id: Some(daemon_id.to_string()),
        timestamp: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok()),
    }
}

/// How to react to a failed submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The sidecar is not there yet or not a cluster member yet (connection refused,
    /// `NOT_INITIALIZED`): normal while a pod starts; wait and retry.
    NotReady,
    /// Transient (`NO_LEADER`, `NO_QUORUM`, `TIMEOUT`, `SHUTTING_DOWN`, a broken connection):
    /// retry the same id.
    Transient,
    /// Refused for good (`ID_CONFLICT`, `INVALID_OPERATION`, `PAYLOAD_TOO_LARGE`, …): retrying
    /// cannot help.
    Final,
}

pub fn classify(e: &ClientError) -> Retry {
    match e {
        ClientError::Api {
            code: ErrorCode::NotInitialized,
            ..
        } => Retry::NotReady,
        ClientError::Api { code, .. } if code.is_retryable() => Retry::Transient,
        // An answer over the client's size limit would be as large the next time.
        ClientError::Api { .. }
        | ClientError::NoAddress(_)
        | ClientError::Tls(_)
        | ClientError::TooLarge { .. }
        | ClientError::Backup { .. } => Retry::Final,
        ClientError::Http { source, .. } if source.is_connect() => Retry::NotReady,
        // A request that timed out or broke may still have been committed: retrying the same id
        // is exactly how to find out.
        ClientError::Http { .. } | ClientError::Unexpected { .. } => Retry::Transient,
    }
}

fn retry_after(e: &ClientError) -> Option<Duration> {
    match e {
        ClientError::Api { body, .. } => body.error.retry_after_ms.map(Duration::from_millis),
        _ => None,
    }
}

/// Why an operation was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum GaveUp {
    #[error("refused for good: {0}")]
    Refused(#[source] ClientError),
    #[error("not committed within {deadline:?} after {attempts} attempts; last error: {last}")]
    Deadline {
        deadline: Duration,
        attempts: u32,
        #[source]
        last: ClientError,
    },
    #[error("shutting down")]
    Shutdown,
}

/// Submit `op` until it is acknowledged or we give up. The deadline starts at the first answer
/// from a sidecar that is a cluster member: a daemon started before its sidecar has joined
/// waits (each attempt bounded by the request timeout, each failure logged) rather than
/// burning through its operations. Once started, every kind of failure counts.
pub async fn submit_with_retries(
    client: &SidecarClient,
    op: &Operation,
    deadline: Duration,
    shutdown: &mut Shutdown,
) -> Result<SubmitResult, GaveUp> {
    let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
    let mut started: Option<Instant> = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let result = tokio::select! {
            r = client.submit(op) => r,
            () = shutdown.wait() => return Err(GaveUp::Shutdown),
        };
        let err = match result {
            Ok(ack) => return Ok(ack),
            Err(e) => e,
        };
        let kind = classify(&err);
        if kind == Retry::Final {
            return Err(GaveUp::Refused(err));
        }
        if kind == Retry::Transient && started.is_none() {
            started = Some(Instant::now());
        }
        let remaining = started.map(|s| deadline.saturating_sub(s.elapsed()));
        if remaining.is_some_and(|r| r.is_zero()) {
            return Err(GaveUp::Deadline {
                deadline,
                attempts,
                last: err,
            });
        }
        let mut delay = backoff.delay(retry_after(&err));
        if let Some(r) = remaining {
            delay = delay.min(r);
        }
        if kind == Retry::NotReady && started.is_none() {
            tracing::info!(id = %op.id, attempt = attempts, retry_in = ?delay, "sidecar not ready yet: {}", crate::error_chain(&err));
        } else {
            tracing::warn!(id = %op.id, attempt = attempts, retry_in = ?delay, "submit failed, retrying the same id: {}", crate::error_chain(&err));
        }
        if shutdown.sleep(delay).await {
            return Err(GaveUp::Shutdown);
        }
    }
}

/// The submit loop: operations `progress.next ..= operations`, at most one per `interval`.
pub struct Submitter {
    pub client: SidecarClient,
    pub shared: Arc<Shared>,
    pub checkpointer: Arc<Checkpointer>,
    pub operations: u64,
    pub interval: Duration,
    pub op_deadline: Duration,
}

impl Submitter {
    pub async fn run(self, mut shutdown: Shutdown) {
        let first = self.shared.submit_progress().next;
        if first > self.operations {
            if self.operations > 0 {
                tracing::info!(
                    operations = self.operations,
                    "all operations were already submitted before this start"
                );
            }
            return;
        }
        tracing::info!(
            from = first,
            to = self.operations,
            "submitting operations {}-{first}..{}",
            self.shared.daemon_id(),
            self.operations
        );
        // Delay (not Burst): after a stall, keep the rate instead of catching up in a burst.
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        for n in first..=self.operations {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.wait() => return,
            }
            let op = operation(self.shared.daemon_id(), n);
            self.shared.begin_submit();
            let outcome =
                submit_with_retries(&self.client, &op, self.op_deadline, &mut shutdown).await;
            match outcome {
                Ok(ack) => {
                    tracing::debug!(id = %op.id, log_index = ack.log_index, duplicate = ack.duplicate, "acknowledged");
                    self.shared.settle(true);
                }
                Err(GaveUp::Shutdown) => {
                    // Not settled: after a restart this id is submitted again, and the sidecar
                    // dedupes it if this attempt did commit.
                    self.shared.abandon();
                    return;
                }
                Err(e) => {
                    // It may still commit (e.g. after a TIMEOUT); if so, the journal watch
                    // executes it like any other operation. "Failed" means we stopped asking.
                    tracing::error!(id = %op.id, "operation counted as failed: {}", crate::error_chain(&e));
                    self.shared.settle(false);
                }
            }
            // Persist progress so a restart does not resubmit everything; a lost save only
            // means a few duplicates.
            if let Err(e) = self.checkpointer.save(|| self.shared.checkpoint()).await {
                tracing::error!("{e}");
            }
        }
        let p = self.shared.submit_progress();
        tracing::info!(
            acknowledged = p.acknowledged,
            failed = p.failed,
            "finished submitting {} operations",
            self.operations
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_api::ErrorBody;

    fn api(code: ErrorCode) -> ClientError {
        ClientError::Api {
            status: code.http_status(),
            code,
            message: String::new(),
            body: Box::new(ErrorBody::new(code, "")),
        }
    }

    #[test]
    fn classification_follows_the_sidecar_error_table() {
        for code in [
            ErrorCode::NoLeader,
            ErrorCode::NoQuorum,
            ErrorCode::Timeout,
            ErrorCode::ShuttingDown,
        ] {
            assert_eq!(classify(&api(code)), Retry::Transient, "{code}");
        }
        assert_eq!(classify(&api(ErrorCode::NotInitialized)), Retry::NotReady);
        for code in [
            ErrorCode::IdConflict,
            ErrorCode::InvalidOperation,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Internal,
        ] {
            assert_eq!(classify(&api(code)), Retry::Final, "{code}");
        }
        let unexpected = ClientError::Unexpected {
            url: String::new(),
            status: 502,
            reason: String::new(),
        };
        assert_eq!(classify(&unexpected), Retry::Transient);
    }

    #[test]
    fn retry_after_is_read_from_the_error_body() {
        let mut e = api(ErrorCode::NoLeader);
        assert_eq!(retry_after(&e), None);
        if let ClientError::Api { body, .. } = &mut e {
            body.error.retry_after_ms = Some(500);
        }
        assert_eq!(retry_after(&e), Some(Duration::from_millis(500)));
    }

    #[test]
    fn operations_are_deterministic_but_for_the_timestamp() {
        let a = operation("d-0", 7);
        let b = operation("d-0", 7);
        assert_eq!(a.id, "d-0-7");
        assert_eq!(a.op_type, OPERATION_TYPE);
        assert_eq!(a.payload, b.payload);
        assert_ne!(operation("d-0", 8).payload, a.payload);
    }

    #[tokio::test]
    async fn a_daemon_before_its_sidecar_waits_without_spending_its_deadline() {
        // Nothing listens on this port: connection refused, i.e. NotReady, so the short
        // deadline never starts; only shutdown ends the wait.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = SidecarClient::new(
            Some(&format!("127.0.0.1:{port}")),
            None,
            None,
            Duration::from_secs(1),
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut shutdown = Shutdown::new(rx);
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = tx.send(true);
        });
        let op = operation("d", 1);
        let r = submit_with_retries(&client, &op, Duration::from_millis(1), &mut shutdown).await;
        assert!(matches!(r, Err(GaveUp::Shutdown)), "{r:?}");
        stop.await.unwrap();
    }
}
