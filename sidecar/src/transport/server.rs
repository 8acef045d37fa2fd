//! The accepting side of the peer transport: authenticates the upgrade (cluster token and
//! cluster id), then answers every request frame concurrently on the same socket.

use std::future::Future;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::frame::{self, Envelope, PeerRequest, PeerResponse};
use super::{CLUSTER_HEADER, NODE_HEADER, OLD_PEER_PATH, PEER_PATH, TARGET_HEADER, token_matches};
use crate::metrics::ReasonLabel;
use crate::types::NodeId;

/// Answers peer requests; implemented by the node.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(
        &self,
        from: Option<NodeId>,
        request: PeerRequest,
    ) -> impl Future<Output = PeerResponse> + Send;
}

/// What a dialling peer must present.
#[derive(Clone)]
pub struct PeerAuth {
    /// This node's id: a dialler that means another node is refused.
    pub node_id: NodeId,
    pub cluster_id: String,
    /// `None` only with `--insecure`.
    pub token: Option<String>,
    /// `consensus_peer_handshakes_refused_total`, by reason.
    pub refused: Family<ReasonLabel, Counter>,
}

/// Why a dialling peer was turned away (a metric label and the answer's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownPath,
    /// A peer of an earlier version (`/raft`, without a protocol version in the path).
    OldProtocol,
    BadToken,
    OtherCluster,
    OtherNode,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::UnknownPath => StatusCode::NOT_FOUND,
            Refusal::OldProtocol => StatusCode::UPGRADE_REQUIRED,
            Refusal::BadToken => StatusCode::UNAUTHORIZED,
            Refusal::OtherCluster => StatusCode::FORBIDDEN,
            Refusal::OtherNode => StatusCode::CONFLICT,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::UnknownPath => "no such path",
            Refusal::OldProtocol => {
                "peer speaks an earlier protocol than this node; run one raft-sidecar version per cluster"
            }
            Refusal::BadToken => "bad or missing cluster token",
            Refusal::OtherCluster => "peer belongs to another cluster",
            Refusal::OtherNode => "this address now belongs to another node id",
        }
    }

    pub fn label(self) -> ReasonLabel {
        let reason = match self {
            Refusal::UnknownPath => "unknown_path",
            Refusal::OldProtocol => "old_protocol",
            Refusal::BadToken => "bad_token",
            Refusal::OtherCluster => "other_cluster",
            Refusal::OtherNode => "other_node",
        };
        ReasonLabel { reason }
    }
}

impl PeerAuth {
    fn check(&self, req: &Request) -> Result<Option<NodeId>, Refusal> {
        if req.uri().path() == OLD_PEER_PATH {
            return Err(Refusal::OldProtocol);
        }
        if req.uri().path() != PEER_PATH {
            return Err(Refusal::UnknownPath);
        }
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some(token) = &self.token {
            let presented = header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !token_matches(token, presented) {
                return Err(Refusal::BadToken);
            }
        }
        if header(CLUSTER_HEADER) != Some(self.cluster_id.as_str()) {
            return Err(Refusal::OtherCluster);
        }
        if let Some(target) = header(TARGET_HEADER)
            && target != self.node_id.to_string()
        {
            return Err(Refusal::OtherNode);
        }
        Ok(header(NODE_HEADER).and_then(|v| v.parse().ok()))
    }
}

