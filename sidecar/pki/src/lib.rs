//! Certificates of one raft-sidecar cluster: a per-cluster certificate authority, a
//! certificate per member (its stable names, usable as TLS server and client) and client
//! certificates for the operator and tools. The operator keeps them in Secrets,
//! `raft-sidecar dev` and the tests write them to files; the sidecar itself only reads them.
//!
//! Keys are ECDSA P-256. Files use the names of a Kubernetes TLS Secret (`tls.crt`, `tls.key`,
//! `ca.crt`), so a mounted Secret and a directory written here look the same to the sidecar.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// File names of a certificate directory (those of a Kubernetes TLS Secret).
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CA_FILE: &str = "ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate a certificate for {subject}: {source}")]
    Generate {
        subject: String,
        source: rcgen::Error,
    },
    #[error("{subject}: {name:?} is neither a DNS name nor an IP address")]
    BadName { subject: String, name: String },
    #[error("the CA certificate or key is not usable: {0}")]
    BadAuthority(rcgen::Error),
    #[error("not a PEM certificate: {0}")]
    BadCertificate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A certificate and its private key, PEM-encoded. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl KeyedCert {
    /// Write `tls.crt`, `tls.key` (mode 0600) and `ca.crt` into `dir`, each replaced
    /// atomically (written beside, then renamed), so a reader never sees half a file.
    pub fn write_dir(&self, dir: &Path, ca_pem: &str) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        write_atomic(&dir.join(CA_FILE), ca_pem, 0o644)?;
        write_atomic(&dir.join(KEY_FILE), &self.key_pem, 0o600)?;
        write_atomic(&dir.join(CERT_FILE), &self.cert_pem, 0o644)
    }
}

/// Write beside `path` (created with `mode` from the start, so a key is never readable by
/// others even for a moment), sync, then rename over `path`.
pub fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| PkiError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".new");
    let tmp = std::path::PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A member: serves peers and the admin API, and dials peers (server and client auth).
    Member,
    /// The operator or a tool calling admin APIs (client auth only).
    Client,
}

/// What to put in a certificate.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The subject's common name (a member's name, or e.g. `raft-operator`).
    pub common_name: String,
    /// Subject alternative names: DNS names or IP addresses. A member's certificate names its
    /// member name first (the identity peers check) and every address it is dialled at.
    pub names: Vec<String>,
    pub usage: Usage,
    pub valid_for: Duration,
}

/// A cluster's certificate authority: the certificate everyone trusts and the key that signs.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// Backdating of `notBefore`, for clocks a little behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(3600);

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + valid_for;
}

impl Authority {
    /// A new self-signed CA named `common_name`.
    pub fn generate(common_name: &str, valid_for: Duration) -> Result<Self, PkiError> {
        let fail = |source| PkiError::Generate {
            subject: common_name.to_string(),
            source,
        };
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, valid_for);
        let cert = params.self_signed(&key).map_err(fail)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA kept earlier (its certificate and key, PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::BadAuthority)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(PkiError::BadAuthority)?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A new key and a certificate for it, signed by this CA.
    pub fn issue(&self, subject: &Subject) -> Result<KeyedCert, PkiError> {
        let fail = |source| PkiError::Generate {
            subject: subject.common_name.clone(),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, subject.common_name.as_str());
        params.subject_alt_names = subject
            .names
            .iter()
            .map(|name| san(&subject.common_name, name))
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match subject.usage {
            Usage::Member => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, subject.valid_for);
        let key = KeyPair::generate().map_err(fail)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(fail)?;
        Ok(KeyedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn san(subject: &str, name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = || PkiError::BadName {
        subject: subject.to_string(),
        name: name.to_string(),
    };
    // rcgen takes any IA5 string; a name TLS clients can match must be a valid DNS name.
    rustls_pki_types::DnsName::try_from(name).map_err(|_| bad())?;
    name.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| bad())
}

/// What a certificate says about itself (the first of `pem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub not_after: SystemTime,
    /// Its DNS and IP subject alternative names, in order.
    pub names: Vec<String>,
}

/// Whether the first certificate of `pem` carries a valid signature of the CA certificate
/// `ca_pem` (two CAs of the same name are told apart).
pub fn signed_by(pem: &str, ca_pem: &str) -> bool {
    let parse = |pem: &str| {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .ok()
            .map(|(_, b)| b)
    };
    let (Some(cert), Some(ca)) = (parse(pem), parse(ca_pem)) else {
        return false;
    };
    let (Ok(cert), Ok(ca)) = (cert.parse_x509(), ca.parse_x509()) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// Read the first certificate of `pem`.
pub fn inspect(pem: &str) -> Result<Inspected, PkiError> {
    use x509_parser::extensions::GeneralName;
    let bad = |e: String| PkiError::BadCertificate(e);
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = block.parse_x509().map_err(|e| bad(e.to_string()))?;
    let secs = u64::try_from(cert.validity().not_after.timestamp())
        .map_err(|_| bad("expires before 1970".to_string()))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_string()),
                GeneralName::IPAddress(b) => ip_from_bytes(b).map(|ip| ip.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(bad(e.to_string())),
    };
    Ok(Inspected {
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        names,
    })
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// When the first certificate of `pem` expires.
pub fn not_after(pem: &str) -> Result<SystemTime, PkiError> {
    inspect(pem).map(|i| i.not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn member(name: &str) -> Subject {
        Subject {
            common_name: name.into(),
            names: vec![name.into(), "127.0.0.1".into()],
            usage: Usage::Member,
            valid_for: DAY,
        }
    }

    #[test]
    fn a_kept_authority_signs_like_the_original() {
        let ca = Authority::generate("raft test CA", 10 * DAY).unwrap();
        let again = Authority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let issued = again.issue(&member("n1")).unwrap();
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issued.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn expiry_is_read_back() {
        let ca = Authority::generate("raft test CA", 10 * DAY).unwrap();
        let issued = ca.issue(&member("n1")).unwrap();
        let left = not_after(&issued.cert_pem)
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(
            left > DAY - Duration::from_secs(120) && left <= DAY,
            "{left:?}"
        );
        assert!(not_after("not a certificate").is_err());
        let seen = inspect(&issued.cert_pem).unwrap();
        assert_eq!(seen.names, ["n1", "127.0.0.1"]);
        assert!(signed_by(&issued.cert_pem, ca.cert_pem()));
        let namesake = Authority::generate("raft test CA", 10 * DAY).unwrap();
        assert!(!signed_by(&issued.cert_pem, namesake.cert_pem()));
    }

    #[test]
    fn a_name_that_is_not_dns_is_refused() {
        let ca = Authority::generate("raft test CA", DAY).unwrap();
        let mut bad = member("n1");
        bad.names.push("no spaces allowed".into());
        assert!(matches!(ca.issue(&bad), Err(PkiError::BadName { .. })));
    }

    #[test]
    fn files_are_written_with_the_secret_names_and_a_private_key_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("raft-pki-test-{}", std::process::id()));
        let ca = Authority::generate("raft test CA", DAY).unwrap();
        ca.issue(&member("n1"))
            .unwrap()
            .write_dir(&dir, ca.cert_pem())
            .unwrap();
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.join(CA_FILE)).unwrap(),
            ca.cert_pem()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
