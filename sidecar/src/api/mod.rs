//! HTTP edges of the node: the daemon API (loopback, plain HTTP) and the admin API
//! (cluster-facing, TLS unless `--insecure-plaintext`). Both take a shutdown future so callers
//! and tests control their lifetime.

pub mod admin;
mod backup;
pub mod daemon;
pub mod error;
mod journal;
pub mod listener;
mod restore;
mod sse;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::Filter;
use warp::Reply;

use crate::admission::Caps;
use listener::ListenerOptions;

use crate::raft::node::Node;

/// The daemon API: loopback only, so every connection comes from one address (the daemon's
/// submitters and journal watchers).
const DAEMON_CAPS: Caps = Caps {
    open: 1024,
    pending: 1024,
    pending_per_address: 1024,
};
/// The admin API: 128 connections with a client certificate (the operator, tools); without
/// one (probes, Prometheus, strangers) 64 in all and 8 per source address.
const ADMIN_CAPS: Caps = Caps {
    open: 128,
    pending: 64,
    pending_per_address: 8,
};

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {api} API: {source}")]
pub struct BindError {
    pub api: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// The two listening APIs.
pub struct Servers {
    pub daemon_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn bind(api: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { api, addr, source })
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Bind and serve both APIs until `stop` turns true (in-flight requests finish first).
pub async fn serve(node: Arc<Node>, stop: watch::Receiver<bool>) -> Result<Servers, BindError> {
    let daemon_listener = bind("daemon", node.cfg.api_addr).await?;
    let admin_listener = bind("admin", node.cfg.admin_listen).await?;
    let daemon_addr = daemon_listener.local_addr().map_err(|source| BindError {
        api: "daemon",
        addr: node.cfg.api_addr,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| BindError {
        api: "admin",
        addr: node.cfg.admin_listen,
        source,
    })?;
    let daemon_routes = daemon::routes(node.clone())
        .recover(error::recover)
        .map(Reply::into_response);
    let admin_routes = admin::routes(node.clone())
        .recover(error::recover)
        .map(Reply::into_response);
    let options = |name, caps, tls| ListenerOptions {
        name,
        caps,
        tls,
        refused: node.metrics.connections_refused.clone(),
    };
    let daemon = listener::serve(
        daemon_listener,
        options("daemon", DAEMON_CAPS, None),
        daemon_routes,
        stopped(stop.clone()),
    );
    let admin = listener::serve(
        admin_listener,
        options("admin", ADMIN_CAPS, node.tls.clone()),
        admin_routes,
        stopped(stop),
    );
    Ok(Servers {
        daemon_addr,
        admin_addr,
        tasks: vec![tokio::spawn(daemon), tokio::spawn(admin)],
    })
}
