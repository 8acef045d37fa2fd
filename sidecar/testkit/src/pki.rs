//! A throwaway certificate authority for clusters on one machine (`raft-sidecar dev`, tests,
//! benchmarks): the CA is kept in `<dir>/ca.crt` and `<dir>/ca.key`, reused when present; each
//! member and client gets a directory `<dir>/<name>/` laid out like a Kubernetes TLS Secret.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raft_api::client::{ClientTls, TlsHttp};
use raft_pki::{Authority, CA_FILE, CERT_FILE, KEY_FILE, Subject, Usage};

const YEAR: Duration = Duration::from_secs(365 * 86_400);

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The CA of a local cluster and the directory its certificates are written to.
pub struct LocalPki {
    dir: PathBuf,
    ca: Authority,
}

impl LocalPki {
    /// The CA under `dir`, made on first use.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (cert, key) = (dir.join(CA_FILE), dir.join("ca.key"));
        let ca = match (
            std::fs::read_to_string(&cert),
            std::fs::read_to_string(&key),
        ) {
            (Ok(c), Ok(k)) => Authority::from_pem(&c, &k).map_err(other)?,
            _ => {
                let ca = Authority::generate("raft-sidecar local CA", 10 * YEAR).map_err(other)?;
                raft_pki::write_atomic(&key, &ca.key_pem(), 0o600).map_err(other)?;
                raft_pki::write_atomic(&cert, ca.cert_pem(), 0o644).map_err(other)?;
                ca
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            ca,
        })
    }

    pub fn authority(&self) -> &Authority {
        &self.ca
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    /// Issue a member certificate for `name` (also valid for `addresses`, IPs or DNS names)
    /// into `<dir>/<name>/`; returns that directory.
    pub fn member(&self, name: &str, addresses: &[&str]) -> io::Result<PathBuf> {
        let mut names = vec![name.to_string(), "localhost".to_string()];
        names.extend(addresses.iter().map(|a| a.to_string()));
        self.issue(name, names, Usage::Member)
    }

    /// Issue a client certificate (admin API callers) into `<dir>/<name>/`.
    pub fn client(&self, name: &str) -> io::Result<PathBuf> {
        self.issue(name, vec![name.to_string()], Usage::Client)
    }

    fn issue(&self, name: &str, names: Vec<String>, usage: Usage) -> io::Result<PathBuf> {
        let dir = self.dir.join(name);
        self.ca
            .issue(&Subject {
                common_name: name.to_string(),
                names,
                usage,
                valid_for: YEAR,
            })
            .and_then(|issued| issued.write_dir(&dir, self.ca.cert_pem()))
            .map_err(other)?;
        Ok(dir)
    }

    /// An HTTP client for admin APIs, with a client certificate `raft-admin` of this CA.
    pub fn admin_client(&self) -> io::Result<TlsHttp> {
        Self::connector(&self.client("raft-admin")?)
    }

    /// An HTTP client presenting the certificate in `dir` (as written by [`Self::client`]).
    pub fn connector(dir: &Path) -> io::Result<TlsHttp> {
        ClientTls::from_files(
            &dir.join(CA_FILE),
            &dir.join(CERT_FILE),
            &dir.join(KEY_FILE),
        )
        .and_then(|tls| tls.connector())
        .map_err(other)
    }

    /// `raft-sidecar run`'s TLS flags for the certificate directory `dir`.
    pub fn flags(dir: &Path) -> Vec<String> {
        let file = |f: &str| dir.join(f).to_string_lossy().into_owned();
        vec![
            "--tls-cert".into(),
            file(CERT_FILE),
            "--tls-key".into(),
            file(KEY_FILE),
            "--tls-ca".into(),
            file(CA_FILE),
        ]
    }
}
