//! Bad input on every endpoint (daemon API, admin API, peer transport): slow (slowloris),
//! oversized, malformed and unauthenticated connections are refused or outlasted, and the node
//! keeps serving reads and committing writes meanwhile. (The documented error codes of the
//! daemon and admin APIs are covered in `cluster.rs`.) Loopback processes, no root needed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestCluster, op};
use futures_util::{SinkExt, StreamExt};
use raft_sidecar::transport::{CLUSTER_HEADER, NODE_HEADER, NODE_NAME_HEADER, PEER_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECS_20: Duration = Duration::from_secs(20);

/// The node answers a read within 2 s and commits a write (through itself) within 5 s.
async fn still_serving(t: &TestCluster, i: usize, tag: &str) {
    let started = Instant::now();
    let state = tokio::time::timeout(Duration::from_secs(2), t.client(i).state()).await;
    assert!(
        matches!(state, Ok(Ok(_))),
        "{tag}: node {i} did not answer /v1/state within 2 s: {state:?}"
    );
    // A retryable answer (an election under the load of the sweep) is retried with the same
    // id, as a daemon would; the node must still commit it within the 5 s.
    let id = format!("{tag}-{}", rand::random::<u32>());
    let deadline = Instant::now() + Duration::from_secs(5);
    let write = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = tokio::time::timeout(left, t.client(i).submit(&op(&id))).await;
        let retryable = matches!(&attempt, Ok(Err(e)) if e.code().is_some_and(|c| matches!(c,
            raft_api::ErrorCode::Timeout | raft_api::ErrorCode::NoLeader | raft_api::ErrorCode::NoQuorum)));
        if !retryable || Instant::now() >= deadline {
            break attempt;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        matches!(write, Ok(Ok(_))),
        "{tag}: node {i} did not commit a write within 5 s: {write:?}"
    );
    println!(
        "{tag}: node {i} served a read and a write in {:?}",
        started.elapsed()
    );
}

/// Open `n` connections to `addr`, each sending `head` and then nothing more.
async fn hang_open(addr: SocketAddr, n: usize, head: &[u8]) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(head).await;
            out.push(s);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_slow_half_sent_requests_on_every_endpoint_do_not_stop_the_node_serving() {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let follower = (leader + 1) % 3;
    let mut held = Vec::new();
    for i in [leader, follower] {
        let n = &t.c.nodes[i];
        // Headers never finished; a body promised and never sent; a WebSocket upgrade never
        // completed on the peer port.
        held.extend(
            hang_open(
                n.api,
                150,
                b"POST /v1/operations HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            )
            .await,
        );
        held.extend(
            hang_open(
                n.api,
                150,
                b"POST /v1/operations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"id\":",
            )
            .await,
        );
        held.extend(
            hang_open(
                n.admin,
                150,
                b"GET /admin/v1/status HTTP/1.1\r\nHost: x\r\n",
            )
            .await,
        );
        held.extend(
            hang_open(
                n.peer,
                150,
                b"GET /raft HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
            )
            .await,
        );
    }
    assert!(
        held.len() >= 1000,
        "only {} slow connections opened",
        held.len()
    );
    // Trickle a byte now and then, as slowloris does, while checking the node keeps serving.
    for round in 0..3 {
        for s in &mut held {
            let _ = s.write_all(b"a").await;
        }
        still_serving(&t, leader, &format!("slowloris-leader-{round}")).await;
        still_serving(&t, follower, &format!("slowloris-follower-{round}")).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(held);
    still_serving(&t, leader, "after-slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_non_http_bytes_on_every_port_are_refused_and_the_node_keeps_serving()
{
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let n = t.c.nodes[leader].clone();
    let random: Vec<u8> = (0..65_536).map(|_| rand::random::<u8>()).collect();
    let huge_header = format!(
        "GET /v1/state HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "h".repeat(1 << 20)
    );
    let lying_length =
        b"POST /v1/operations HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}"
            .to_vec();
    let h2_preface =
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random),
        ("1 MiB header", huge_header.into_bytes()),
        ("absurd content-length", lying_length),
        ("HTTP/2 preface", h2_preface),
        (
            "bad method",
            b"BREW /v1/state HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("bad version", b"GET /v1/state HTTP/9.9\r\n\r\n".to_vec()),
        (
            "NUL in path",
            b"GET /v1/\x00state HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (addr, port_name) in [(n.api, "api"), (n.admin, "admin"), (n.peer, "peer")] {
        for (what, bytes) in &cases {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(bytes).await;
            // Read whatever comes back until the server closes or goes quiet.
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer)).await;
            let first = String::from_utf8_lossy(&answer[..answer.len().min(40)]).into_owned();
            assert!(
                !first.starts_with("HTTP/1.1 2"),
                "{port_name}: {what} was answered with success: {first:?}"
            );
        }
        still_serving(&t, leader, &format!("after-garbage-on-{port_name}")).await;
    }
    // Resuming a watch after the largest possible event id is answered (a watch that waits),
    // not an arithmetic overflow that drops the connection.
    let mut s = TcpStream::connect(n.api).await.unwrap();
    s.write_all(
        b"GET /v1/journal/watch HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 18446744073709551615\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut head)).await;
    assert!(
        matches!(read, Ok(Ok(_))) && head.starts_with(b"HTTP/1.1 200"),
        "Last-Event-ID u64::MAX: {read:?} {:?}",
        String::from_utf8_lossy(&head)
    );
    still_serving(&t, leader, "after-last-event-id-max").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_connections_without_the_token_or_cluster_id_are_refused_and_bad_frames_drop_only_that_socket()
 {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let url = format!("wss://{}{PEER_PATH}", t.c.nodes[leader].peer);
    let token = t.c.token.clone();
    let cluster = t.c.cluster_id.clone();
    // Each attempt holds a certificate of the cluster's CA for the name it claims: what is
    // tested here is the token and cluster id checks behind it.
    let attempt = |auth: Option<String>, cluster: Option<String>| {
        let url = url.clone();
        let t = &t;
        async move {
            let mut req = url.into_client_request().unwrap();
            let headers = req.headers_mut();
            if let Some(a) = auth {
                headers.insert("authorization", a.parse().unwrap());
            }
            if let Some(c) = cluster {
                headers.insert(CLUSTER_HEADER, c.parse().unwrap());
            }
            headers.insert(NODE_HEADER, "1".parse().unwrap());
            headers.insert(NODE_NAME_HEADER, "intruder".parse().unwrap());
            let stream = common::peer_tls(t, leader, "intruder").await;
            tokio_tungstenite::client_async(req, stream).await
        }
    };
    let status = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => 101,
    };
    assert_eq!(
        status(attempt(None, Some(cluster.clone())).await),
        401,
        "no token"
    );
    assert_eq!(
        status(attempt(Some("Bearer wrong".into()), Some(cluster.clone())).await),
        401,
        "wrong token"
    );
    assert_eq!(
        status(attempt(Some(format!("Bearer {token}x")), Some(cluster.clone())).await),
        401,
        "token with a suffix"
    );
    assert_eq!(
        status(attempt(Some(format!("Bearer {token}")), Some("other".into())).await),
        403,
        "another cluster"
    );
    assert_eq!(
        status(attempt(Some(format!("Bearer {token}")), None).await),
        403,
        "no cluster id"
    );
    // Each refusal is counted by reason (three bad tokens, two foreign or missing cluster ids).
    let metrics = t.client(leader).metrics().await.unwrap();
    for (reason, count) in [("bad_token", 3), ("other_cluster", 2)] {
        let line =
            format!("consensus_peer_handshakes_refused_total{{reason=\"{reason}\"}} {count}");
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }

    // Authenticated, then garbage: the node drops that socket and keeps serving.
    for garbage in [
        Message::Binary(vec![0xff; 64].into()),
        Message::Binary(Vec::new().into()),
        Message::Text("hello".into()),
        Message::Binary(
            (0..100_000)
                .map(|_| rand::random::<u8>())
                .collect::<Vec<u8>>()
                .into(),
        ),
    ] {
        let (mut ws, _) = attempt(Some(format!("Bearer {token}")), Some(cluster.clone()))
            .await
            .unwrap();
        let _ = ws.send(garbage).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
        still_serving(&t, leader, "after-bad-peer-frame").await;
    }
}

/// Send `request` over an authenticated peer connection to `to`, claiming to be node `from`;
/// the node's answer.
async fn forged(
    t: &TestCluster,
    to: usize,
    (from, from_id): (usize, u64),
    request: raft_sidecar::transport::frame::PeerRequest,
) -> raft_sidecar::transport::frame::PeerResponse {
    use raft_sidecar::transport::frame::{Envelope, decode, encode};
    let url = format!("wss://{}{PEER_PATH}", t.c.nodes[to].peer);
    let mut req = url.into_client_request().unwrap();
    let headers = req.headers_mut();
    headers.insert(
        "authorization",
        format!("Bearer {}", t.c.token).parse().unwrap(),
    );
    headers.insert(CLUSTER_HEADER, t.c.cluster_id.parse().unwrap());
    headers.insert(NODE_HEADER, from_id.to_string().parse().unwrap());
    let name = &t.c.nodes[from].name;
    headers.insert(NODE_NAME_HEADER, name.parse().unwrap());
    // A certificate for the member it claims to be: a stolen key, the strongest forger.
    let stream = common::peer_tls(t, to, name).await;
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    let frame = encode(&Envelope {
        id: 1,
        body: request,
    })
    .unwrap();
    ws.send(Message::Binary(frame.into())).await.unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .expect("the connection stays open")
            .unwrap();
        if let Message::Binary(bytes) = msg {
            return decode(&bytes).unwrap().body;
        }
    }
}

/// Whoever holds the shared token and a member's certificate can neither make a member remove
/// itself with a forged notice nor commit an operation that
/// the daemon API would refuse (and that would stop every daemon's journal read at its index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_frames_neither_remove_a_member_nor_commit_an_invalid_operation() {
    use raft_sidecar::journal::StoredOperation;
    use raft_sidecar::transport::frame::{PeerRequest, PeerResponse};
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let follower = (leader + 1) % 3;
    let id_of = |i: usize| {
        let c = t.client(i);
        async move { c.status().await.unwrap().node_id.parse::<u64>().unwrap() }
    };
    let (leader_id, follower_id) = (id_of(leader).await, id_of(follower).await);

    // A removal notice "from the leader" in the highest possible term.
    let answer = forged(
        &t,
        follower,
        (leader, leader_id),
        PeerRequest::Removed {
            term: u64::MAX,
            target: follower_id,
        },
    )
    .await;
    assert!(matches!(answer, PeerResponse::Ack), "{answer:?}");
    // The node checks the notice with the leader it names; wait for its verdict, not a time.
    let log = t.c.nodes[follower].log_path();
    common::wait_for(
        "the follower to rule on the forged notice",
        SECS_20,
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ignored a removal notice")
                .then_some(())
        },
    )
    .await;
    let role = t.client(follower).status().await.unwrap().role;
    assert_ne!(
        format!("{role:?}").to_lowercase(),
        "removed",
        "a forged notice removed a member"
    );
    still_serving(&t, follower, "after-forged-removal").await;

    // Operations the daemon API refuses, forwarded straight to the leader.
    let good = StoredOperation {
        id: "forged-ok-shape".into(),
        op_type: "t".into(),
        payload: Some(r#"{"a":1}"#.into()),
        daemon_id: None,
        timestamp: None,
    };
    let bad = [
        StoredOperation {
            id: String::new(),
            ..good.clone()
        },
        StoredOperation {
            id: "x".repeat(10_000),
            ..good.clone()
        },
        StoredOperation {
            op_type: String::new(),
            ..good.clone()
        },
        StoredOperation {
            id: "forged-not-json".into(),
            payload: Some("{not json".into()),
            ..good.clone()
        },
        StoredOperation {
            id: "forged-deep".into(),
            payload: Some(format!("{}{}", "[".repeat(1000), "]".repeat(1000))),
            ..good.clone()
        },
        StoredOperation {
            id: "forged-not-canonical".into(),
            payload: Some(r#"{ "b": 1, "a": 2 }"#.into()),
            ..good.clone()
        },
        StoredOperation {
            id: "forged-too-large".into(),
            payload: Some(format!("\"{}\"", "y".repeat(2 << 20))),
            ..good.clone()
        },
    ];
    for op in bad {
        let shown: String = format!("{op:?}").chars().take(120).collect();
        let answer = forged(
            &t,
            leader,
            (follower, follower_id),
            PeerRequest::Forward(op),
        )
        .await;
        match answer {
            PeerResponse::Forward(Err(f)) => assert!(
                matches!(
                    f.code,
                    raft_api::ErrorCode::InvalidOperation | raft_api::ErrorCode::PayloadTooLarge
                ),
                "{shown}: refused with {f:?}"
            ),
            other => panic!("{shown}: answered {other:?}"),
        }
    }
    // Every node still reads its whole journal, and none of them holds a forged operation.
    for i in 0..3 {
        let journal = t.client(i).journal(Some(1), Some(10_000)).await.unwrap();
        assert!(
            journal
                .entries
                .iter()
                .all(|e| !e.operation.id.starts_with("forged") && !e.operation.id.is_empty()),
            "node {i} committed a forged operation"
        );
    }
}

/// Only the leader can ask a follower to stand for election (`Campaign`, its leadership
/// handoff), and only in its own term with a log the follower holds: another member's request,
/// one in another term, or one naming entries the follower lacks is refused, and the term stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_request_that_is_not_the_leaders_handoff_elects_no_one() {
    use raft_sidecar::transport::frame::{PeerRequest, PeerResponse};
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let status = t.client(follower).status().await.unwrap();
    let id_of = |i: usize| {
        let c = t.client(i);
        async move { c.status().await.unwrap().node_id.parse::<u64>().unwrap() }
    };
    let (leader_id, other_id) = (id_of(leader).await, id_of(other).await);
    let last = status.last_log_index;
    let asks = [
        ((other, other_id), status.term, last, "not from the leader"),
        ((leader, leader_id), status.term + 7, last, "another term"),
        (
            (leader, leader_id),
            status.term,
            last + 1_000,
            "a log it lacks",
        ),
    ];
    for (from, term, last_log_index, what) in asks {
        let answer = forged(
            &t,
            follower,
            from,
            PeerRequest::Campaign {
                term,
                last_log_index,
            },
        )
        .await;
        assert!(
            matches!(answer, PeerResponse::Refused(_)),
            "{what}: {answer:?}"
        );
    }
    let after = t.client(leader).status().await.unwrap();
    assert_eq!(
        after.term, status.term,
        "a refused campaign changed the term"
    );
    assert_eq!(
        after.role,
        raft_api::admin::NodeRole::Leader,
        "the leader still leads"
    );
}

/// Open `n` connections to `addr` from source addresses spread over 127.0.0.2–201 (so that
/// per-address caps do not turn every one away at once), each sending `head` (maybe nothing)
/// and then nothing more. Connections the node refused are kept too; they are closed.
async fn hang_open_from_many(addr: SocketAddr, n: usize, head: &[u8]) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for k in 0..n {
        let source: SocketAddr = format!("127.0.0.{}:0", 2 + k % 200).parse().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if socket.bind(source).is_err() {
            continue;
        }
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), socket.connect(addr)).await
        {
            let _ = s.write_all(head).await;
            out.push(s);
        }
    }
    out
}

