//! An async client for the daemon and admin APIs. Every request has a deadline; error answers
//! come back as [`ClientError::Api`] carrying the sidecar's code.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::admin::{
    ClusterSettings, ClusterView, InitializeRequest, InitializeResult, MemberSpec,
    MembershipResult, NodeStatus, RecoverRequest, RecoverResult, RestoreResult, SettingsUpdate,
    SnapshotResult, TransferRequest, TransferResult,
};
use crate::backup::{BackupManifest, MANIFEST_FORMAT, header};
use crate::daemon::{
    BatchRequest, BatchResult, ConsensusState, Consistency, JournalPage, Operation, OperationState,
    SubmitResult,
};
use crate::{ErrorBody, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        body: Box<ErrorBody>,
    },
    #[error("request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("unexpected answer from {url} (HTTP {status}): {reason}")]
    Unexpected {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("no {0} address configured for this client")]
    NoAddress(&'static str),
    #[error("TLS client configuration: {0}")]
    Tls(String),
    #[error("answer from {url} is larger than this client's {limit}-byte limit; not read")]
    TooLarge { url: String, limit: usize },
    #[error("backup download from {url}: {reason}")]
    Backup { url: String, reason: String },
}

impl ClientError {
    /// The sidecar's error code, when the sidecar answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Client of one sidecar: its daemon API and/or its admin API. `Debug` leaves the token out.
#[derive(Clone)]
pub struct SidecarClient {
    http: reqwest::Client,
    timeout: Duration,
    api: Option<String>,
    admin: Option<String>,
    token: Option<String>,
    max_response_bytes: usize,
}

/// Largest answer a client reads by default (a journal page of large operations fits); see
/// [`SidecarClient::with_response_limit`].
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;

impl std::fmt::Debug for SidecarClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarClient")
            .field("api", &self.api)
            .field("admin", &self.admin)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What an admin client needs for mutual TLS: the cluster's CA bundle, and a certificate of
/// that CA with its key (all PEM). `Debug` leaves the key out.
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// An HTTP client prepared for mutual TLS: build it once from [`ClientTls`] and share it (its
/// connections are pooled).
#[derive(Debug, Clone)]
pub struct TlsHttp {
    http: reqwest::Client,
}

impl TlsHttp {
    /// The prepared client itself, for requests this crate has no method for.
    pub fn reqwest(&self) -> reqwest::Client {
        self.http.clone()
    }
}

impl ClientTls {
    /// The HTTP client that presents this certificate and trusts only this CA bundle.
    pub fn connector(&self) -> Result<TlsHttp, ClientError> {
        self.build(reqwest::Client::builder())
    }

    /// Like [`Self::connector`], but `host` is reached at `addr` without asking DNS: for a
    /// server whose certificate names `host` and that is dialled at a known address (the
    /// operator calls pods at their IP, their certificates name their stable DNS names).
    pub fn connector_for(
        &self,
        host: &str,
        addr: std::net::SocketAddr,
    ) -> Result<TlsHttp, ClientError> {
        self.build(reqwest::Client::builder().resolve(host, addr))
    }

    fn build(&self, builder: reqwest::ClientBuilder) -> Result<TlsHttp, ClientError> {
        let bad = |e: reqwest::Error| ClientError::Tls(e.to_string());
        let mut builder = builder
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .min_tls_version(reqwest::tls::Version::TLS_1_3);
        for ca in reqwest::Certificate::from_pem_bundle(&self.ca_pem).map_err(bad)? {
            builder = builder.add_root_certificate(ca);
        }
        let identity = [self.cert_pem.as_slice(), b"\n", self.key_pem.as_slice()].concat();
        builder = builder.identity(reqwest::Identity::from_pem(&identity).map_err(bad)?);
        Ok(TlsHttp {
            http: builder.build().map_err(bad)?,
        })
    }

