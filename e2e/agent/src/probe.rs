//! Container probes: `httpGet` (HTTP/1.0 GET to the pod IP from the host, over TLS for
//! `scheme: HTTPS` without checking the certificate, as the kubelet does; 200–399 is success),
//! `tcpSocket` (connect) and `exec` (`nsenter` into the container's namespaces). `grpc` is not
//! supported and counts as a failure. [`Tracker`] applies the kubelet's timing
//! (initial delay, period, timeout) and thresholds to a stream of results; it is pure and
//! driven by the pod worker's clock.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Why a probe failed, for logs.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("malformed HTTP response")]
    BadResponse,
    #[error("i/o error: {0}")]
    Io(#[source] std::io::Error),
    #[error("port '{0}' is not a declared container port")]
    NamedPort(String),
    #[error("exec exited with {0}")]
    Exec(String),
    #[error("unsupported probe ({0})")]
    Unsupported(&'static str),
}

/// Resolves an int or named port against the container's declared ports.
fn port(container: &Container, p: &IntOrString) -> Result<u16, ProbeError> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| ProbeError::NamedPort(n.to_string())),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .or_else(|| name.parse().ok())
            .ok_or_else(|| ProbeError::NamedPort(name.clone())),
    }
}

/// Runs one probe against a container whose network is at `ip` and whose main process is `pid`.
pub async fn run(
    probe: &Probe,
    container: &Container,
    ip: IpAddr,
    pid: Option<u32>,
) -> Result<(), ProbeError> {
    let limit =
        Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    let attempt = async {
        if let Some(h) = &probe.http_get {
            let tls = h
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"));
            let host: IpAddr = h.host.as_deref().and_then(|s| s.parse().ok()).unwrap_or(ip);
            let addr = SocketAddr::new(host, port(container, &h.port)?);
            let headers: Vec<(String, String)> = h
                .http_headers
                .iter()
                .flatten()
                .map(|hh| (hh.name.clone(), hh.value.clone()))
                .collect();
            http_get(addr, tls, h.path.as_deref().unwrap_or("/"), &headers).await
        } else if let Some(t) = &probe.tcp_socket {
            let host: IpAddr = t.host.as_deref().and_then(|s| s.parse().ok()).unwrap_or(ip);
            let addr = SocketAddr::new(host, port(container, &t.port)?);
            TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|source| ProbeError::Connect { addr, source })
        } else if let Some(e) = &probe.exec {
            exec(pid, e.command.as_deref().unwrap_or_default()).await
        } else if probe.grpc.is_some() {
            Err(ProbeError::Unsupported("grpc"))
        } else {
            Err(ProbeError::Unsupported("no handler"))
        }
    };
    timeout(limit, attempt)
        .await
        .map_err(|_| ProbeError::Timeout(limit))?
}

