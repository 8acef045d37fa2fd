//! The cluster's certificates, kept in two Secrets:
//!
//! - `<name>-ca` (never mounted): the cluster CA's certificate and key, and the operator's own
//!   client certificate for the admin APIs.
//! - `<name>-tls` (mounted into every member at [`TLS_DIR`]): the CA certificate and, for each
//!   pod ordinal, `<pod>.crt` and `<pod>.key`, valid for the pod's name and its stable DNS
//!   names. One Secret for all members because a StatefulSet's pods share one template; each
//!   member is started with its own pair (`$(POD_NAME).crt`).
//!
//! [`ClusterPki::ensure`] is the pure "build" part: what exists is kept; what is missing or
//! expires within [`RENEW_BEFORE`] is issued; nothing is ever regenerated that is still good, so
//! applying the result again changes nothing. Members reload renewed files without a restart.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use raft_api::client::ClientTls;
use raft_crds::RaftCluster;
use raft_pki::{Authority, KeyedCert, PkiError, Subject, Usage};

use super::meta::opaque_secret;
use super::names::ClusterNames;

/// Where members find their certificates.
pub const TLS_DIR: &str = "/etc/raft-tls";
pub const TLS_VOLUME: &str = "raft-tls";
pub const CA_CERT_KEY: &str = "ca.crt";
const CA_KEY_KEY: &str = "ca.key";
/// The operator's client certificate and key in `<cluster>-ca`.
pub const OPERATOR_CERT_KEY: &str = "operator.crt";
pub const OPERATOR_KEY_KEY: &str = "operator.key";
/// During a CA rotation (see [`super::ca_rotation`]): the incoming CA, then the outgoing one.
const NEXT_CA_CERT_KEY: &str = "next-ca.crt";
const NEXT_CA_KEY_KEY: &str = "next-ca.key";
const PREVIOUS_CA_CERT_KEY: &str = "previous-ca.crt";
/// The last `consensus.unrdf.io/rotate-ca` value a rotation was started for.
const ROTATED_FOR_KEY: &str = "rotated-for";

/// Lifetime of the cluster CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Lifetime of member and operator certificates.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
/// A certificate this close to expiry is renewed.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("secret {secret}: key {key:?} is missing or not UTF-8")]
    MissingKey { secret: String, key: String },
    #[error(
        "secret {ca} (the cluster CA) is missing while {members} exists: the members trust only \
         that CA, so a new one would cut them off from each other; restore {ca}, or delete \
         {members} to have both made anew (every member then reloads new certificates)"
    )]
    CaMissing { ca: String, members: String },
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// The cluster's CA, the operator's client certificate and the members' certificates.
/// `Debug` shows no key.
#[derive(Clone)]
pub struct ClusterPki {
    /// The CA that signs, certificate and key. With a cert-manager issuer
    /// ([`super::cert_manager`]) the operator signs nothing: `ca_cert` is then the bundle of
    /// the issuer's CAs and there is no key.
    pub(super) ca_cert: String,
    pub(super) ca_key: Option<String>,
    pub(super) operator: KeyedCert,
    /// By pod name.
    pub(super) members: BTreeMap<String, KeyedCert>,
    /// The CA a rotation brings in, trusted but not signing yet.
    pub(super) next_ca: Option<KeyedCert>,
    /// The CA a rotation replaced, still trusted until every member uses the new certificates.
    pub(super) previous_ca: Option<String>,
    /// The rotation request last acted on (`consensus.unrdf.io/rotate-ca`).
    pub(super) rotated_for: String,
}

impl std::fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPki")
            .field("members", &self.members.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The UTF-8 value of `key` in `s`, if present and not empty.
pub(super) fn get_opt(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.is_empty())
}

fn get(s: &Secret, key: &str) -> Result<String, TlsError> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| TlsError::MissingKey {
            secret: s.metadata.name.clone().unwrap_or_default(),
            key: key.to_owned(),
        })
}

