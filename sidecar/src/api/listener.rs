//! Serving one HTTP API on a bound listener: an accept loop with connection caps
//! ([`crate::admission`]), an
//! optional TLS handshake (the admin API), HTTP/1.1 with a deadline on reading request headers,
//! and a graceful stop that lets requests in flight finish.
//!
//! A client that presented a certificate of the cluster CA at the TLS handshake has
//! [`ClientCertificate`] among its requests' extensions; routes that need one check for it.
//! A connection made before the certificate files were reloaded is closed (after its request
//! in flight) [`crate::tls::STALE_CONNECTION_GRACE`] after the reload: a client certificate
//! the node no longer trusts keeps no keep-alive connection open.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use warp::Filter;
use warp::reply::Response;

use crate::admission::{Admission, Caps, Open, Pending};
use crate::metrics::ListenerLabel;
use crate::tls::Tls;

/// A client's whole request head must arrive within this (slow-header clients are cut off);
/// it also bounds how long an idle keep-alive connection is kept.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The admission slot a connection holds while it is served (released when dropped).
#[expect(dead_code, reason = "held only for its Drop, which releases the slot")]
enum Slot {
    Pending(Pending),
    Open(Open),
}

/// Marks a request whose connection presented a client certificate of the cluster CA.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate;

/// How one listener serves.
#[derive(Clone)]
pub struct ListenerOptions {
    /// `daemon` or `admin`: the metric label and the name in logs.
    pub name: &'static str,
    /// Connection caps. Connections without a client certificate of the cluster CA (probes,
    /// Prometheus, the daemon, strangers) count as pending for their whole life, so the
    /// per-address cap bounds them; those with one count as open.
    pub caps: Caps,
    /// TLS with an optional client certificate; `None` serves plain HTTP.
    pub tls: Option<Arc<Tls>>,
    /// `consensus_connections_refused_total`.
    pub refused: Family<ListenerLabel, Counter>,
}

impl ListenerOptions {
    fn refuse(&self, reason: &'static str) {
        self.refused
            .get_or_create(&ListenerLabel {
                listener: self.name,
                reason,
            })
            .inc();
    }
}

/// Serve `filter` on `listener` until `shutdown` resolves, then wait for the requests in
/// flight (the caller bounds that wait).
pub async fn serve<F>(
    listener: TcpListener,
    options: ListenerOptions,
    filter: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    tokio::pin!(shutdown);
    // Stop signal for every connection; each holds a `done` sender until it ends, so the
    // receiver's `recv()` returns `None` once all have (mini-redis's shutdown pattern).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let admission = Admission::new(options.caps);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(listener = options.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match admission.pending(remote.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                options.refuse(refused.label());
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (options, filter) = (options.clone(), filter.clone());
        let ending = Ending {
            stop: stop_rx.clone(),
            generations: None,
            _done: done_tx.clone(),
        };
        tokio::spawn(async move {
            let Some(tls) = options.tls.clone() else {
                let _slot = slot;
                connection(stream, None, filter, ending).await;
                return;
            };
            // Subscribed before the handshake: a reload during it counts.
            let ending = Ending {
                generations: Some(tls.generations()),
                ..ending
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().admin_server.clone());
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty())
                        .then_some(ClientCertificate);
                    // Anonymous connections keep their pending slot (capped per address).
                    let _slot = match cert {
                        None => Slot::Pending(slot),
                        Some(_) => match slot.open() {
                            Ok(open) => Slot::Open(open),
                            Err(refused) => {
                                options.refuse(refused.label());
                                return;
                            }
                        },
                    };
                    connection(stream, cert, filter, ending).await;
                }
                Ok(Err(e)) => {
                    options.refuse("tls");
                    tracing::debug!(listener = options.name, %remote, error = %e, "TLS handshake failed");
                }
                Err(_) => options.refuse("handshake_timeout"),
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

/// What ends a connection early: the listener's stop, and (with TLS) a reload of the
/// certificate files. `_done` is held until the connection ends.
struct Ending {
    stop: tokio::sync::watch::Receiver<bool>,
    generations: Option<tokio::sync::watch::Receiver<u64>>,
    _done: tokio::sync::mpsc::Sender<()>,
}

async fn connection<I, F>(io: I, cert: Option<ClientCertificate>, filter: F, ending: Ending)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let inner = TowerToHyperService::new(warp::service(filter));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        if let Some(cert) = cert {
            req.extensions_mut().insert(cert);
        }
        inner.call(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let Ending {
        mut stop,
        generations,
        _done,
    } = ending;
    let stale = crate::tls::stale_after_reload(generations);
    tokio::pin!(stale);
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopping);
    // Ending gracefully: the request in flight is answered, then the connection closes.
    let mut ending = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            () = &mut stale, if !ending => {
                ending = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut stopping, if !ending => {
                ending = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
