//! Waiting on a cluster from a test: poll a condition until a deadline, tell which client
//! errors are worth a retry, read a Server-Sent Events body until what is awaited has arrived.

use std::future::Future;
use std::time::{Duration, Instant};

use raft_api::client::ClientError;

/// Poll `probe` until it yields a value, failing the test after `within` naming `what`.
#[expect(
    clippy::panic,
    reason = "a test helper: the panic fails the calling test and names the condition"
)]
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether retrying the same request (same operation id) may succeed: a retryable error code
/// from the sidecar, or no HTTP answer at all (refused, reset, timed out).
pub fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Api { code, .. } => code.is_retryable(),
        ClientError::Http { .. } => true,
        _ => false,
    }
}

/// Read an SSE body until `done(text so far)` holds or `within` passes; returns the text read.
pub async fn sse_until<S, B, E>(
    events: &mut S,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String
where
    S: futures_util::Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    use futures_util::StreamExt;
    let mut text = String::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(chunk)) = events.next().await {
            text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
            if done(&text) {
                return;
            }
        }
    })
    .await;
    text
}