/// Accept peers until `shutdown` resolves.
pub async fn serve<H: PeerHandler>(
    listener: TcpListener,
    auth: PeerAuth,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // Connections end with the server: on shutdown they are aborted and awaited.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let (auth, handler) = (auth.clone(), handler.clone());
                    while connections.try_join_next().is_some() {}
                    connections.spawn(async move {
                        if let Err(reason) = connection(stream, auth, handler).await {
                            tracing::debug!(%remote, %reason, "peer connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

async fn connection<H: PeerHandler>(
    stream: TcpStream,
    auth: PeerAuth,
    handler: Arc<H>,
) -> Result<(), String> {
    let mut from = None;
    #[expect(
        clippy::result_large_err,
        reason = "the handshake callback signature is tungstenite's"
    )]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        match auth.check(req) {
            Ok(id) => {
                from = id;
                Ok(resp)
            }
            Err(refusal) => {
                auth.refused.get_or_create(&refusal.label()).inc();
                let dialler = req
                    .headers()
                    .get(NODE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?");
                // A member with the wrong token or cluster dials again with capped backoff, so
                // those stay a trickle; stray requests (scanners, probes) are only counted.
                if refusal == Refusal::UnknownPath {
                    tracing::debug!(
                        reason = refusal.message(),
                        dialler,
                        "peer handshake refused"
                    );
                } else {
                    tracing::warn!(
                        reason = refusal.message(),
                        dialler,
                        "peer handshake refused"
                    );
                }
                let mut answer = ErrorResponse::new(Some(refusal.message().to_string()));
                *answer.status_mut() = refusal.status();
                Err(answer)
            }
        }
    };
    let config = super::websocket_config();
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let socket = tokio::time::timeout(std::time::Duration::from_secs(5), handshake)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    // Requests are answered concurrently; those still running when the connection ends are
    // aborted with it (their answers could not be delivered).
    let mut requests = JoinSet::new();
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if sink.send(Message::Binary(bytes.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let result = loop {
        let Some(msg) = stream.next().await else {
            break Ok(());
        };
        match msg.map_err(|e| e.to_string())? {
            Message::Binary(bytes) => {
                let env: Envelope<PeerRequest> = match frame::decode(&bytes) {
                    Ok(env) => env,
                    Err(e) => break Err(format!("bad frame from peer: {e}")),
                };
                let (handler, tx) = (handler.clone(), tx.clone());
                while requests.try_join_next().is_some() {}
                requests.spawn(async move {
                    let body = handler.handle(from, env.body).await;
                    let encoded = frame::encode(&Envelope { id: env.id, body }).or_else(|e| {
                        frame::encode(&Envelope {
                            id: env.id,
                            body: PeerResponse::Refused(e.to_string()),
                        })
                    });
                    if let Ok(bytes) = encoded {
                        let _ = tx.send(bytes).await;
                    }
                });
            }
            Message::Close(_) => break Ok(()),
            _ => {}
        }
    };
    requests.shutdown().await;
    drop(tx);
    let _ = writer.await;
    result
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::http;

    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().uri(PEER_PATH);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn auth() -> PeerAuth {
        PeerAuth {
            node_id: 7,
            cluster_id: "c".into(),
            token: Some("t".into()),
            refused: Family::default(),
        }
    }

    #[test]
    fn a_peer_with_the_token_cluster_and_our_id_is_accepted() {
        let req = request(&[
            ("authorization", "Bearer t"),
            (CLUSTER_HEADER, "c"),
            (NODE_HEADER, "3"),
            (TARGET_HEADER, "7"),
        ]);
        assert_eq!(auth().check(&req), Ok(Some(3)));
    }

    #[test]
    fn a_dial_meant_for_another_node_id_is_refused() {
        // A replacement node at a lost member's address must not answer as that member.
        let req = request(&[
            ("authorization", "Bearer t"),
            (CLUSTER_HEADER, "c"),
            (TARGET_HEADER, "8"),
        ]);
        assert_eq!(auth().check(&req).unwrap_err(), Refusal::OtherNode);
    }

    #[test]
    fn wrong_token_or_cluster_is_refused() {
        let req = request(&[("authorization", "Bearer x"), (CLUSTER_HEADER, "c")]);
        assert_eq!(auth().check(&req).unwrap_err(), Refusal::BadToken);
        let req = request(&[(CLUSTER_HEADER, "c")]);
        assert_eq!(auth().check(&req).unwrap_err(), Refusal::BadToken);
        let req = request(&[("authorization", "Bearer t"), (CLUSTER_HEADER, "other")]);
        assert_eq!(auth().check(&req).unwrap_err(), Refusal::OtherCluster);
    }
}
