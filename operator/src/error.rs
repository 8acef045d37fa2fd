//! The operator's error type. Each variant has a static category used for metric labels and
//! Event reasons (never the formatted message, which may be unbounded).

use raft_api::client::ClientError;

use crate::resources::SecretError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API call failed: {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("sidecar {pod} refused or failed {call}: {source}")]
    Sidecar {
        pod: String,
        call: &'static str,
        #[source]
        source: ClientError,
    },
    #[error("no address for pod {0}: it has no pod IP yet")]
    NoPodAddress(String),
    #[error("cannot make an admin client for pod {pod}: {reason}")]
    AdminClient { pod: String, reason: String },
    #[error(transparent)]
    Tls(#[from] crate::resources::tls::TlsError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "{kind} {name} exists and is not controlled by this RaftCluster: left alone (rename or delete it, or rename the RaftCluster)"
    )]
    NotOwned { kind: String, name: String },
    #[error(
        "spec.tls.issuerRef names a cert-manager issuer, but the API server does not serve \
         cert-manager's Certificate (cert-manager.io/v1): install cert-manager, or create the \
         RaftCluster without spec.tls to use the operator's own CA"
    )]
    CertManagerMissing,
    #[error("cannot restore the backup into {pod}: {reason}")]
    Restore { pod: String, reason: String },
    #[error("resource has no {0}")]
    InvalidObject(&'static str),
    #[error("failed to encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }

    /// Static category for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "KubeApi",
            Error::Sidecar { .. } => "Sidecar",
            Error::NoPodAddress(_) => "NoPodAddress",
            Error::AdminClient { .. } => "AdminClient",
            Error::Tls(_) => "Tls",
            Error::Secret(_) => "Secret",
            Error::NotOwned { .. } => "NotOwned",
            Error::CertManagerMissing => "CertManagerMissing",
            Error::Restore { .. } => "Restore",
            Error::InvalidObject(_) => "InvalidObject",
            Error::Encode { .. } => "Encode",
        }
    }
}
