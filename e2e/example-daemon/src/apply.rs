//! Applying: follow the sidecar's journal watch and execute every committed operation exactly
//! once, in journal order, whoever submitted it.
//!
//! - The journal is the only source of truth. Operations are executed when they arrive here,
//!   never when a submit is acknowledged: the acknowledgement may be lost, may come from a
//!   retry, and says nothing about operations other daemons submitted.
//! - The journal is dense (index `n + 1` follows `n`) and the same on every node, so
//!   "executed up to index N" fully describes where a daemon stands. After a drop or a restart
//!   the watch reopens at `applied + 1`; anything at or below `applied` is ignored, so nothing
//!   runs twice.
//! - When the sidecar no longer holds `applied + 1` (`COMPACTED`: `--journal-retention` trimmed
//!   it, e.g. after a long outage), the missed operations cannot be replayed from the journal.
//!   A real daemon must then restore its state as of `firstIndex - 1` from another source
//!   (a peer's state snapshot, a backup) and resume at `firstIndex`. This example has no such
//!   source: it logs an error, folds the skip into its digest (so its divergence is visible)
//!   and resumes at `firstIndex`.

use std::sync::Arc;
use std::time::Duration;

use raft_api::client::{ClientError, SidecarClient};
use raft_api::daemon::JournalEntry;
use raft_api::{ErrorBody, ErrorCode};

