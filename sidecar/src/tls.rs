//! Mutual TLS of the peer transport and the admin API (TLS 1.3, rustls on ring).
//!
//! A node holds one generation of certificate material at a time: its own certificate and key
//! (`--tls-cert`, `--tls-key`) and the cluster's CA bundle (`--tls-ca`). Every accepted or
//! dialled connection takes the generation current at its handshake, and a watcher re-reads
//! the three files every few seconds, so a renewed certificate or CA (a Kubernetes Secret
//! updated in place) is used by the next connection with no restart. A generation that fails
//! to load (a half-rotated pair, say) is refused and the previous one stays in use.
//!
//! Identity: a member's certificate names its member name as a DNS name. A peer that claims a
//! name must present a certificate valid for it ([`names`]); the transport binds the node id
//! the peer claims to that name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use raft_api::admin::TlsInUse;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

use crate::metrics::{ReasonLabel, TlsMetrics};

/// How often the certificate files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Where a node's certificate material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} file {path} holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the key file {path} holds no PEM private key: {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("the CA file {path} holds no usable CA certificate: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("the certificate {cert} and key {key} do not make a usable identity: {reason}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("the certificate {path} is not valid for this member's name {name:?}")]
    NotOurName { path: PathBuf, name: String },
}

/// The raw files of one generation (compared to notice a change).
#[derive(Clone, PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

/// The configurations built from one generation of certificate material.
pub struct Material {
    files: Files,
    /// Accepting peers: a certificate of the cluster CA is required.
    pub peer_server: Arc<ServerConfig>,
    /// The admin API: a client certificate is asked for but optional at the handshake (probes
    /// and Prometheus have none); routes other than probes and metrics require one.
    pub admin_server: Arc<ServerConfig>,
    /// Dialling peers: presents our certificate, trusts only the cluster CA.
    pub client: Arc<ClientConfig>,
    /// When our certificate expires.
    pub not_after: Option<SystemTime>,
    /// Which files these are (reported by `/admin/v1/status`).
    pub in_use: TlsInUse,
}

/// A node's TLS state: the current [`Material`] and its watcher's counters.
pub struct Tls {
    paths: TlsPaths,
    /// The member name our own certificate must be valid for.
    name: String,
    current: RwLock<Arc<Material>>,
    /// Counts the generations loaded: connections made under an earlier one move to the new
    /// one (links re-dial once their requests in flight are answered; the peer server closes
    /// what is left after [`STALE_CONNECTION_GRACE`]).
    generation: tokio::sync::watch::Sender<u64>,
    metrics: TlsMetrics,
}

/// How long an accepted peer connection made with replaced certificates may stay open (its
/// dialler normally re-dials well before: it reloads within [`RELOAD_EVERY`] of the change).
pub const STALE_CONNECTION_GRACE: Duration = Duration::from_secs(30);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Whether `cert` is valid for the DNS name `name` (the check TLS clients make of a server).
pub fn names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
}

/// Resolves [`STALE_CONNECTION_GRACE`] after the first reload seen by `generations` (never
/// without TLS): a connection made with certificates since replaced ends then, on every
/// listener, so a certificate no longer trusted keeps no connection open.
pub async fn stale_after_reload(generations: Option<tokio::sync::watch::Receiver<u64>>) {
    let Some(mut rx) = generations else {
        return std::future::pending().await;
    };
    if rx.changed().await.is_err() {
        return std::future::pending().await;
    }
    tokio::time::sleep(STALE_CONNECTION_GRACE).await;
}

