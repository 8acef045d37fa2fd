//! Readers never skip an entry: under heavy writes with a short journal retention, slow
//! watchers and pagers on every node get every index from where they started, in order, or an
//! explicit `COMPACTED` first; never a hole.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;
#[path = "common/sse.rs"]
mod sse;

use std::time::{Duration, Instant};

use common::TestCluster;
use raft_api::ErrorCode;
use raft_api::daemon::Operation;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const WRITERS: usize = 32;
const WRITE_FOR: Duration = Duration::from_secs(8);

/// How long readers go on once the writers stopped: slow while the writes last, then at full
/// pace until each one met a `COMPACTED` or caught up (nothing more to read), within
/// [`Pace::deadline`]. A reader that was still inside a page it took before the trim (a page
/// is 256 records, 4 MiB here) needs that time on a loaded machine to reach the trim.
#[derive(Clone, Copy)]
struct Pace {
    writers_stop: Instant,
    deadline: Instant,
}

impl Pace {
    fn slow(self) -> bool {
        Instant::now() < self.writers_stop
    }

    /// Whether a reader with `read` so far, that found nothing more to read when `idle`, is done.
    /// One that met the trim goes on until it has read something: on a loaded machine a slow
    /// reader can meet it again at every restart while the writes last, and only once they
    /// stopped (the trim stands still) reads what is left.
    fn done(self, read: &Read, idle: bool) -> bool {
        let now = Instant::now();
        now >= self.deadline
            || (now >= self.writers_stop && ((read.compacted > 0 && read.entries > 0) || idle))
    }
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Read {
    entries: u64,
    /// Explicit `COMPACTED` answers (the reader then starts over from the first index).
    compacted: u64,
    /// Indices that did not follow the previous one, with no error in between.
    holes: Vec<String>,
}

impl Read {
    /// Count an explicit `COMPACTED`; the index to start over from (the node's first).
    async fn restart_after_compacted(&mut self, t: &TestCluster, i: usize) -> u64 {
        self.compacted += 1;
        t.client(i)
            .journal(None, Some(1))
            .await
            .unwrap()
            .first_index
    }
}

/// `GET /v1/journal/watch?from=N` over HTTP/1.0 (the body is then the raw event stream, with
/// no chunk framing), on a socket with a 4 KiB receive buffer, read at the pace the test
/// chooses.
async fn open_watch(t: &TestCluster, i: usize, from: u64) -> Result<TcpStream, String> {
    // A small receive buffer (which also turns off its autotuning, up to 32 MiB here) keeps the
    // node's send buffer small too: when the reader pauses, the node's side of the watch blocks
    // after a few events instead of writing megabytes ahead.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(t.c.nodes[i].api).await.unwrap();
    let request = format!("GET /v1/journal/watch?from={from} HTTP/1.0\r\nHost: node\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            return Err(format!("node {i} closed the watch before its headers"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(stream)
    } else {
        Err(head)
    }
}

/// Watch node `i` from index 1, reading slowly at the `pace`; checks every event's index.
async fn slow_watcher(t: &TestCluster, i: usize, pace: Pace) -> Read {
    let mut read = Read::default();
    let mut from = 1u64;
    while !pace.done(&read, false) {
        let opened = tokio::time::timeout(Duration::from_secs(10), open_watch(t, i, from))
            .await
            .unwrap_or_else(|_| panic!("node {i} did not answer a watch within 10 s"));
        let mut stream = match opened {
            Ok(s) => s,
            Err(head) if head.contains("410") => {
                from = read.restart_after_compacted(t, i).await;
                continue;
            }
            Err(head) => panic!("watch on node {i}: {head}"),
        };
        let mut buf = String::new();
        let mut expect: Option<u64> = None;
        let mut chunk = vec![0u8; 64 * 1024];
        // A slow consumer: bursts of reading, then pauses in which the node's side of the watch
        // blocks on the full socket while retention trims past where its next page starts.
        let mut burst_until = Instant::now();
        'stream: while !pace.done(&read, false) {
            if pace.slow() && Instant::now() >= burst_until {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                burst_until = Instant::now() + Duration::from_millis(500);
            }
            let n =
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut chunk)).await {
                    Ok(Ok(0)) => break 'stream,
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => panic!("watch on node {i}: {e}"),
                    // A second without an event: caught up, once the writers stopped.
                    Err(_) if pace.done(&read, true) => return read,
                    Err(_) => continue,
                };
            buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let field = |name: &str| sse::field(&event, name);
                match field("event:").as_deref() {
                    Some("operation") => {
                        let index: u64 = field("id:").unwrap().parse().unwrap();
                        if let Some(want) = expect
                            && index != want
                        {
                            read.holes
                                .push(format!("node {i}: watch gave {index} after {}", want - 1));
                        }
                        expect = Some(index + 1);
                        from = index + 1;
                        read.entries += 1;
                    }
                    Some("error") => {
                        assert!(event.contains("COMPACTED"), "node {i}: {event}");
                        from = read.restart_after_compacted(t, i).await;
                        break 'stream;
                    }
                    _ => {}
                }
            }
        }
    }
    read
}

