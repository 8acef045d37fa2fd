//! Server-Sent Event streams: the journal watch (`/v1/journal/watch`, resumable by
//! `Last-Event-ID`) and consensus events (`/v1/events`). Both end when the node shuts down, so
//! a graceful shutdown never waits on an idle subscriber.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use raft_api::ErrorCode;
use tokio::sync::broadcast::error::RecvError;
use warp::reply::{Reply, Response};
use warp::sse::Event;

use super::error::ApiError;
use super::journal::{check_compacted, compacted, journal_entry};
use crate::raft::health;
use crate::raft::node::{Lifecycle, Node};
use crate::store::state_machine::JournalSlice;

const PAGE: usize = 256;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn sse_reply<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + Sync + 'static,
{
    warp::sse::reply(warp::sse::keep_alive().interval(KEEP_ALIVE).stream(stream)).into_response()
}

fn error_event(err: &ApiError) -> Event {
    Event::default()
        .event("error")
        .data(serde_json::to_string(&err.0).unwrap_or_default())
}

/// Every committed operation from `from` on (default: the oldest retained), then live ones.
pub fn journal_watch(node: Arc<Node>, from: Option<u64>) -> Response {
    let first = node.journal.applied().journal.first_index;
    let start = from.unwrap_or(first).max(1);
    if let Err(e) = check_compacted(start, first) {
        return e.into_response();
    }
    let reader = node.journal.clone();
    let watched = node.clone();
    let stream = async_stream(&node, move |tx| async move {
        let mut progress = reader.subscribe();
        let mut next = start;
        loop {
            // Subscribed before the check, so a change right after it still wakes the wait.
            let standing = watched.standing_changed();
            let removed = watched.lifecycle() == Lifecycle::Removed;
            if let Some(why) = health::watch_ending(removed, watched.health().partition) {
                let _ = tx.send(error_event(&ApiError::from(why))).await;
                return;
            }
            if reader.applied().journal.last_index() < next {
                tokio::select! {
                    changed = progress.changed() => if changed.is_err() { return },
                    () = standing => {}
                    () = tx.closed() => return,
                }
                continue;
            }
            // The page starts exactly at `next`, or says it was compacted: never a gap.
            let records = match reader.page(Some(next), PAGE).await {
                Ok(JournalSlice::Records { records, .. }) => records,
                Ok(JournalSlice::Compacted { first_index }) => {
                    let _ = tx.send(error_event(&compacted(next, first_index))).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(error_event(&ApiError::internal(e))).await;
                    return;
                }
            };
            for (index, record) in records {
                let event = match journal_entry(index, record) {
                    Ok(entry) => Event::default()
                        .id(index.to_string())
                        .event("operation")
                        .data(serde_json::to_string(&entry).unwrap_or_default()),
                    Err(e) => {
                        let _ = tx.send(error_event(&e)).await;
                        return;
                    }
                };
                if tx.send(event).await.is_err() {
                    return;
                }
                next = index + 1;
            }
        }
    });
    sse_reply(stream)
}

/// Consensus events as they happen (`consensus:leader_elected`, `partition:detected`, …).
pub fn events(node: Arc<Node>) -> Response {
    let mut rx = node.events.subscribe();
    let stream = async_stream(&node, move |tx| async move {
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                () = tx.closed() => return,
            };
            match received {
                Ok(ev) => {
                    let event = Event::default()
                        .event(ev.name())
                        .data(ev.data().to_string());
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let err = ApiError::new(
                        ErrorCode::Internal,
                        format!("subscriber too slow: {n} events dropped"),
                    );
                    if tx.send(error_event(&err)).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    sse_reply(stream)
}

/// A stream fed by a producer task through a small channel (back-pressure on slow readers).
/// The producer stops, and the stream ends, when the node begins shutting down.
fn async_stream<F, Fut>(
    node: &Node,
    producer: F,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + Sync + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let work = producer(tx);
    let stopping = node.stopping_signal();
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = stopping => {}
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok)
}