use crate::Shutdown;
use crate::backoff::Backoff;
use crate::checkpoint::Checkpointer;
use crate::digest::Step;
use crate::sse::{SseEvent, SseParser};
use crate::state::Shared;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Longest event-stream line: an operation is at most 4 MiB, plus JSON framing and escaping.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Why a watch connection ended; every case but shutdown reconnects.
#[derive(Debug, thiserror::Error)]
pub enum WatchEnd {
    #[error("shutting down")]
    Shutdown,
    #[error("cannot open the journal watch: {0}")]
    Open(#[source] ClientError),
    #[error("no answer to the journal watch request within {0:?}")]
    OpenTimeout(Duration),
    #[error("the sidecar ended the journal watch (it is shutting down or restarting)")]
    Closed,
    #[error("reading the journal watch failed: {0}")]
    Read(#[source] reqwest::Error),
    #[error("nothing received on the journal watch for {0:?}, not even a keep-alive")]
    Idle(Duration),
    #[error("malformed event stream: {0}")]
    Stream(#[from] crate::sse::SseError),
    #[error("malformed journal entry: {0}")]
    Entry(#[source] serde_json::Error),
    #[error("journal entries {expected}..{got} are missing from the watch")]
    Gap { expected: u64, got: u64 },
    #[error("journal compacted: {applied} is applied here, the sidecar starts at {first_index}")]
    Compacted { applied: u64, first_index: u64 },
    #[error("the sidecar reported an error on the journal watch: {0}")]
    Sidecar(String),
}

/// The journal follower.
pub struct Applier {
    pub client: SidecarClient,
    pub shared: Arc<Shared>,
    pub checkpointer: Arc<Checkpointer>,
    /// Deadline of the watch request's answer (headers).
    pub open_timeout: Duration,
    /// See `--watch-idle-timeout`.
    pub idle_timeout: Duration,
}

impl Applier {
    /// Follow the journal until shutdown, reconnecting after every failure.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        loop {
            let before = self.shared.apply_state().applied_index;
            let end = self.watch(&mut shutdown).await;
            if self.shared.apply_state().applied_index > before {
                backoff.reset(); // made progress: the connection was healthy for a while
            }
            match end {
                WatchEnd::Shutdown => break,
                WatchEnd::Compacted {
                    applied,
                    first_index,
                } if first_index > applied + 1 => {
                    tracing::error!(
                        applied,
                        first_index,
                        "the journal was compacted past this daemon: operations {}..{} can no \
                         longer be read and will not be executed here. A real daemon must now \
                         restore its state as of index {} from another source (a peer's state \
                         snapshot, a backup) before resuming; this example marks the gap in its \
                         digest and resumes at {first_index}",
                        applied + 1,
                        first_index - 1,
                        first_index - 1,
                    );
                    self.shared.with_apply(|s| s.resync(first_index));
                    self.save().await;
                    continue; // nothing to wait for: the next position is known to exist
                }
                WatchEnd::Open(ref e) if is_not_ready(e) => {
                    tracing::info!(
                        "journal watch: sidecar not ready yet: {}",
                        crate::error_chain(&end)
                    );
                }
                _ => tracing::warn!("journal watch: {}; reconnecting", crate::error_chain(&end)),
            }
            if shutdown.sleep(backoff.delay(None)).await {
                break;
            }
        }
        self.save().await;
    }

    async fn save(&self) {
        if let Err(e) = self.checkpointer.save(|| self.shared.checkpoint()).await {
            // The in-memory state stays correct; a restart would just replay more entries.
            tracing::error!("{e}");
        }
    }

    /// One watch connection, from `applied + 1` until it ends.
    async fn watch(&self, shutdown: &mut Shutdown) -> WatchEnd {
        let from = self.shared.apply_state().next_index();
        let path = format!("/v1/journal/watch?from={from}");
        let opened = tokio::select! {
            r = tokio::time::timeout(self.open_timeout, self.client.stream(&path)) => r,
            () = shutdown.wait() => return WatchEnd::Shutdown,
        };
        let mut response = match opened {
            Err(_) => return WatchEnd::OpenTimeout(self.open_timeout),
            Ok(Err(e)) => {
                return match compacted_first_index(&e) {
                    Some(first_index) => WatchEnd::Compacted {
                        applied: from - 1,
                        first_index,
                    },
                    None => WatchEnd::Open(e),
                };
            }
            Ok(Ok(r)) => r,
        };
        tracing::info!(from, "following the journal");
        let mut parser = SseParser::new(MAX_LINE);
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(self.idle_timeout, response.chunk()) => c,
                () = shutdown.wait() => return WatchEnd::Shutdown,
            };
            let bytes = match chunk {
                Err(_) => return WatchEnd::Idle(self.idle_timeout),
                Ok(Err(e)) => return WatchEnd::Read(e),
                Ok(Ok(None)) => return WatchEnd::Closed,
                Ok(Ok(Some(bytes))) => bytes,
            };
            let events = match parser.push(&bytes) {
                Ok(events) => events,
                Err(e) => return WatchEnd::Stream(e),
            };
            let mut executed = 0usize;
            let mut end = None;
            for event in &events {
                match self.handle(event) {
                    Ok(true) => executed += 1,
                    Ok(false) => {}
                    Err(e) => {
                        end = Some(e);
                        break;
                    }
                }
            }
            // One checkpoint per chunk: a busy stream delivers bigger chunks while we write,
            // so the fsync cost is shared by more entries.
            if executed > 0 {
                self.save().await;
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Execute one event; `Ok(true)` when it executed an operation.
    fn handle(&self, event: &SseEvent) -> Result<bool, WatchEnd> {
        match event.event.as_str() {
            "operation" => {
                let entry: JournalEntry =
                    serde_json::from_str(&event.data).map_err(WatchEnd::Entry)?;
                match self.shared.with_apply(|s| s.execute(&entry)) {
                    Step::Executed => {
                        tracing::debug!(index = entry.log_index, id = %entry.operation.id, "executed");
                        Ok(true)
                    }
                    Step::AlreadyApplied => Ok(false),
                    Step::Gap { expected, got } => Err(WatchEnd::Gap { expected, got }),
                }
            }
            "error" => {
                let applied = self.shared.apply_state().applied_index;
                match serde_json::from_str::<ErrorBody>(&event.data) {
                    Ok(body) => match (body.error.code, body.error.first_index) {
                        (ErrorCode::Compacted, Some(first_index)) => Err(WatchEnd::Compacted {
                            applied,
                            first_index,
                        }),
                        (code, _) => {
                            Err(WatchEnd::Sidecar(format!("{code}: {}", body.error.message)))
                        }
                    },
                    Err(_) => Err(WatchEnd::Sidecar(event.data.clone())),
                }
            }
            other => {
                tracing::debug!(event = other, "ignoring an unknown event type");
                Ok(false)
            }
        }
    }
}

/// `firstIndex` of a `COMPACTED` answer.
fn compacted_first_index(e: &ClientError) -> Option<u64> {
    match e {
        ClientError::Api {
            code: ErrorCode::Compacted,
            body,
            ..
        } => body.error.first_index,
        _ => None,
    }
}

fn is_not_ready(e: &ClientError) -> bool {
    matches!(crate::submit::classify(e), crate::submit::Retry::NotReady)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use warp::Filter;
    use warp::http::Response;

    use crate::checkpoint::SubmitProgress;
    use crate::digest::ApplyState;

    fn entry(index: u64) -> String {
        format!(
            "event:operation\ndata:{{\"logIndex\":{index},\"term\":1,\"operation\":{{\"id\":\"op-{index}\",\"type\":\"example.increment\"}}}}\nid:{index}\n\n"
        )
    }

    /// A fake sidecar whose journal watch answers by `from`: entries 1-2 then the stream
    /// ends; 410 COMPACTED (first index 5) for 3; entry 5, a keep-alive, then a mid-stream
    /// COMPACTED error (first index 8) for 5; entry 8 for 8; an empty stream otherwise.
    async fn fake_sidecar(seen: Arc<Mutex<Vec<u64>>>) -> std::net::SocketAddr {
        let route = warp::path!("v1" / "journal" / "watch")
            .and(warp::query::<std::collections::HashMap<String, u64>>())
            .map(move |q: std::collections::HashMap<String, u64>| {
                let from = q.get("from").copied().unwrap_or(0);
                seen.lock().unwrap().push(from);
                let sse = |body: String| {
                    Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(body)
                        .unwrap()
                };
                match from {
                    1 => sse(entry(1) + &entry(2)),
                    3 => Response::builder()
                        .status(410)
                        .header("content-type", "application/json")
                        .body(r#"{"error":{"code":"COMPACTED","message":"gone","firstIndex":5}}"#.to_string())
                        .unwrap(),
                    5 => sse(entry(5) + ":keep-alive\n\n" + "event:error\ndata:{\"error\":{\"code\":\"COMPACTED\",\"message\":\"gone\",\"firstIndex\":8}}\n\n"),
                    8 => sse(entry(8)),
                    _ => sse(String::new()),
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        addr
    }

    #[tokio::test]
    async fn follows_reconnects_and_resyncs_after_compaction() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let addr = fake_sidecar(seen.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(Shared::new(
            "d".into(),
            ApplyState::default(),
            SubmitProgress::start(),
        ));
        let checkpointer = Arc::new(Checkpointer::new(Some(dir.path())));
        let applier = Applier {
            client: SidecarClient::new(Some(&addr.to_string()), None, None, Duration::from_secs(2)),
            shared: shared.clone(),
            checkpointer: checkpointer.clone(),
            open_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(applier.run(Shutdown::new(rx)));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while shared.apply_state().applied_index < 8 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "applied index 8 not reached within 10 s: {:?}, requests {:?}",
                shared.apply_state(),
                seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();

        let s = shared.apply_state();
        assert_eq!((s.applied_index, s.executed, s.resyncs), (8, 4, 2));
        assert_eq!(s.counter, 4);
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests[..4], [1, 3, 5, 8], "{requests:?}");
        // The last checkpoint holds the final state.
        let (cp, restored) = crate::checkpoint::load(checkpointer.path().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(restored, s);
        assert_eq!(cp.daemon_id, "d");
    }
}
