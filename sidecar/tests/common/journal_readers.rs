//! Journal readers for the nemesis: on every node a live watcher (`/v1/journal/watch`) and a
//! paginating reader (`/v1/journal`), each recording exactly what it was given, so the checker
//! can prove every reader gap-free (every index from where it started, or an explicit
//! `COMPACTED` first) and in the agreed order, across kills, pauses, partitions, snapshot
//! installs and retention trims.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use raft_api::ErrorBody;
use raft_api::ErrorCode;
use raft_api::client::{ClientError, SidecarClient};
use raft_api::daemon::JournalEntry;
use tokio::sync::watch;

use super::checker::{Entry, Observed};
use super::sse;

/// A page of the paginating reader (small, so pages often straddle a trim or an install).
const PAGE: usize = 37;
/// A watch that carries nothing (no event, no keep-alive) for this long is dead: reconnect.
const SILENT: Duration = Duration::from_secs(20);
/// Deadline on opening a watch or reading a page (a paused or cut-off node never answers).
const OPEN: Duration = Duration::from_secs(8);

/// When readers stop: `None` while the run goes on; at its end, the journal index every
/// reader must reach and the deadline for reaching it.
pub type Stop = watch::Receiver<Option<(u64, Instant)>>;

/// What one reader saw, and what went wrong on the way (for the summary).
#[derive(Debug)]
pub struct ReaderLog {
    pub observed: Observed,
    /// Explicit `COMPACTED` answers (the reader then starts over at the first retained index).
    pub compacted: usize,
    /// Error answers and dropped streams, by kind (each followed by a resume where it left off).
    pub interruptions: BTreeMap<String, usize>,
    /// Per page (paginating reader only): how many entries its `commitIndex` was behind the
    /// newest one any reader had been given by then, a measure of how stale a local read is.
    pub staleness: Vec<u64>,
}

impl ReaderLog {
    fn new(node: &str, kind: &str) -> Self {
        Self {
            observed: Observed {
                reader: format!("{node} {kind}"),
                segments: vec![(1, Vec::new())],
                reached_end: false,
            },
            compacted: 0,
            interruptions: BTreeMap::new(),
            staleness: Vec::new(),
        }
    }

    /// The index to read next.
    fn next(&self) -> u64 {
        self.observed.segments.last().map_or(1, |(from, entries)| {
            entries.last().map_or(*from, |e| e.index + 1)
        })
    }

    fn record(&mut self, e: &JournalEntry) {
        if let Some((_, entries)) = self.observed.segments.last_mut() {
            entries.push(Entry {
                index: e.log_index,
                term: e.term,
                id: e.operation.id.clone(),
            });
        }
    }

    fn interrupted(&mut self, kind: impl Into<String>) {
        *self.interruptions.entry(kind.into()).or_default() += 1;
    }

    /// After a `COMPACTED`: a new segment from the node's first retained index (asked until
    /// the node answers or the readers' deadline passes).
    async fn start_over(&mut self, node: &SidecarClient, stop: &Stop) {
        self.compacted += 1;
        loop {
            match tokio::time::timeout(OPEN, node.journal(None, Some(1))).await {
                Ok(Ok(page)) => {
                    self.observed.segments.push((page.first_index, Vec::new()));
                    return;
                }
                _ if self.done(stop) => return,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Whether the run is over and this reader read through its end (or gave up at the
    /// deadline, which the checker reports).
    fn done(&mut self, stop: &Stop) -> bool {
        let Some((end, deadline)) = *stop.borrow() else {
            return false;
        };
        self.observed.reached_end = self.next() > end;
        self.observed.reached_end || Instant::now() > deadline
    }
}

fn kind_of(e: &ClientError) -> String {
    match e.code() {
        Some(code) => code.to_string(),
        None => "connection".into(),
    }
}

/// Page through `node`'s journal from index 1 until `stop` says the run is over. `newest` is
/// the highest commit index any reader was given so far, shared by all of them.
pub async fn pager(
    node: SidecarClient,
    name: String,
    mut stop: Stop,
    newest: Arc<AtomicU64>,
) -> ReaderLog {
    let mut log = ReaderLog::new(&name, "pager");
    while !log.done(&stop) {
        let next = log.next();
        match tokio::time::timeout(OPEN, node.journal(Some(next), Some(PAGE))).await {
            Ok(Ok(page)) => {
                let seen = newest.fetch_max(page.commit_index, Ordering::Relaxed);
                log.staleness.push(seen.saturating_sub(page.commit_index));
                for e in &page.entries {
                    log.record(e);
                }
                if page.entries.is_empty() {
                    let _ = tokio::time::timeout(Duration::from_millis(100), stop.changed()).await;
                }
            }
            Ok(Err(e)) if e.code() == Some(ErrorCode::Compacted) => {
                log.start_over(&node, &stop).await;
            }
            Ok(Err(e)) => {
                log.interrupted(kind_of(&e));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => log.interrupted("page-timeout"),
        }
    }
    log
}

/// Watch `node`'s journal from index 1 until `stop` says the run is over, resuming where the
/// stream left off after every error event or dropped connection.
pub async fn watcher(node: SidecarClient, name: String, stop: Stop) -> ReaderLog {
    let mut log = ReaderLog::new(&name, "watcher");
    while !log.done(&stop) {
        let path = format!("/v1/journal/watch?from={}", log.next());
        let response = match tokio::time::timeout(OPEN, node.stream(&path)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.code() == Some(ErrorCode::Compacted) => {
                log.start_over(&node, &stop).await;
                continue;
            }
            Ok(Err(e)) => {
                log.interrupted(kind_of(&e));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                log.interrupted("open-timeout");
                continue;
            }
        };
        follow(&mut log, &node, response, &stop).await;
    }
    log
}

/// Read one watch stream to its end (or its silence), recording every event.
async fn follow(
    log: &mut ReaderLog,
    node: &SidecarClient,
    response: reqwest::Response,
    stop: &Stop,
) {
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    loop {
        let chunk = match tokio::time::timeout(SILENT, body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(_)) | None) => return log.interrupted("stream-dropped"),
            Err(_) => return log.interrupted("stream-silent"),
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data = sse::field(&event, "data:").unwrap_or_default();
            match sse::field(&event, "event:").as_deref() {
                Some("operation") => match serde_json::from_str::<JournalEntry>(&data) {
                    Ok(e) => log.record(&e),
                    Err(e) => return log.interrupted(format!("bad event {data:?}: {e}")),
                },
                Some("error") => {
                    let code = serde_json::from_str::<ErrorBody>(&data).map(|b| b.error.code);
                    match code {
                        Ok(ErrorCode::Compacted) => log.start_over(node, stop).await,
                        Ok(code) => {
                            log.interrupted(code.to_string());
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(_) => log.interrupted(format!("bad error event {data:?}")),
                    }
                    return;
                }
                _ => {}
            }
        }
        if log.done(stop) {
            return;
        }
    }
}