/// Page through node `i`'s journal seven entries at a time, slowly at the `pace`.
async fn slow_pager(t: &TestCluster, i: usize, pace: Pace) -> Read {
    let mut read = Read::default();
    let mut from = 1u64;
    while !pace.done(&read, false) {
        match t.client(i).journal(Some(from), Some(7)).await {
            Ok(page) => {
                if let Some(first) = page.entries.first()
                    && first.log_index != from
                {
                    read.holes.push(format!(
                        "node {i}: page from {from} started at {}",
                        first.log_index
                    ));
                }
                for w in page.entries.windows(2) {
                    if w[1].log_index != w[0].log_index + 1 {
                        read.holes.push(format!(
                            "node {i}: page has {} after {}",
                            w[1].log_index, w[0].log_index
                        ));
                    }
                }
                read.entries += page.entries.len() as u64;
                match page.entries.last() {
                    Some(last) => from = last.log_index + 1,
                    None if pace.done(&read, true) => return read,
                    None => {}
                }
            }
            Err(e) if e.code() == Some(ErrorCode::Compacted) => {
                from = read.restart_after_compacted(t, i).await;
            }
            Err(e) => panic!("page on node {i}: {e}"),
        }
        if pace.slow() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    read
}

/// 16 KiB operations: a few hundred fill what a slow watcher's socket buffers hold.
fn big_op(id: &str) -> Operation {
    Operation {
        id: id.to_string(),
        op_type: "test".into(),
        payload: Some(serde_json::json!({ "data": "x".repeat(16 * 1024) })),
        daemon_id: None,
        timestamp: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_get_every_index_or_compacted_never_a_hole() {
    let t = TestCluster::start(3, &["--journal-retention", "50"]).await;
    let stop = Instant::now() + WRITE_FOR;
    let writers = (0..WRITERS).map(|w| {
        let t = &t;
        async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                let node = (w + usize::try_from(n).unwrap()) % 3;
                let id = format!("w{w}-{n}");
                // Failures are fine here (this test is about readers); retry the same id.
                if t.client(node).submit(&big_op(&id)).await.is_ok() {
                    n += 1;
                }
            }
            n
        }
    });
    let pace = Pace {
        writers_stop: stop,
        deadline: stop + Duration::from_secs(60),
    };
    let watchers = (0..3).map(|i| slow_watcher(&t, i, pace));
    let pagers = (0..3).map(|i| slow_pager(&t, i, pace));
    let (written, watched, paged) = tokio::join!(
        futures_util::future::join_all(writers),
        futures_util::future::join_all(watchers),
        futures_util::future::join_all(pagers),
    );
    let written: u64 = written.iter().sum();
    println!("written={written} watched={watched:?} paged={paged:?}");
    assert!(written > 500, "too few writes to test anything: {written}");
    for read in watched.iter().chain(&paged) {
        assert!(
            read.holes.is_empty(),
            "a reader skipped entries: {:?}",
            read.holes
        );
        assert!(read.entries > 0, "a reader read nothing: {read:?}");
    }
    // Both kinds of reader must have met the trim, or the test proved nothing.
    for (kind, reads) in [("watcher", &watched), ("pager", &paged)] {
        assert!(
            reads.iter().any(|r| r.compacted > 0),
            "no {kind} fell behind retention: {reads:?}"
        );
    }
}