/// Whether `pem` is a certificate signed by `ca_pem`, for exactly `names` (when given), valid
/// for longer than [`RENEW_BEFORE`].
fn still_good(pem: &str, ca_pem: &str, names: Option<&[String]>, now: SystemTime) -> bool {
    raft_pki::signed_by(pem, ca_pem)
        && raft_pki::inspect(pem)
            .is_ok_and(|c| c.not_after > now + RENEW_BEFORE && names.is_none_or(|n| c.names == n))
}

impl ClusterPki {
    /// What the two Secrets hold, if the CA exists. A members' Secret without the CA's is an
    /// error, never a reason to make a new CA.
    pub fn observed(
        names: &ClusterNames,
        ca: Option<&Secret>,
        members: Option<&Secret>,
    ) -> Result<Option<Self>, TlsError> {
        match (ca, members) {
            (Some(ca), members) => Self::from_secrets(ca, members).map(Some),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(TlsError::CaMissing {
                ca: names.ca_secret(),
                members: names.tls_secret(),
            }),
        }
    }

    /// Read back what the two Secrets hold (members: every `<pod>.crt` with its `.key`).
    pub fn from_secrets(ca: &Secret, members: Option<&Secret>) -> Result<Self, TlsError> {
        let pki = Self::written(ca, members)?;
        get(ca, CA_KEY_KEY)?;
        Ok(pki)
    }

    /// What the two Secrets hold, a CA key or not (with a cert-manager issuer there is none).
    pub fn written(ca: &Secret, members: Option<&Secret>) -> Result<Self, TlsError> {
        let mut pairs = BTreeMap::new();
        if let Some(s) = members {
            for key in s.data.iter().flat_map(|d| d.keys()) {
                let Some(pod) = key.strip_suffix(".crt").filter(|p| *p != "ca") else {
                    continue;
                };
                let (Ok(cert_pem), Ok(key_pem)) = (get(s, key), get(s, &format!("{pod}.key")))
                else {
                    continue;
                };
                pairs.insert(pod.to_owned(), KeyedCert { cert_pem, key_pem });
            }
        }
        let next_ca = match (get_opt(ca, NEXT_CA_CERT_KEY), get_opt(ca, NEXT_CA_KEY_KEY)) {
            (Some(cert_pem), Some(key_pem)) => Some(KeyedCert { cert_pem, key_pem }),
            _ => None,
        };
        Ok(Self {
            ca_cert: get(ca, CA_CERT_KEY)?,
            ca_key: get_opt(ca, CA_KEY_KEY),
            operator: KeyedCert {
                cert_pem: get(ca, OPERATOR_CERT_KEY)?,
                key_pem: get(ca, OPERATOR_KEY_KEY)?,
            },
            members: pairs,
            next_ca,
            previous_ca: get_opt(ca, PREVIOUS_CA_CERT_KEY),
            rotated_for: get_opt(ca, ROTATED_FOR_KEY).unwrap_or_default(),
        })
    }

    /// `existing` with a CA (made if there is none), a good operator certificate and a good
    /// certificate for each of the first `members` pods.
    pub fn ensure(
        existing: Option<ClusterPki>,
        names: &ClusterNames,
        members: u32,
        now: SystemTime,
    ) -> Result<Self, TlsError> {
        let (ca, mut pki) = match existing {
            Some(pki) => {
                let key = pki.ca_key.as_deref().ok_or_else(|| TlsError::MissingKey {
                    secret: names.ca_secret(),
                    key: CA_KEY_KEY.to_owned(),
                })?;
                (Authority::from_pem(&pki.ca_cert, key)?, pki)
            }
            None => {
                let ca =
                    Authority::generate(&format!("{} raft cluster CA", names.name), CA_VALIDITY)?;
                let operator = issue_operator(&ca)?;
                let pki = Self {
                    ca_cert: ca.cert_pem().to_owned(),
                    ca_key: Some(ca.key_pem()),
                    operator,
                    members: BTreeMap::new(),
                    next_ca: None,
                    previous_ca: None,
                    rotated_for: String::new(),
                };
                (ca, pki)
            }
        };
        if !still_good(&pki.operator.cert_pem, ca.cert_pem(), None, now) {
            pki.operator = issue_operator(&ca)?;
        }
        for ordinal in 0..members {
            let pod = names.pod(ordinal);
            let wanted = member_names(names, &pod);
            if pki
                .members
                .get(&pod)
                .is_some_and(|c| still_good(&c.cert_pem, ca.cert_pem(), Some(&wanted), now))
            {
                continue;
            }
            let cert = ca.issue(&Subject {
                common_name: pod.clone(),
                names: wanted,
                usage: Usage::Member,
                valid_for: LEAF_VALIDITY,
            })?;
            pki.members.insert(pod, cert);
        }
        Ok(pki)
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert
    }