async fn http_get(
    addr: SocketAddr,
    tls: bool,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), ProbeError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let mut stream: Box<dyn Io> = if tls {
        let config = unverified_tls().map_err(|e| ProbeError::Io(std::io::Error::other(e)))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        Box::new(connector.connect(name, tcp).await.map_err(ProbeError::Io)?)
    } else {
        Box::new(tcp)
    };
    let mut request = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: kube-probe/raft-test-agent\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    let mut head = [0u8; 32];
    let mut n = 0;
    while n < 12 {
        let read = stream.read(&mut head[n..]).await.map_err(ProbeError::Io)?;
        if read == 0 {
            break;
        }
        n += read;
    }
    let code = parse_status(&head[..n]).ok_or(ProbeError::BadResponse)?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(ProbeError::Status(code))
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// A TLS client that accepts any server certificate: the kubelet's HTTPS probes do not verify
/// (a probe asks whether the container answers, not who it is).
fn unverified_tls()
-> Result<std::sync::Arc<tokio_rustls::rustls::ClientConfig>, tokio_rustls::rustls::Error> {
    use tokio_rustls::rustls::{self, client::danger, crypto, pki_types};

    #[derive(Debug)]
    struct AnyCertificate(std::sync::Arc<crypto::CryptoProvider>);

    impl danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &pki_types::CertificateDer<'_>,
            _: &[pki_types::CertificateDer<'_>],
            _: &pki_types::ServerName<'_>,
            _: &[u8],
            _: pki_types::UnixTime,
        ) -> Result<danger::ServerCertVerified, rustls::Error> {
            Ok(danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<danger::HandshakeSignatureValid, rustls::Error> {
            crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<danger::HandshakeSignatureValid, rustls::Error> {
            crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    let provider = std::sync::Arc::new(crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// The status code of `HTTP/1.x NNN ...`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn exec(pid: Option<u32>, command: &[String]) -> Result<(), ProbeError> {
    let Some(pid) = pid else {
        return Err(ProbeError::Exec("no running process".to_owned()));
    };
    if command.is_empty() {
        return Err(ProbeError::Unsupported("empty exec command"));
    }
    let status = tokio::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "-n", "-u", "--"])
        .args(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(ProbeError::Io)?;
    if status.success() {
        Ok(())
    } else {
        Err(ProbeError::Exec(status.to_string()))
    }
}

/// What the probe results mean so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No decision yet (initial delay, or not enough results).
    Unknown,
    Success,
    Failure,
}

/// Kubelet timing and thresholds for one probe of one container run.
#[derive(Debug, Clone)]
pub struct Tracker {
    pub probe: Probe,
    next_at: Instant,
    successes: i32,
    failures: i32,
    verdict: Verdict,
}

impl Tracker {
    /// A tracker for a container started at `started`.
    pub fn new(probe: Probe, started: Instant) -> Self {
        let delay = u64::try_from(probe.initial_delay_seconds.unwrap_or(0)).unwrap_or(0);
        Self {
            probe,
            next_at: started + Duration::from_secs(delay),
            successes: 0,
            failures: 0,
            verdict: Verdict::Unknown,
        }
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Records one result taken at `now` and schedules the next probe.
    pub fn record(&mut self, ok: bool, now: Instant) -> Verdict {
        let period = u64::try_from(self.probe.period_seconds.unwrap_or(10).max(1)).unwrap_or(10);
        self.next_at = now + Duration::from_secs(period);
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                self.verdict = Verdict::Success;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                self.verdict = Verdict::Failure;
            }
        }
        self.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(2),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    #[test]
    fn the_first_probe_waits_for_the_initial_delay() {
        let t0 = Instant::now();
        let t = Tracker::new(probe(1, 3), t0);
        assert!(!t.due(t0 + Duration::from_secs(4)));
        assert!(t.due(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn failure_needs_the_threshold_of_consecutive_failures() {
        let t0 = Instant::now();
        let mut t = Tracker::new(probe(1, 3), t0);
        assert_eq!(t.record(true, t0), Verdict::Success);
        assert_eq!(t.record(false, t0), Verdict::Success);
        assert_eq!(t.record(false, t0), Verdict::Success);
        assert_eq!(t.record(true, t0), Verdict::Success);
        assert_eq!(t.record(false, t0), Verdict::Success);
        assert_eq!(t.record(false, t0), Verdict::Success);
        assert_eq!(t.record(false, t0), Verdict::Failure);
        assert!(!t.due(t0 + Duration::from_secs(1)));
        assert!(t.due(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn success_needs_the_success_threshold() {
        let t0 = Instant::now();
        let mut t = Tracker::new(probe(2, 1), t0);
        assert_eq!(t.record(true, t0), Verdict::Unknown);
        assert_eq!(t.record(true, t0), Verdict::Success);
        assert_eq!(t.record(false, t0), Verdict::Failure);
    }

    #[test]
    fn status_lines_are_parsed() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(parse_status(b"garbage"), None);
    }
}
