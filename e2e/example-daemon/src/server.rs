//! The daemon's own HTTP endpoint: `GET /digest` (what it executed, for the e2e tests and for
//! humans) and `GET /healthz` (liveness).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use warp::Filter;

use crate::Shutdown;
use crate::state::Shared;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (--listen): {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Bind `addr` and serve until `shutdown`; requests in progress finish first. Returns the
/// bound address (the real port when `addr` asks for port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), BindError> {
    let err = |source| BindError { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    let digest = warp::path!("digest")
        .and(warp::get())
        .map(move || warp::reply::json(&shared.report()));
    // Liveness only: the daemon is alive while it serves. Waiting for its sidecar is normal
    // and must not get it restarted.
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({ "status": "ok" })));
    let server = warp::serve(digest.or(healthz))
        .incoming(listener)
        .graceful(async move { shutdown.wait().await })
        .run();
    Ok((local, tokio::spawn(server)))
}