    /// What members and the operator trust: the signing CA, and during a rotation the CA
    /// coming in or going out (PEM, one after the other).
    pub fn trust_bundle(&self) -> String {
        let mut bundle = self.ca_cert.clone();
        let other = self
            .next_ca
            .as_ref()
            .map(|c| &c.cert_pem)
            .or(self.previous_ca.as_ref());
        if let Some(other) = other {
            if !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(other);
        }
        bundle
    }

    /// The certificate and key of `pod`, if issued.
    pub fn member(&self, pod: &str) -> Option<&KeyedCert> {
        self.members.get(pod)
    }

    /// What the operator presents to admin APIs.
    pub fn operator_tls(&self) -> ClientTls {
        ClientTls {
            ca_pem: self.trust_bundle().into_bytes(),
            cert_pem: self.operator.cert_pem.clone().into_bytes(),
            key_pem: self.operator.key_pem.clone().into_bytes(),
        }
    }

    /// The `<name>-ca` Secret.
    pub fn ca_secret(&self, rc: &RaftCluster, names: &ClusterNames) -> Secret {
        opaque_secret(
            rc,
            names,
            &names.ca_secret(),
            [
                (CA_CERT_KEY, Some(&self.ca_cert)),
                (CA_KEY_KEY, self.ca_key.as_ref()),
                (OPERATOR_CERT_KEY, Some(&self.operator.cert_pem)),
                (OPERATOR_KEY_KEY, Some(&self.operator.key_pem)),
                (NEXT_CA_CERT_KEY, self.next_ca.as_ref().map(|c| &c.cert_pem)),
                (NEXT_CA_KEY_KEY, self.next_ca.as_ref().map(|c| &c.key_pem)),
                (PREVIOUS_CA_CERT_KEY, self.previous_ca.as_ref()),
                (
                    ROTATED_FOR_KEY,
                    Some(&self.rotated_for).filter(|r| !r.is_empty()),
                ),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?.clone()))),
        )
    }

    /// The `<name>-tls` Secret the members mount.
    pub fn members_secret(&self, rc: &RaftCluster, names: &ClusterNames) -> Secret {
        let pairs = self.members.iter().flat_map(|(pod, c)| {
            [
                (format!("{pod}.crt"), c.cert_pem.clone()),
                (format!("{pod}.key"), c.key_pem.clone()),
            ]
        });
        let entries = std::iter::once((CA_CERT_KEY.to_owned(), self.trust_bundle())).chain(pairs);
        opaque_secret(rc, names, &names.tls_secret(), entries)
    }
}

fn issue_operator(ca: &Authority) -> Result<KeyedCert, PkiError> {
    ca.issue(&Subject {
        common_name: "raft-operator".to_owned(),
        names: vec!["raft-operator".to_owned()],
        usage: Usage::Client,
        valid_for: LEAF_VALIDITY,
    })
}

