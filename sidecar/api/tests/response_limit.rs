//! A client reads at most its response limit: a server that answers more (announced or not)
//! gets a `TooLarge` error, not the client's memory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::time::Duration;

use raft_api::client::{ClientError, SidecarClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP server answering every request with `body_len` bytes of JSON-ish filler, with a
/// `Content-Length` or chunked.
async fn server(body_len: usize, chunked: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let body = vec![b' '; body_len];
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
                    )
                };
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                if chunked {
                    for piece in body.chunks(16 << 10) {
                        let frame = format!("{:x}\r\n", piece.len());
                        if socket.write_all(frame.as_bytes()).await.is_err()
                            || socket.write_all(piece).await.is_err()
                            || socket.write_all(b"\r\n").await.is_err()
                        {
                            return;
                        }
                    }
                    let _ = socket.write_all(b"0\r\n\r\n").await;
                } else {
                    let _ = socket.write_all(&body).await;
                }
            });
        }
    });
    addr
}

fn client(addr: &str, limit: usize) -> SidecarClient {
    SidecarClient::new(None, Some(addr), None, Duration::from_secs(5)).with_response_limit(limit)
}

#[tokio::test]
async fn an_answer_announced_past_the_limit_is_refused_unread() {
    let addr = server(2 << 20, false).await;
    let err = client(&addr, 1 << 20).status().await.unwrap_err();
    assert!(
        matches!(err, ClientError::TooLarge { limit, .. } if limit == 1 << 20),
        "{err}"
    );
}

#[tokio::test]
async fn a_chunked_answer_is_cut_off_once_it_passes_the_limit() {
    let addr = server(2 << 20, true).await;
    let err = client(&addr, 1 << 20).metrics().await.unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn an_answer_within_the_limit_is_read_whole() {
    let addr = server(1000, true).await;
    let text = client(&addr, 1 << 20).metrics().await.unwrap();
    assert_eq!(text.len(), 1000);
}
