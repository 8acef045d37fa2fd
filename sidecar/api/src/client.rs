//! An async client for the daemon and admin APIs. Every request has a deadline; error answers
//! come back as [`ClientError::Api`] carrying the sidecar's code.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::admin::{
    ClusterSettings, ClusterView, InitializeRequest, InitializeResult, MemberSpec,
    MembershipResult, NodeStatus, SettingsUpdate, SnapshotResult,
};
use crate::daemon::{
    ConsensusState, Consistency, JournalPage, Operation, OperationState, SubmitResult,
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

/// Client of one sidecar: its daemon API and/or its admin API.
#[derive(Debug, Clone)]
pub struct SidecarClient {
    http: reqwest::Client,
    timeout: Duration,
    api: Option<String>,
    admin: Option<String>,
    token: Option<String>,
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
        }
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
        let url = self.url(admin, path)?;
        let mut req = self.http.request(method, &url).timeout(self.timeout);
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
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api {
                status,
                code: body.error.code,
                message: body.error.message.clone(),
                body: Box::new(body),
            }),
            Err(_) => Err(ClientError::Unexpected {
                url,
                status,
                reason: text.chars().take(200).collect(),
            }),
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        admin: bool,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let resp = self.send(admin, method, path, body).await?;
        let url = resp.url().to_string();
        let status = resp.status().as_u16();
        resp.json().await.map_err(|e| ClientError::Unexpected {
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
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => Err(ClientError::Api {
                    status,
                    code: body.error.code,
                    message: body.error.message.clone(),
                    body: Box::new(body),
                }),
                Err(_) => Err(ClientError::Unexpected {
                    url,
                    status,
                    reason: text,
                }),
            }
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

    pub async fn download_snapshot(&self) -> Result<bytes::Bytes, ClientError> {
        let resp = self
            .send(true, Method::GET, "/admin/v1/snapshot", Self::NO_BODY)
            .await?;
        let url = resp.url().to_string();
        resp.bytes()
            .await
            .map_err(|source| ClientError::Http { url, source })
    }

    pub async fn metrics(&self) -> Result<String, ClientError> {
        let resp = self
            .send(true, Method::GET, "/metrics", Self::NO_BODY)
            .await?;
        let url = resp.url().to_string();
        resp.text()
            .await
            .map_err(|source| ClientError::Http { url, source })
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
