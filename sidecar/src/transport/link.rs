//! The dialling side of the peer transport: one [`Link`] per peer, a background task owning the
//! WebSocket. It dials lazily (on the first request), multiplexes requests by id, and after a
//! failed dial backs off exponentially (capped); during backoff calls fail at once as
//! [`CallError::Unreachable`], which openraft turns into its own per-peer pause.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use super::frame::{self, Envelope, PeerRequest, PeerResponse};
use super::{CLUSTER_HEADER, NODE_HEADER, NODE_NAME_HEADER, PEER_PATH, PeerStream, TARGET_HEADER};
use crate::tls::Tls;
use crate::types::NodeId;

/// First backoff after a failed dial.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// A dial attempt gives up after this long.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// The TCP connect of a dial gives up after this long: a peer that restarted under a new
/// address (a new pod) leaves its old one silent, and the next dial resolves the name again.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// With requests outstanding and nothing received for this long, the socket is presumed dead.
const STALL_LIMIT: Duration = Duration::from_secs(5);
/// Between two pings of an open socket: a peer that is up answers each with a pong, even while
/// its Raft is too busy to answer requests.
pub const TICK: Duration = Duration::from_millis(500);
/// Why a connection ended when new certificates were loaded.
const RELOADED: &str = "certificates reloaded";

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("peer {addr}: connection failed: {reason}")]
    Network { addr: String, reason: String },
    #[error("peer {addr} did not answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
}

/// Who we are when we dial: sent on the upgrade request (and, with TLS, proven by our
/// certificate). `Debug` leaves the token out.
#[derive(Clone)]
pub struct PeerIdentity {
    pub node_id: NodeId,
    /// Our member name, which our certificate names.
    pub name: String,
    pub cluster_id: String,
    pub token: Option<String>,
    /// `None` only with `--insecure-plaintext`.
    pub tls: Option<Arc<Tls>>,
    /// Backoff cap (≈ election_timeout_min / 3).
    pub backoff_max: Duration,
}

impl std::fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerIdentity")
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("cluster_id", &self.cluster_id)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkStatus {
    Idle,
    Connecting,
    Connected,
    /// The last dial failed; calls fail fast until the backoff ends.
    BackingOff(String),
}

struct Outbound {
    id: u64,
    bytes: Vec<u8>,
    reply: oneshot::Sender<Result<PeerResponse, CallError>>,
}

/// A handle on the connection to one peer; cheap to share.
pub struct Link {
    addr: String,
    tx: mpsc::Sender<Outbound>,
    status: watch::Receiver<LinkStatus>,
    next_id: AtomicU64,
    contact: Arc<Contact>,
}

/// When the peer last answered a request, and when it last sent anything at all (a pong
/// included): milliseconds since `epoch`, `u64::MAX` for never.
struct Contact {
    epoch: Instant,
    answered: AtomicU64,
    alive: AtomicU64,
}

impl Contact {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            answered: AtomicU64::new(u64::MAX),
            alive: AtomicU64::new(u64::MAX),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn answered(&self) {
        let ms = self.now_ms();
        self.answered.store(ms, Ordering::Relaxed);
        self.alive.store(ms, Ordering::Relaxed);
    }

    fn alive(&self) {
        self.alive.store(self.now_ms(), Ordering::Relaxed);
    }

    fn since(&self, at: &AtomicU64) -> Option<Duration> {
        let at = at.load(Ordering::Relaxed);
        (at != u64::MAX).then(|| {
            self.epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(at))
        })
    }
}