/// Resident memory of process `pid`, in MiB (Linux).
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// `consensus_connections_refused_total` of one listener, summed over reasons.
fn refused(metrics: &str, listener: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("consensus_connections_refused_total{")
                && l.contains(&format!("listener=\"{listener}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_and_slow_connections_on_each_port_are_capped_and_counted() {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let pid = t.c.pid(leader).unwrap();
    let before = rss_mib(pid);
    let n = t.c.nodes[leader].clone();
    let mut held = Vec::new();
    // On each port, 1,000 that connect and say nothing and 1,000 that stop inside a request
    // head (the daemon API's, the admin API's before its TLS handshake ends, the peer port's).
    for (addr, slow) in [
        (
            n.api,
            &b"POST /v1/operations HTTP/1.1\r\nHost: x\r\nX-Slow: "[..],
        ),
        (n.admin, &b"\x16\x03\x01\x00"[..]),
        (n.peer, &b"\x16\x03\x01\x00"[..]),
    ] {
        held.extend(hang_open_from_many(addr, 1000, b"").await);
        held.extend(hang_open_from_many(addr, 1000, slow).await);
    }
    println!("{} connections opened (refused ones included)", held.len());
    for round in 0..3 {
        for s in &mut held {
            let _ = s.write_all(b"a").await;
        }
        still_serving(&t, leader, &format!("crowd-{round}")).await;
        // The crowd's pace, not a wait for a condition: slow clients send a byte a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let after = rss_mib(pid);
    let metrics = t.client(leader).metrics().await.unwrap();
    let counts: Vec<(&str, f64)> = ["daemon", "admin", "peer"]
        .iter()
        .map(|l| (*l, refused(&metrics, l)))
        .collect();
    println!("leader RSS {before} MiB before, {after} MiB with the crowd; refused {counts:?}");
    for (listener, count) in &counts {
        assert!(
            *count > 0.0,
            "{listener}: no refusal counted with 2,000 connections: {counts:?}"
        );
    }
    // The sidecar's container limit is 512 MiB; a crowd that cost memory per connection would
    // pass it (the review estimated 1,300 slow admin connections). Half of it is the bound.
    assert!(
        after < 256,
        "leader RSS {after} MiB (from {before}) with 6,000 connections held"
    );
    drop(held);
    still_serving(&t, leader, "after-crowd").await;
    t.c.stop_all(Duration::from_secs(5)).await;
}
