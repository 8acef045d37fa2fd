//! HTTP edges of the node: the daemon API (loopback) and the admin API (cluster-facing).
//! Both take a shutdown future so callers and tests control their lifetime.

pub mod admin;
pub mod daemon;
pub mod error;
mod journal;
mod sse;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use warp::Filter;

use crate::raft::node::Node;

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
    let daemon_routes = daemon::routes(node.clone()).recover(error::recover);
    let admin_routes = admin::routes(node).recover(error::recover);
    let daemon = warp::serve(daemon_routes)
        .incoming(daemon_listener)
        .graceful(stopped(stop.clone()))
        .run();
    let admin = warp::serve(admin_routes)
        .incoming(admin_listener)
        .graceful(stopped(stop))
        .run();
    Ok(Servers {
        daemon_addr,
        admin_addr,
        tasks: vec![tokio::spawn(daemon), tokio::spawn(admin)],
    })
}