impl Link {
    /// `target` is the node id we expect at `addr` (`None` only for bootstrap probes).
    fn spawn(
        addr: String,
        identity: PeerIdentity,
        target: Option<NodeId>,
        tasks: &Mutex<JoinSet<()>>,
    ) -> Link {
        let (tx, rx) = mpsc::channel(1024);
        let (status_tx, status) = watch::channel(LinkStatus::Idle);
        let contact = Arc::new(Contact::new());
        let task = LinkTask {
            addr: addr.clone(),
            identity,
            target,
            status: status_tx,
            contact: contact.clone(),
        };
        let mut tasks = tasks.lock();
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task.run(rx));
        Link {
            addr,
            tx,
            status,
            next_id: AtomicU64::new(1),
            contact,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Time since the peer last answered a request, if it ever did.
    pub fn since_last_heard(&self) -> Option<Duration> {
        self.contact.since(&self.contact.answered)
    }

    /// Time since the peer last sent anything, a pong included, if it ever did.
    pub fn since_alive(&self) -> Option<Duration> {
        self.contact.since(&self.contact.alive)
    }

    /// Send one request and wait up to `timeout` for its answer.
    pub async fn call(
        &self,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        if let LinkStatus::BackingOff(reason) = &*self.status.borrow() {
            return Err(CallError::Unreachable {
                addr: self.addr.clone(),
                reason: reason.clone(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes =
            frame::encode(&Envelope { id, body: request }).map_err(|e| CallError::Network {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let (reply, answer) = oneshot::channel();
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let send = self.tx.send(Outbound { id, bytes, reply });
        let outcome = tokio::time::timeout(timeout, async {
            send.await.map_err(|_| CallError::Network {
                addr: self.addr.clone(),
                reason: "link closed".into(),
            })?;
            answer.await.map_err(|_| CallError::Network {
                addr: self.addr.clone(),
                reason: "connection dropped".into(),
            })?
        })
        .await;
        outcome.unwrap_or(Err(CallError::Timeout {
            addr: self.addr.clone(),
            ms,
        }))
    }
}

struct LinkTask {
    addr: String,
    identity: PeerIdentity,
    target: Option<NodeId>,
    status: watch::Sender<LinkStatus>,
    contact: Arc<Contact>,
}

type Socket = WebSocketStream<PeerStream>;

impl LinkTask {
    async fn run(self, mut rx: mpsc::Receiver<Outbound>) {
        let mut backoff = BACKOFF_MIN;
        // Lazy: nothing is dialled until someone has something to send.
        let Some(mut first) = rx.recv().await else {
            return;
        };
        loop {
            self.status.send_replace(LinkStatus::Connecting);
            match self.dial().await {
                Ok((socket, generations)) => {
                    self.status.send_replace(LinkStatus::Connected);
                    backoff = BACKOFF_MIN;
                    let reason = self.serve(socket, &mut rx, generations, first).await;
                    if reason == RELOADED {
                        tracing::info!(peer = %self.addr, "re-dialling the peer with reloaded certificates");
                    } else {
                        tracing::debug!(peer = %self.addr, %reason, "peer connection ended");
                    }
                    self.status.send_replace(LinkStatus::Idle);
                }
                Err(reason) => {
                    tracing::debug!(peer = %self.addr, %reason, ?backoff, "peer dial failed");
                    self.status
                        .send_replace(LinkStatus::BackingOff(reason.clone()));
                    let _ = first.reply.send(Err(self.unreachable(&reason)));
                    if !self.back_off(&mut rx, backoff, &reason).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.identity.backoff_max.max(BACKOFF_MIN));
                    self.status.send_replace(LinkStatus::Idle);
                }
            }
            match rx.recv().await {
                Some(next) => first = next,
                None => return,
            }
        }
    }

    fn unreachable(&self, reason: &str) -> CallError {
        CallError::Unreachable {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    /// Fail requests fast until the backoff ends; false when the link was dropped.
    async fn back_off(
        &self,
        rx: &mut mpsc::Receiver<Outbound>,
        wait: Duration,
        reason: &str,
    ) -> bool {
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                next = rx.recv() => match next {
                    Some(out) => { let _ = out.reply.send(Err(self.unreachable(reason))); }
                    None => return false,
                },
            }
        }
    }

    /// A connected socket, and (with TLS) a receiver of certificate generations subscribed
    /// before the handshake, so a reload during the dial is noticed too.
    async fn dial(&self) -> Result<(Socket, Option<watch::Receiver<u64>>), String> {
        let generations = self.identity.tls.as_ref().map(|t| t.generations());
        let scheme = if self.identity.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        let mut request = format!("{scheme}://{}{PEER_PATH}", self.addr)
            .into_client_request()
            .map_err(|e| format!("bad peer address: {e}"))?;
        let headers = request.headers_mut();
        let header =
            |v: &str| HeaderValue::from_str(v).map_err(|e| format!("bad header value: {e}"));
        headers.insert(CLUSTER_HEADER, header(&self.identity.cluster_id)?);
        headers.insert(NODE_HEADER, header(&self.identity.node_id.to_string())?);
        headers.insert(NODE_NAME_HEADER, header(&self.identity.name)?);
        if let Some(target) = self.target {
            headers.insert(TARGET_HEADER, header(&target.to_string())?);
        }
        if let Some(token) = &self.identity.token {
            headers.insert("authorization", header(&format!("Bearer {token}"))?);
        }
        let config = super::websocket_config();
        let connect = async {
            let stream = self.connect().await?;
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(resp) => {
                        format!("peer refused the connection with HTTP {}", resp.status())
                    }
                    other => other.to_string(),
                })
        };
        match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
            Err(_) => Err(format!("dial timed out after {DIAL_TIMEOUT:?}")),
            Ok(Err(e)) => Err(e),
            Ok(Ok((socket, _))) => Ok((socket, generations)),
        }
    }

    /// TCP, then TLS when configured: the peer's certificate must be of our CA and valid for
    /// the host we dial (its stable DNS name, or the IP address it is dialled at).
    async fn connect(&self) -> Result<PeerStream, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| format!("cannot connect: no answer within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.identity.tls else {
            return Ok(Box::new(tcp));
        };
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(self.addr.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = rustls_pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(tls.current().client.clone());
        let stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        Ok(Box::new(stream))
    }

    /// Pump requests out and answers in until the socket fails; returns why it ended.
    async fn serve(
        &self,
        socket: Socket,
        rx: &mut mpsc::Receiver<Outbound>,
        mut generations: Option<watch::Receiver<u64>>,
        first: Outbound,
    ) -> String {
        let (mut sink, mut stream) = socket.split();
        let mut pending: HashMap<u64, oneshot::Sender<Result<PeerResponse, CallError>>> =
            HashMap::new();
        let mut last_rx = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        let mut queued = Some(first);
        // New certificates: stop sending on this socket, let the answers in flight arrive
        // (bounded), then re-dial with them; requests wait in the queue meanwhile.
        let mut draining: Option<Instant> = None;
        let reason = loop {
            if let Some(since) = draining
                && (pending.is_empty() || since.elapsed() > STALL_LIMIT)
            {
                break RELOADED.to_string();
            }
            let out = match queued.take() {
                Some(out) => Some(out),
                None => tokio::select! {
                    () = reloaded(&mut generations), if draining.is_none() => {
                        draining = Some(Instant::now());
                        None
                    }
                    next = rx.recv(), if draining.is_none() => match next {
                        Some(out) => Some(out),
                        None => break "link dropped".to_string(),
                    },
                    msg = stream.next() => {
                        match msg {
                            Some(Ok(Message::Binary(bytes))) => {
                                last_rx = Instant::now();
                                self.contact.answered();
                                match frame::decode::<PeerResponse>(&bytes) {
                                    Ok(env) => {
                                        if let Some(reply) = pending.remove(&env.id) {
                                            let _ = reply.send(Ok(env.body));
                                        }
                                    }
                                    Err(e) => break format!("undecodable answer: {e}"),
                                }
                            }
                            Some(Ok(Message::Close(_))) | None => break "closed by peer".to_string(),
                            Some(Ok(_)) => {
                                last_rx = Instant::now();
                                self.contact.alive();
                            }
                            Some(Err(e)) => break e.to_string(),
                        }
                        None
                    }
                    _ = tick.tick() => {
                        pending.retain(|_, reply| !reply.is_closed());
                        if !pending.is_empty() && last_rx.elapsed() > STALL_LIMIT {
                            break format!("no answer for {STALL_LIMIT:?}");
                        }
                        if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                            break "ping failed".to_string();
                        }
                        None
                    }
                },
            };
            if let Some(out) = out.filter(|o| !o.reply.is_closed()) {
                pending.insert(out.id, out.reply);
                if let Err(e) = sink.send(Message::Binary(out.bytes.into())).await {
                    break e.to_string();
                }
            }
        };
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(CallError::Network {
                addr: self.addr.clone(),
                reason: reason.clone(),
            }));
        }
        let _ = sink.close().await;
        reason
    }
}

