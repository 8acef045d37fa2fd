//! Peer transport: one authenticated, multiplexed WebSocket per peer carrying binary frames,
//! over mutual TLS (unless `--insecure-plaintext`; see [`crate::tls`]).
//!
//! `frame` is the wire format, `link` the dialling side (lazy connect, capped exponential
//! backoff, many requests in flight), `server` the accepting side, and `network` the adapter
//! openraft calls (`RaftNetworkFactory`). Each node dials each peer it talks to once, so a pair
//! of nodes shares two sockets, one per direction; requests flow from dialler to listener.

pub mod frame;
pub mod link;
pub mod network;
pub mod server;

/// Largest frame either side accepts, and so the most one peer message can make a node hold.
/// The largest legal one is an AppendEntries of `max_payload_entries` (8) entries, each a batch
/// of just under 1 MiB of operations plus one operation of at most 4 MiB: about 40 MiB (a test
/// in `raft::launch` encodes it). Snapshots travel in 1 MiB chunks, forwarded writes are one
/// operation.
pub const MAX_FRAME_BYTES: usize = 48 << 20;

/// Most bytes one socket read asks for. tungstenite zero-fills this much of its read buffer
/// before every read (128 KiB by default): that `memset` was 2–3 % of a leader's CPU at 64
/// clients, where most frames are a few KiB. A larger frame still arrives whole, in more reads.
const READ_BUFFER_BYTES: usize = 16 << 10;

/// WebSocket settings of both sides of a peer connection.
pub fn websocket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Request header carrying the cluster id; a peer of another cluster is refused.
pub const CLUSTER_HEADER: &str = "x-raft-cluster-id";
/// Request header naming the dialling node (for logs and last-contact metrics).
pub const NODE_HEADER: &str = "x-raft-node-id";
/// Request header naming the dialling member's name; with TLS its certificate must be valid
/// for that name, and the node id it claims must be that member's.
pub const NODE_NAME_HEADER: &str = "x-raft-node-name";
/// Request header naming the node the dialler means to reach. A node with another id (say, a
/// replacement with a fresh volume at the same address) refuses, so it never answers Raft
/// traffic meant for the member it replaced.
pub const TARGET_HEADER: &str = "x-raft-target-id";
/// The path peers connect to; its version changes whenever what peers exchange does (v2:
/// proposals carry the replicated dedupe clock), so nodes of different formats refuse each
/// other with a clear reason instead of applying entries differently.
pub const PEER_PATH: &str = "/raft/v2";
/// The path of the first protocol, refused with [`server::Refusal::OldProtocol`].
pub const OLD_PEER_PATH: &str = "/raft";

/// A peer connection's byte stream: TCP, or TLS over TCP.
pub trait PeerIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> PeerIo for T {}
pub type PeerStream = Box<dyn PeerIo>;

/// Compare secrets in constant time.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}