/// The names a member's certificate is valid for: its pod name (the identity its peers
/// check) and every form of its stable DNS name through the headless Service.
pub(super) fn member_names(names: &ClusterNames, pod: &str) -> Vec<String> {
    let service = names.service();
    let ns = &names.namespace;
    vec![
        pod.to_owned(),
        format!("{pod}.{service}"),
        format!("{pod}.{service}.{ns}"),
        format!("{pod}.{service}.{ns}.svc"),
        names.pod_host(pod),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn names() -> ClusterNames {
        ClusterNames::new("prod", "ns", "cluster.local")
    }

    #[test]
    fn what_is_still_good_is_kept_and_only_the_missing_is_issued() {
        let rc = RaftCluster::new("prod", Default::default());
        let now = SystemTime::now();
        let first = ClusterPki::ensure(None, &names(), 3, now).unwrap();
        let read = ClusterPki::from_secrets(
            &first.ca_secret(&rc, &names()),
            Some(&first.members_secret(&rc, &names())),
        )
        .unwrap();
        assert_eq!(read.members.len(), 3);
        let again = ClusterPki::ensure(Some(read), &names(), 5, now).unwrap();
        assert_eq!(again.ca_cert, first.ca_cert, "the CA is never regenerated");
        assert_eq!(again.operator, first.operator);
        for pod in ["prod-0", "prod-1", "prod-2"] {
            assert_eq!(again.members[pod], first.members[pod], "{pod} reissued");
        }
        assert!(again.members.contains_key("prod-4"));
        let secret = again.members_secret(&rc, &names());
        let keys: Vec<_> = secret.data.unwrap().into_keys().collect();
        assert!(keys.contains(&"prod-4.key".to_owned()) && keys.contains(&"ca.crt".to_owned()));
        assert!(!format!("{again:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn certificates_close_to_expiry_are_renewed_by_the_same_ca() {
        let first = ClusterPki::ensure(None, &names(), 1, SystemTime::now()).unwrap();
        let later = SystemTime::now() + LEAF_VALIDITY - RENEW_BEFORE + DAY;
        let renewed = ClusterPki::ensure(Some(first.clone()), &names(), 1, later).unwrap();
        assert_eq!(renewed.ca_cert, first.ca_cert);
        assert_ne!(renewed.members["prod-0"], first.members["prod-0"]);
        assert_ne!(renewed.operator, first.operator);
    }

    #[test]
    fn a_certificate_for_other_names_or_of_another_ca_is_replaced() {
        let now = SystemTime::now();
        let first = ClusterPki::ensure(None, &names(), 1, now).unwrap();
        let moved = ClusterNames::new("prod", "ns", "example.org");
        let renamed = ClusterPki::ensure(Some(first.clone()), &moved, 1, now).unwrap();
        assert_ne!(renamed.members["prod-0"], first.members["prod-0"]);
        let foreign = ClusterPki::ensure(None, &names(), 1, now).unwrap();
        let mut mixed = first.clone();
        mixed.members = foreign.members.clone();
        let fixed = ClusterPki::ensure(Some(mixed), &names(), 1, now).unwrap();
        assert_ne!(fixed.members["prod-0"], foreign.members["prod-0"]);
    }

    #[test]
    fn a_members_secret_without_the_ca_is_an_error_not_a_new_ca() {
        let rc = RaftCluster::new("prod", Default::default());
        let pki = ClusterPki::ensure(None, &names(), 1, SystemTime::now()).unwrap();
        let members = pki.members_secret(&rc, &names());
        let err = ClusterPki::observed(&names(), None, Some(&members)).unwrap_err();
        assert!(matches!(err, TlsError::CaMissing { .. }), "{err}");
        assert!(
            ClusterPki::observed(&names(), None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_ca_secret_without_its_key_is_an_error_not_a_new_ca() {
        let rc = RaftCluster::new("prod", Default::default());
        let pki = ClusterPki::ensure(None, &names(), 0, SystemTime::now()).unwrap();
        let mut ca = pki.ca_secret(&rc, &names());
        ca.data.as_mut().unwrap().remove(CA_KEY_KEY);
        let err = ClusterPki::from_secrets(&ca, None).unwrap_err().to_string();
        assert!(err.contains("ca.key"), "{err}");
    }
}