impl Material {
    fn build(paths: &TlsPaths, name: &str, files: Files) -> Result<Self, TlsError> {
        let chain = certificates("certificate", &paths.cert, &files.cert)?;
        if !names(&chain[0], name) {
            return Err(TlsError::NotOurName {
                path: paths.cert.clone(),
                name: name.to_string(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| TlsError::NoKey {
            path: paths.key.clone(),
            reason: e.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certificates("CA", &paths.ca, &files.ca)? {
            roots.add(ca).map_err(|e| TlsError::BadCa {
                path: paths.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let identity = |e: rustls::Error| TlsError::Identity {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            reason: e.to_string(),
        };
        let bad_ca = |e: rustls::server::VerifierBuilderError| TlsError::BadCa {
            path: paths.ca.clone(),
            reason: e.to_string(),
        };
        let required = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(bad_ca)?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(bad_ca)?;
        let server = |verifier| {
            ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(identity)?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(identity)
        };
        let peer_server = server(required)?;
        let mut admin_server = server(optional)?;
        admin_server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(identity)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(identity)?;
        let not_after = std::str::from_utf8(&files.cert)
            .ok()
            .and_then(|pem| raft_pki::not_after(pem).ok());
        let sha256 = |bytes: &[u8]| raft_api::admin::hex(&Sha256::digest(bytes));
        let in_use = TlsInUse {
            certificate_sha256: sha256(&files.cert),
            ca_sha256: sha256(&files.ca),
        };
        Ok(Self {
            files,
            in_use,
            peer_server: Arc::new(peer_server),
            admin_server: Arc::new(admin_server),
            client: Arc::new(client),
            not_after,
        })
    }
}

impl Tls {
    /// Load the material named by `paths`; `name` is this member's name, which its certificate
    /// must be valid for.
    pub fn load(paths: TlsPaths, name: &str, metrics: TlsMetrics) -> Result<Arc<Self>, TlsError> {
        let material = Material::build(&paths, name, Self::read_files(&paths)?)?;
        let tls = Self {
            paths,
            name: name.to_string(),
            current: RwLock::new(Arc::new(material)),
            generation: tokio::sync::watch::channel(0).0,
            metrics,
        };
        tls.set_expiry();
        Ok(Arc::new(tls))
    }

    fn read_files(paths: &TlsPaths) -> Result<Files, TlsError> {
        Ok(Files {
            cert: read("certificate", &paths.cert)?,
            key: read("key", &paths.key)?,
            ca: read("CA", &paths.ca)?,
        })
    }

    /// The material to use for a handshake starting now.
    pub fn current(&self) -> Arc<Material> {
        self.current.read().clone()
    }

    /// Changes each time a new generation of certificates is loaded.
    pub fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn set_expiry(&self) {
        let secs = self
            .current()
            .not_after
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        self.metrics
            .expiry
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// Read the files again; returns whether a new generation is now in use. A generation that
    /// does not load is refused (the current one stays) and reported.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = Self::read_files(&self.paths)?;
        if files == self.current().files {
            return Ok(false);
        }
        let material = Material::build(&self.paths, &self.name, files)?;
        *self.current.write() = Arc::new(material);
        self.set_expiry();
        self.generation.send_modify(|g| *g += 1);
        Ok(true)
    }

    /// Re-read the files every [`RELOAD_EVERY`] until `stop` resolves.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {}
            }
            match self.reload() {
                Ok(false) => last_error = None,
                Ok(true) => {
                    last_error = None;
                    self.metrics
                        .reloads
                        .get_or_create(&ReasonLabel { reason: "loaded" })
                        .inc();
                    tracing::info!(cert = %self.paths.cert.display(), "TLS certificates reloaded");
                }
                Err(e) => {
                    // Mid-rotation files can disagree for a moment: say so once per new error.
                    let message = e.to_string();
                    if last_error.as_ref() != Some(&message) {
                        self.metrics
                            .reloads
                            .get_or_create(&ReasonLabel { reason: "refused" })
                            .inc();
                        tracing::warn!(error = %message, "new TLS certificates refused; the previous ones stay in use");
                        last_error = Some(message);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use raft_pki::{Authority, Subject, Usage};

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    pub(crate) fn member_dir(ca: &Authority, dir: &Path, name: &str) -> TlsPaths {
        ca.issue(&Subject {
            common_name: name.into(),
            names: vec![name.into(), "127.0.0.1".into()],
            usage: Usage::Member,
            valid_for: DAY,
        })
        .unwrap()
        .write_dir(dir, ca.cert_pem())
        .unwrap();
        TlsPaths {
            cert: dir.join(raft_pki::CERT_FILE),
            key: dir.join(raft_pki::KEY_FILE),
            ca: dir.join(raft_pki::CA_FILE),
        }
    }

    #[test]
    fn a_certificate_for_another_name_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA", DAY).unwrap();
        let paths = member_dir(&ca, dir.path(), "n1");
        assert!(Tls::load(paths.clone(), "n1", TlsMetrics::default()).is_ok());
        let err = Tls::load(paths, "n2", TlsMetrics::default()).err().unwrap();
        assert!(matches!(err, TlsError::NotOurName { .. }), "{err}");
    }

    #[test]
    fn a_changed_pair_is_reloaded_and_a_mismatched_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("test CA", DAY).unwrap();
        let paths = member_dir(&ca, dir.path(), "n1");
        let tls = Tls::load(paths.clone(), "n1", TlsMetrics::default()).unwrap();
        assert!(!tls.reload().unwrap(), "nothing changed");
        let before = tls.current().files.cert.clone();
        member_dir(&ca, dir.path(), "n1");
        let reported = tls.current().in_use.clone();
        assert!(tls.reload().unwrap());
        assert_ne!(tls.current().files.cert, before);
        // What status reports follows the files: the certificate changed, the CA did not.
        let now = tls.current().in_use.clone();
        assert_ne!(now.certificate_sha256, reported.certificate_sha256);
        assert_eq!(now.ca_sha256, reported.ca_sha256);
        let file = std::fs::read(&paths.cert).unwrap();
        assert_eq!(
            now.certificate_sha256,
            raft_api::admin::hex(&Sha256::digest(&file))
        );
        // A key that is not the certificate's: refused, the loaded pair stays.
        let other = ca
            .issue(&Subject {
                common_name: "n1".into(),
                names: vec!["n1".into()],
                usage: Usage::Member,
                valid_for: DAY,
            })
            .unwrap();
        std::fs::write(&paths.key, other.key_pem).unwrap();
        let kept = tls.current().files.cert.clone();
        assert!(matches!(tls.reload(), Err(TlsError::Identity { .. })));
        assert_eq!(tls.current().files.cert, kept);
        assert!(tls.metrics.expiry.get() > 0);
    }

    #[test]
    fn names_checks_the_dns_name_a_certificate_is_valid_for() {
        let ca = Authority::generate("test CA", DAY).unwrap();
        let issued = ca
            .issue(&Subject {
                common_name: "c-1".into(),
                names: vec!["c-1".into(), "c-1.c-peers.ns.svc".into()],
                usage: Usage::Member,
                valid_for: DAY,
            })
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert!(names(&der, "c-1"));
        assert!(names(&der, "c-1.c-peers.ns.svc"));
        assert!(!names(&der, "c-2"));
        assert!(!names(&der, "not a name"));
    }
}
