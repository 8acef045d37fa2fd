//! The accepting side of the peer transport: with TLS, a certificate of the cluster CA at the
//! handshake; then the upgrade (cluster token, cluster id, and a claimed name and node id that
//! the certificate and our membership agree with); then every request frame is answered
//! concurrently on the same socket.

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

use rustls_pki_types::CertificateDer;

use super::frame::{self, Envelope, PeerRequest, PeerResponse};
use super::{
    CLUSTER_HEADER, NODE_HEADER, NODE_NAME_HEADER, OLD_PEER_PATH, PEER_PATH, PeerStream,
    TARGET_HEADER, token_matches,
};
use crate::admission::{Admission, Caps, Pending};
use crate::metrics::{ListenerLabel, ReasonLabel};
use crate::tls::{self, Tls};
use crate::types::NodeId;

/// Peer connections: at most 256 authenticated at once (a cluster of 9 needs 8 to 16), and
/// while still in the TLS handshake or the upgrade at most 64, 8 per source address, so a host
/// that opens idle connections cannot take the slots real peers re-dial into.
const CAPS: Caps = Caps {
    open: 256,
    pending: 64,
    pending_per_address: 8,
};
/// Why a connection made with replaced certificates was closed.
const STALE: &str = "made with replaced certificates";
/// How long the requests in flight on such a connection may still take to answer (longer
/// than any write timeout a request can wait on).
const STALE_DRAIN: std::time::Duration = std::time::Duration::from_secs(15);
/// The TLS handshake and the WebSocket upgrade together must finish within this.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The name a node id has in our membership, if it is a member (the id a certificate-bearing
/// peer claims must be its own).
pub type MemberName = Arc<dyn Fn(NodeId) -> Option<String> + Send + Sync>;

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
    /// `None` only with `--insecure-plaintext`.
    pub tls: Option<Arc<Tls>>,
    pub member_name: MemberName,
    /// `consensus_peer_handshakes_refused_total`, by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// `consensus_connections_refused_total{listener="peer"}`.
    pub connections_refused: Family<ListenerLabel, Counter>,
}

impl PeerAuth {
    fn refuse_connection(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ListenerLabel {
                listener: "peer",
                reason,
            })
            .inc();
    }
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
    /// With TLS: no name or node id claimed, a certificate not valid for the claimed name, or
    /// a node id that our membership gives another name.
    NotItsCertificate,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::UnknownPath => StatusCode::NOT_FOUND,
            Refusal::OldProtocol => StatusCode::UPGRADE_REQUIRED,
            Refusal::BadToken => StatusCode::UNAUTHORIZED,
            Refusal::OtherCluster => StatusCode::FORBIDDEN,
            Refusal::OtherNode => StatusCode::CONFLICT,
            Refusal::NotItsCertificate => StatusCode::FORBIDDEN,
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
            Refusal::NotItsCertificate => {
                "the certificate does not name the member (name and node id) the peer claims"
            }
        }
    }

    pub fn label(self) -> ReasonLabel {
        let reason = match self {
            Refusal::UnknownPath => "unknown_path",
            Refusal::OldProtocol => "old_protocol",
            Refusal::BadToken => "bad_token",
            Refusal::OtherCluster => "other_cluster",
            Refusal::OtherNode => "other_node",
            Refusal::NotItsCertificate => "not_its_certificate",
        };
        ReasonLabel { reason }
    }
}

