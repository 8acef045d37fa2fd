//! The read-only part of the kubelet API that `kubectl logs` needs: HTTPS on the node's
//! InternalIP, `GET /containerLogs/<ns>/<pod>/<container>` with `tailLines`, `previous` and
//! `follow`, served from the container log files. The apiserver proxies `pods/log` here (it does
//! not verify the serving certificate unless `--kubelet-certificate-authority` is set; clients
//! are not authenticated: the port listens on the pod bridge only). Exec, attach and
//! port-forward are not served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

#[derive(Debug, thiserror::Error)]
pub enum KubeletApiError {
    #[error("failed to read {path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("invalid TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Marker the agent writes before each container start (see [`crate::process::spawn`]).
pub const START_MARKER: &str = "--- raft-test-agent: ";

/// A parsed `containerLogs` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub tail_lines: Option<usize>,
    pub previous: bool,
    pub follow: bool,
}

/// Parses `GET /containerLogs/ns/pod/container?…`; None for anything else.
pub fn parse_request_line(line: &str) -> Option<LogRequest> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "GET" {
        return None;
    }
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let rest = path.strip_prefix("/containerLogs/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    let [namespace, pod, container] = segs.as_slice() else {
        return None;
    };
    let safe = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('\\');
    if !(safe(namespace) && safe(pod) && safe(container)) {
        return None;
    }
    let mut req = LogRequest {
        namespace: (*namespace).to_owned(),
        pod: (*pod).to_owned(),
        container: (*container).to_owned(),
        tail_lines: None,
        previous: false,
        follow: false,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        match k {
            "tailLines" => req.tail_lines = v.parse().ok(),
            "previous" => req.previous = v == "true" || v == "1",
            "follow" => req.follow = v == "true" || v == "1",
            _ => {}
        }
    }
    Some(req)
}

/// The part of a log file a request wants: the current run (after the last start marker) or the
/// previous one, without the markers, cut to the last `tail_lines` lines.
pub fn select(text: &str, previous: bool, tail_lines: Option<usize>) -> String {
    let runs: Vec<&str> = text.split(START_MARKER).collect();
    let pick = if previous {
        runs.len().checked_sub(2).and_then(|i| runs.get(i))
    } else {
        runs.last()
    };
    // each run starts with the rest of its marker line
    let body = pick
        .map(|r| {
            if runs.len() > 1 {
                r.split_once('\n').map_or("", |(_, b)| b)
            } else {
                r
            }
        })
        .unwrap_or("");
    match tail_lines {
        Some(n) => {
            let lines: Vec<&str> = body.lines().collect();
            let start = lines.len().saturating_sub(n);
            let mut out = lines[start..].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out
        }
        None => body.to_owned(),
    }
}

fn load_tls(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, KubeletApiError> {
    let pem_err = |path: &Path| {
        let path = path.to_owned();
        move |e: rustls_pki_types::pem::Error| KubeletApiError::Pem {
            path,
            reason: e.to_string(),
        }
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(pem_err(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}

/// Serves the log API until the process ends.
pub async fn serve(
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    logs_dir: PathBuf,
) -> Result<(), KubeletApiError> {
    let acceptor = TlsAcceptor::from(Arc::new(load_tls(cert, key)?));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| KubeletApiError::Listen { addr, source })?;
    tracing::info!(%addr, "kubelet log API listening");
    let logs_dir = Arc::new(logs_dir);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let logs_dir = logs_dir.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        if let Err(e) = handle(tls, &logs_dir).await {
                            tracing::debug!(%peer, error = %e, "log request ended");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                }
            });
        }
    });
    Ok(())
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    logs_dir: &Path,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let first = text.lines().next().unwrap_or_default();
    if first.starts_with("GET /healthz") {
        return respond(&mut s, "200 OK", "ok").await;
    }
    let Some(req) = parse_request_line(first) else {
        return respond(&mut s, "404 Not Found", "not served by raft-test-agent\n").await;
    };
    let path = logs_dir
        .join(&req.namespace)
        .join(&req.pod)
        .join(format!("{}.log", req.container));
    let Ok(content) = tokio::fs::read(&path).await else {
        return respond(&mut s, "404 Not Found", "no log for this container\n").await;
    };
    let body = select(
        &String::from_utf8_lossy(&content),
        req.previous,
        req.tail_lines,
    );
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        .await?;
    s.write_all(body.as_bytes()).await?;
    if req.follow && !req.previous {
        follow(&mut s, &path, content.len()).await?;
    }
    s.shutdown().await
}

/// Streams what is appended to `path` after `offset` until the client goes away; a new start
/// marker (the container restarted) ends the stream, like a kubelet's follow.
async fn follow<S: AsyncWrite + Unpin>(
    s: &mut S,
    path: &Path,
    mut offset: usize,
) -> std::io::Result<()> {
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let content = tokio::fs::read(path).await?;
        if content.len() > offset {
            let new = String::from_utf8_lossy(&content[offset..]).into_owned();
            if let Some(i) = new.find(START_MARKER) {
                s.write_all(&new.as_bytes()[..i]).await?;
                return Ok(());
            }
            s.write_all(new.as_bytes()).await?;
            s.flush().await?;
            offset = content.len();
        }
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_log_requests_are_parsed_with_their_options() {
        let r = parse_request_line(
            "GET /containerLogs/ns/raft-0/sidecar?tailLines=5&follow=true HTTP/1.1",
        )
        .unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.container.as_str()),
            ("ns", "raft-0", "sidecar")
        );
        assert_eq!(r.tail_lines, Some(5));
        assert!(r.follow && !r.previous);
        assert!(parse_request_line("GET /containerLogs/ns/../x HTTP/1.1").is_none());
        assert!(parse_request_line("GET /exec/ns/p/c HTTP/1.1").is_none());
        assert!(parse_request_line("POST /containerLogs/a/b/c HTTP/1.1").is_none());
    }

    #[test]
    fn logs_are_cut_by_run_and_tail() {
        let text = format!(
            "{m}t1 starting [a]\none\ntwo\n{m}t2 starting [a]\nthree\nfour\nfive\n",
            m = START_MARKER
        );
        assert_eq!(select(&text, false, None), "three\nfour\nfive\n");
        assert_eq!(select(&text, true, None), "one\ntwo\n");
        assert_eq!(select(&text, false, Some(2)), "four\nfive\n");
        assert_eq!(select("plain\n", false, None), "plain\n");
        assert_eq!(select(&format!("{START_MARKER}t1 x\n"), true, None), "");
    }
}