/// Resolves when a new generation of certificates is loaded (never without TLS).
async fn reloaded(generations: &mut Option<watch::Receiver<u64>>) {
    let Some(rx) = generations else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// All links of a node, by peer id. A peer whose address changed gets a fresh link. Each
/// link's connection task ends when the last handle on the link is dropped; the tasks are kept
/// here so shutdown can join them ([`Links::close`]).
#[derive(Clone)]
pub struct Links {
    identity: PeerIdentity,
    map: Arc<Mutex<HashMap<NodeId, Arc<Link>>>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Links {
    pub fn new(identity: PeerIdentity) -> Self {
        Self {
            identity,
            map: Arc::new(Mutex::new(HashMap::new())),
            tasks: Arc::new(Mutex::new(JoinSet::new())),
        }
    }

    /// Drop every link and hand over their connection tasks, which end once nobody else holds
    /// a link (openraft's replication streams drop theirs when Raft stops).
    pub fn close(&self) -> JoinSet<()> {
        self.map.lock().clear();
        std::mem::take(&mut *self.tasks.lock())
    }

    /// The link to `target` at `addr`; never dials by itself.
    pub fn get(&self, target: NodeId, addr: &str) -> Arc<Link> {
        let mut map = self.map.lock();
        if let Some(link) = map.get(&target).filter(|l| l.addr == addr) {
            return link.clone();
        }
        let link = Arc::new(Link::spawn(
            addr.to_string(),
            self.identity.clone(),
            Some(target),
            &self.tasks,
        ));
        map.insert(target, link.clone());
        link
    }

    /// A link to an address whose node id is not known yet (static bootstrap); not kept.
    pub fn probe(&self, addr: &str) -> Arc<Link> {
        Arc::new(Link::spawn(
            addr.to_string(),
            self.identity.clone(),
            None,
            &self.tasks,
        ))
    }

    /// Time since each peer last answered us.
    pub fn last_heard(&self) -> HashMap<NodeId, Duration> {
        let map = self.map.lock();
        map.iter()
            .filter_map(|(id, link)| link.since_last_heard().map(|d| (*id, d)))
            .collect()
    }

    /// Time since each peer last sent us anything, pongs included: whether it is up, even when
    /// its Raft is too busy to answer.
    pub fn last_alive(&self) -> HashMap<NodeId, Duration> {
        let map = self.map.lock();
        map.iter()
            .filter_map(|(id, link)| link.since_alive().map(|d| (*id, d)))
            .collect()
    }

    /// Drop links to peers that are no longer members (their tasks end).
    pub fn retain(&self, keep: impl Fn(&NodeId) -> bool) {
        let mut map = self.map.lock();
        map.retain(|id, _| keep(id));
    }
}