impl PeerAuth {
    /// `cert` is the peer's certificate when the connection is TLS (already verified against
    /// the CA by the handshake).
    fn check(
        &self,
        req: &Request,
        cert: Option<&CertificateDer<'_>>,
    ) -> Result<Option<NodeId>, Refusal> {
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
        let from = header(NODE_HEADER).and_then(|v| v.parse().ok());
        if self.tls.is_some() {
            let (Some(cert), Some(id), Some(name)) = (cert, from, header(NODE_NAME_HEADER)) else {
                return Err(Refusal::NotItsCertificate);
            };
            let known = (self.member_name)(id);
            if !tls::names(cert, name) || known.is_some_and(|known| known != name) {
                return Err(Refusal::NotItsCertificate);
            }
        }
        Ok(from)
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
    let admission = Admission::new(CAPS);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    while connections.try_join_next().is_some() {}
                    let slot = match admission.pending(remote.ip()) {
                        Ok(slot) => slot,
                        Err(refused) => {
                            auth.refuse_connection(refused.label());
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let (auth, handler) = (auth.clone(), handler.clone());
                    connections.spawn(async move {
                        if let Err(reason) = connection(stream, slot, auth, handler).await {
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

/// The TLS handshake when configured: the stream and the peer's certificate.
async fn secure(
    stream: TcpStream,
    tls: Option<&Tls>,
) -> Result<(PeerStream, Option<CertificateDer<'static>>), String> {
    let Some(tls) = tls else {
        return Ok((Box::new(stream), None));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().peer_server.clone());
    let stream = acceptor
        .accept(stream)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.clone().into_owned());
    Ok((Box::new(stream), cert))
}

async fn connection<H: PeerHandler>(
    stream: TcpStream,
    slot: Pending,
    auth: PeerAuth,
    handler: Arc<H>,
) -> Result<(), String> {
    // Subscribed before the handshake: a reload during it counts as a replacement too.
    let generations = auth.tls.as_ref().map(|t| t.generations());
    let (socket, from) = handshake(stream, &auth).await?;
    let _open = slot.open().map_err(|refused| {
        auth.refuse_connection(refused.label());
        "too many peer connections open".to_string()
    })?;
    answer(socket, from, handler, tls::stale_after_reload(generations)).await
}

type PeerSocket = tokio_tungstenite::WebSocketStream<PeerStream>;

/// TLS (when configured) and the WebSocket upgrade, together within [`HANDSHAKE_TIMEOUT`]:
/// the socket and the node id the peer proved (or, without TLS, claimed).
async fn handshake(
    stream: TcpStream,
    auth: &PeerAuth,
) -> Result<(PeerSocket, Option<NodeId>), String> {
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    let secured = tokio::time::timeout_at(deadline, secure(stream, auth.tls.as_deref())).await;
    let (stream, cert) = match secured {
        Ok(Ok(secured)) => secured,
        Ok(Err(e)) => {
            auth.refuse_connection("tls");
            return Err(e);
        }
        Err(_) => {
            auth.refuse_connection("handshake_timeout");
            return Err("TLS handshake timed out".to_string());
        }
    };
    let mut from = None;
    #[expect(
        clippy::result_large_err,
        reason = "the handshake callback signature is tungstenite's"
    )]
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        match auth.check(req, cert.as_ref()) {
            Ok(id) => {
                from = id;
                Ok(resp)
            }
            Err(refusal) => Err(refused(auth, req, refusal)),
        }
    };
    let config = super::websocket_config();
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let socket = tokio::time::timeout_at(deadline, upgrade)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok((socket, from))
}

/// Count and log a refused upgrade; the answer to send.
fn refused(auth: &PeerAuth, req: &Request, refusal: Refusal) -> ErrorResponse {
    auth.refused.get_or_create(&refusal.label()).inc();
    let dialler = req
        .headers()
        .get(NODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    // A member with the wrong token or cluster dials again with capped backoff, so those stay
    // a trickle; stray requests (scanners, probes) are only counted.
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
    answer
}

/// Answer the request frames of `socket` concurrently until it closes, a frame does not
/// decode, or `stale` resolves (then the requests in flight may still answer, bounded).
async fn answer<H: PeerHandler>(
    socket: PeerSocket,
    from: Option<NodeId>,
    handler: Arc<H>,
    stale: impl Future<Output = ()>,
) -> Result<(), String> {
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
    tokio::pin!(stale);
    let result = loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            () = &mut stale => break Err(STALE.to_string()),
        };
        let Some(msg) = msg else {
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
    if result.as_ref().is_err_and(|e| e == STALE) {
        // The socket still works: let the requests in flight answer (bounded), then close.
        let drained = async { while requests.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(STALE_DRAIN, drained).await;
    }
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
            tls: None,
            member_name: Arc::new(|_| None),
            refused: Family::default(),
            connections_refused: Family::default(),
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
        assert_eq!(auth().check(&req, None), Ok(Some(3)));
    }

    #[test]
    fn a_dial_meant_for_another_node_id_is_refused() {
        // A replacement node at a lost member's address must not answer as that member.
        let req = request(&[
            ("authorization", "Bearer t"),
            (CLUSTER_HEADER, "c"),
            (TARGET_HEADER, "8"),
        ]);
        assert_eq!(auth().check(&req, None).unwrap_err(), Refusal::OtherNode);
    }

    #[test]
    fn wrong_token_or_cluster_is_refused() {
        let req = request(&[("authorization", "Bearer x"), (CLUSTER_HEADER, "c")]);
        assert_eq!(auth().check(&req, None).unwrap_err(), Refusal::BadToken);
        let req = request(&[(CLUSTER_HEADER, "c")]);
        assert_eq!(auth().check(&req, None).unwrap_err(), Refusal::BadToken);
        let req = request(&[("authorization", "Bearer t"), (CLUSTER_HEADER, "other")]);
        assert_eq!(auth().check(&req, None).unwrap_err(), Refusal::OtherCluster);
    }

    #[test]
    fn with_tls_the_certificate_must_name_the_claimed_member_and_id() {
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let ca =
            raft_pki::Authority::generate("test CA", std::time::Duration::from_secs(3600)).unwrap();
        let paths = crate::tls::tests::member_dir(&ca, dir.path(), "n1");
        let cert = CertificateDer::from_pem_file(&paths.cert).unwrap();
        let mut auth = auth();
        auth.tls = Some(Tls::load(paths, "n1", Default::default()).unwrap());
        auth.member_name = Arc::new(|id| (id == 4).then(|| "n4".to_string()));
        let claim = |id: &str, name: &str| {
            request(&[
                ("authorization", "Bearer t"),
                (CLUSTER_HEADER, "c"),
                (NODE_HEADER, id),
                (NODE_NAME_HEADER, name),
            ])
        };
        assert_eq!(auth.check(&claim("3", "n1"), Some(&cert)), Ok(Some(3)));
        for (id, name, why) in [
            ("3", "n2", "a name the certificate does not give"),
            ("4", "n1", "the id of a member with another name"),
        ] {
            assert_eq!(
                auth.check(&claim(id, name), Some(&cert)),
                Err(Refusal::NotItsCertificate),
                "{why}"
            );
        }
        assert_eq!(
            auth.check(&claim("3", "n1"), None),
            Err(Refusal::NotItsCertificate),
            "no certificate"
        );
    }
}