    /// Read the three PEM files.
    pub fn from_files(
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, ClientError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))
        };
        Ok(Self {
            ca_pem: read(ca)?,
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

fn base(addr: &str) -> String {
    let addr = addr.trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl SidecarClient {
    /// `api` and `admin` are `host:port` or URLs; `timeout` bounds every request.
    pub fn new(
        api: Option<&str>,
        admin: Option<&str>,
        token: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            http: reqwest::Client::new(),
            timeout,
            api: api.map(base),
            admin: admin.map(base),
            token,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Read at most `limit` bytes of any answer (snapshot downloads and streams excepted):
    /// a larger one fails with [`ClientError::TooLarge`] instead of filling memory. The
    /// operator, which calls every member, keeps this small.
    pub fn with_response_limit(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// The body of `resp`, refused past the response limit (by its `Content-Length` before
    /// reading, or as soon as the bytes read pass it).
    async fn body(&self, mut resp: reqwest::Response) -> Result<bytes::Bytes, ClientError> {
        let url = resp.url().to_string();
        let limit = self.max_response_bytes;
        let too_large = || ClientError::TooLarge {
            url: url.clone(),
            limit,
        };
        if resp
            .content_length()
            .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })? {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// An error answer: the sidecar's error body, or what came instead (bounded).
    async fn error_answer(&self, url: String, resp: reqwest::Response) -> ClientError {
        let status = resp.status().as_u16();
        let text = match self.body(resp).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return e,
        };
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status,
                code: body.error.code,
                message: body.error.message.clone(),
                body: Box::new(body),
            },
            Err(_) => ClientError::Unexpected {
                url,
                status,
                reason: text.chars().take(200).collect(),
            },
        }
    }

    /// Call the admin API over mutual TLS (`https://`) with `tls`. The daemon API (loopback)
    /// stays plain HTTP.
    pub fn with_tls(mut self, tls: &TlsHttp) -> Self {
        self.http = tls.http.clone();
        self.admin = self.admin.map(|a| match a.strip_prefix("http://") {
            Some(rest) => format!("https://{rest}"),
            None => a,
        });
        self
    }

    fn url(&self, admin: bool, path: &str) -> Result<String, ClientError> {
        let root = if admin {
            self.admin.as_ref().ok_or(ClientError::NoAddress("admin"))?
        } else {
            self.api
                .as_ref()
                .ok_or(ClientError::NoAddress("daemon API"))?
        };
        Ok(format!("{root}{path}"))
    }

    async fn send(
        &self,
        admin: bool,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_within(admin, method, path, body, Some(self.timeout))
            .await
    }

    /// [`Self::send`] with another deadline for the whole exchange (`None`: the caller bounds
    /// the body's reading itself).
    async fn send_within(
        &self,
        admin: bool,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        deadline: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(admin, path)?;
        let mut req = self.http.request(method, &url);
        if let Some(deadline) = deadline {
            req = req.timeout(deadline);
        }
        if admin && let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.error_answer(url, resp).await)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        admin: bool,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let resp = self.send(admin, method, path, body).await?;
        self.decode(resp).await
    }

    /// A successful answer's body as JSON.
    async fn decode<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, ClientError> {
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        let bytes = self.body(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            url,
            status,
            reason: e.to_string(),
        })
    }

    const NO_BODY: Option<&'static ()> = None;

    pub async fn submit(&self, op: &Operation) -> Result<SubmitResult, ClientError> {
        self.json(false, Method::POST, "/v1/operations", Some(op))
            .await
    }

    /// `POST /v1/operations:batch`: one result per operation, in order; a batch the node
    /// refuses as a whole (too many operations, too large, not JSON) is an error.
    pub async fn submit_batch(&self, operations: &[Operation]) -> Result<BatchResult, ClientError> {
        let body = BatchRequest {
            operations: operations.to_vec(),
        };
        self.json(false, Method::POST, "/v1/operations:batch", Some(&body))
            .await
    }

    pub async fn operation(&self, id: &str) -> Result<OperationState, ClientError> {
        self.operation_read(id, Consistency::Local).await
    }

    /// `GET /v1/operations/{id}?consistency=…`.
    pub async fn operation_read(
        &self,
        id: &str,
        consistency: Consistency,
    ) -> Result<OperationState, ClientError> {
        let path = format!(
            "/v1/operations/{}?consistency={}",
            encode_path(id),
            consistency.as_str()
        );
        self.json(false, Method::GET, &path, Self::NO_BODY).await
    }

    pub async fn journal(
        &self,
        from: Option<u64>,
        limit: Option<usize>,
    ) -> Result<JournalPage, ClientError> {
        self.journal_read(from, limit, Consistency::Local).await
    }

    /// `GET /v1/journal?from=…&limit=…&consistency=…`.
    pub async fn journal_read(
        &self,
        from: Option<u64>,
        limit: Option<usize>,
        consistency: Consistency,
    ) -> Result<JournalPage, ClientError> {
        let mut q = vec![format!("consistency={}", consistency.as_str())];
        if let Some(f) = from {
            q.push(format!("from={f}"));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let path = format!("/v1/journal?{}", q.join("&"));
        self.json(false, Method::GET, &path, Self::NO_BODY).await
    }

    pub async fn state(&self) -> Result<ConsensusState, ClientError> {
        self.state_read(Consistency::Local).await
    }

    /// `GET /v1/state?consistency=…`.
    pub async fn state_read(
        &self,
        consistency: Consistency,
    ) -> Result<ConsensusState, ClientError> {
        let path = format!("/v1/state?consistency={}", consistency.as_str());
        self.json(false, Method::GET, &path, Self::NO_BODY).await
    }

    /// A streaming GET (SSE endpoints); the caller reads the body.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, ClientError> {
        let url = self.url(false, path)?;
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })?;
        if resp.status() == StatusCode::OK {
            Ok(resp)
        } else {
            Err(self.error_answer(url, resp).await)
        }
    }

    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.json(true, Method::GET, "/admin/v1/status", Self::NO_BODY)
            .await
    }

    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.json(true, Method::GET, "/admin/v1/cluster", Self::NO_BODY)
            .await
    }

    pub async fn initialize(
        &self,
        members: Vec<MemberSpec>,
    ) -> Result<InitializeResult, ClientError> {
        self.json(
            true,
            Method::POST,
            "/admin/v1/initialize",
            Some(&InitializeRequest { members }),
        )
        .await
    }

    pub async fn add_learner(&self, spec: &MemberSpec) -> Result<MembershipResult, ClientError> {
        self.json(true, Method::POST, "/admin/v1/members", Some(spec))
            .await
    }

    pub async fn promote(&self, node_id: u64) -> Result<MembershipResult, ClientError> {
        self.json(
            true,
            Method::POST,
            &format!("/admin/v1/members/{node_id}/promote"),
            Self::NO_BODY,
        )
        .await
    }

    pub async fn remove(&self, node_id: u64) -> Result<MembershipResult, ClientError> {
        self.json(
            true,
            Method::DELETE,
            &format!("/admin/v1/members/{node_id}"),
            Self::NO_BODY,
        )
        .await
    }

    /// `POST /admin/v1/leadership/transfer` on the leader: hand leadership to `to` (a voter),
    /// or to the most caught-up follower.
    pub async fn transfer_leadership(
        &self,
        to: Option<u64>,
    ) -> Result<TransferResult, ClientError> {
        let body = TransferRequest {
            to_node_id: to.map(|id| id.to_string()),
        };
        self.json(
            true,
            Method::POST,
            "/admin/v1/leadership/transfer",
            Some(&body),
        )
        .await
    }

    pub async fn settings(&self) -> Result<ClusterSettings, ClientError> {
        self.json(true, Method::GET, "/admin/v1/settings", Self::NO_BODY)
            .await
    }

    pub async fn set_settings(
        &self,
        update: &SettingsUpdate,
    ) -> Result<ClusterSettings, ClientError> {
        self.json(true, Method::PUT, "/admin/v1/settings", Some(update))
            .await
    }

    pub async fn snapshot(&self) -> Result<SnapshotResult, ClientError> {
        self.json(true, Method::POST, "/admin/v1/snapshot", Self::NO_BODY)
            .await
    }

    /// Stream the node's current snapshot into `out` (`GET /admin/v1/snapshot`) and describe
    /// it: the image is never held whole in memory, its size and SHA-256 are computed over the
    /// bytes written. The answer must start within the client's timeout and each chunk must
    /// follow within it; the whole download has no deadline of its own.
    pub async fn download_backup<W>(&self, out: &mut W) -> Result<BackupManifest, ClientError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let path = "/admin/v1/snapshot";
        let url = self.url(true, path)?;
        let failed = |reason: String| ClientError::Backup {
            url: url.clone(),
            reason,
        };
        let mut resp = tokio::time::timeout(
            self.timeout,
            self.send_within(true, Method::GET, path, Self::NO_BODY, None),
        )
        .await
        .map_err(|_| failed(format!("no answer within {:?}", self.timeout)))??;
        let text = |name: &str| -> Result<String, ClientError> {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| failed(format!("the answer has no {name} header")))
        };
        let number = |name: &str| -> Result<u64, ClientError> {
            text(name)?
                .parse()
                .map_err(|_| failed(format!("header {name} is not a number")))
        };
        let mut manifest = BackupManifest {
            format: MANIFEST_FORMAT.to_owned(),
            cluster_id: text(header::CLUSTER_ID)?,
            snapshot_id: text(header::SNAPSHOT_ID)?,
            last_log_index: number(header::LAST_LOG_INDEX)?,
            last_log_term: number(header::LAST_LOG_TERM)?,
            journal_first_index: number(header::JOURNAL_FIRST_INDEX)?,
            journal_last_index: number(header::JOURNAL_LAST_INDEX)?,
            size_bytes: 0,
            sha256: String::new(),
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            sidecar_version: text(header::SIDECAR_VERSION)?,
            image_format: u32::try_from(number(header::IMAGE_FORMAT)?)
                .map_err(|_| failed("image format out of range".into()))?,
        };
        let mut hash = sha2::Sha256::new();
        loop {
            let chunk = tokio::time::timeout(self.timeout, resp.chunk())
                .await
                .map_err(|_| failed(format!("stalled for {:?}", self.timeout)))?
                .map_err(|source| ClientError::Http {
                    url: url.clone(),
                    source,
                })?;
            let Some(chunk) = chunk else { break };
            hash.update(&chunk);
            manifest.size_bytes += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(|e| failed(format!("writing the image failed: {e}")))?;
        }
        out.flush()
            .await
            .map_err(|e| failed(format!("writing the image failed: {e}")))?;
        manifest.sha256 = crate::admin::hex(&hash.finalize());
        Ok(manifest)
    }

    /// Restore a backup into an uninitialized node (`POST /admin/v1/restore`): `image` is the
    /// backup image, streamed as it is read, checked by the node against `manifest`. The whole
    /// exchange must end within `deadline`; the node restarts after answering.
    pub async fn restore<R>(
        &self,
        manifest: &BackupManifest,
        image: R,
        deadline: Duration,
    ) -> Result<RestoreResult, ClientError>
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        let image = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
            image,
            256 << 10,
        ));
        let path = "/admin/v1/restore";
        let url = self.url(true, path)?;
        let manifest_json = serde_json::to_string(manifest).map_err(|e| ClientError::Backup {
            url: url.clone(),
            reason: format!("cannot encode the manifest: {e}"),
        })?;
        let mut req = self
            .http
            .post(&url)
            .timeout(deadline)
            .header(header::MANIFEST, manifest_json)
            .header("content-type", "application/octet-stream")
            .body(image);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(self.error_answer(url, resp).await);
        }
        self.decode(resp).await
    }

    /// Make this survivor of a lost majority the only voter of its cluster
    /// (`POST /admin/v1/recover`); refused while it is in touch with a quorum.
    pub async fn recover(&self) -> Result<RecoverResult, ClientError> {
        let body = RecoverRequest { force: true };
        self.json(true, Method::POST, "/admin/v1/recover", Some(&body))
            .await
    }

    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self
            .send(true, Method::GET, "/metrics", Self::NO_BODY)
            .await?;
        let bytes = self.body(resp).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Percent-encode an operation id for a path segment.
fn encode_path(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
