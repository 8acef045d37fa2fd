//! Rotation of a cluster's CA with no restart and no failed write. Members trust a bundle of
//! CAs and reload their files without restarting, so the operator moves them over in three
//! steps, each taken only once every member reports (`/admin/v1/status`, `tls`) that it uses
//! the files the step before wrote:
//!
//! 1. **Started**: a new CA is made; members trust both (bundle: old, new); every certificate
//!    is still the old CA's.
//! 2. **Switched**, once every member trusts both: the new CA signs; every member certificate
//!    and the operator's are reissued by it (`ClusterPki::ensure` sees them signed by another
//!    CA); members still trust both (bundle: new, old).
//! 3. **Finished**, once every member uses its new certificate: the old CA is dropped from the
//!    bundle; certificates of the old CA are refused from then on.
//!
//! A rotation starts when the `consensus.unrdf.io/rotate-ca` annotation of the RaftCluster takes
//! a value not acted on before, or when the CA expires within [`CA_RENEW_BEFORE`]. The state is
//! in the `<name>-ca` Secret itself (`next-ca.*`, `previous-ca.crt`, `rotated-for`), so an
//! operator restarted halfway carries on. A member that does not answer, or answers without
//! `tls` (a sidecar older than this field), holds the rotation at its step.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use raft_api::admin::{TlsInUse, hex};
use raft_pki::{Authority, KeyedCert};
use sha2::{Digest, Sha256};

use super::names::ClusterNames;
use super::tls::{CA_VALIDITY, ClusterPki, TlsError};

/// Annotation of a RaftCluster asking for a CA rotation: any value not acted on before.
pub const ROTATE_CA_ANNOTATION: &str = "consensus.unrdf.io/rotate-ca";
/// A CA this close to expiry is rotated (longer than a member certificate lives).
pub const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 86_400);

/// What the members use, by pod name: `None` for a pod that did not answer or reports no TLS.
pub type InUse = BTreeMap<String, Option<TlsInUse>>;

/// A step a rotation took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    Started,
    Switched,
    Finished,
}

impl RotationStep {
    /// Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            RotationStep::Started => "CaRotationStarted",
            RotationStep::Switched => "CaRotationSwitched",
            RotationStep::Finished => "CaRotationFinished",
        }
    }

    pub fn note(self) -> &'static str {
        match self {
            RotationStep::Started => {
                "a new cluster CA was made; members now trust the old and the new one"
            }
            RotationStep::Switched => {
                "every member trusts the new CA: it now signs, and every certificate is reissued by it"
            }
            RotationStep::Finished => {
                "every member uses a certificate of the new CA: the old CA is no longer trusted"
            }
        }
    }
}

pub(super) fn sha256(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

impl ClusterPki {
    /// Take the next rotation step if it is due (see the module's documentation). `request`
    /// is the annotation's value, `in_use` what every existing member reports.
    pub fn rotate(
        mut self,
        names: &ClusterNames,
        request: Option<&str>,
        in_use: &InUse,
        now: SystemTime,
    ) -> Result<(Self, Option<RotationStep>), TlsError> {
        if self.next_ca.is_some() {
            if !self.all_use(in_use, false) {
                return Ok((self, None));
            }
            if let Some(next) = self.next_ca.take() {
                self.previous_ca = Some(std::mem::replace(&mut self.ca_cert, next.cert_pem));
                self.ca_key = Some(next.key_pem);
            }
            return Ok((self, Some(RotationStep::Switched)));
        }
        if self.previous_ca.is_some() {
            if !self.all_use(in_use, true) {
                return Ok((self, None));
            }
            self.previous_ca = None;
            return Ok((self, Some(RotationStep::Finished)));
        }
        let request = request.filter(|r| !r.is_empty() && *r != self.rotated_for);
        let expiring = raft_pki::not_after(&self.ca_cert).is_ok_and(|t| t < now + CA_RENEW_BEFORE);
        if request.is_none() && !expiring {
            return Ok((self, None));
        }
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A name of its own, so the two CAs of the bundle are told apart in logs and tools.
        let ca = Authority::generate(
            &format!("{} raft cluster CA {since_epoch}", names.name),
            CA_VALIDITY,
        )?;
        self.next_ca = Some(KeyedCert {
            cert_pem: ca.cert_pem().to_owned(),
            key_pem: ca.key_pem(),
        });
        if let Some(r) = request {
            r.clone_into(&mut self.rotated_for);
        }
        Ok((self, Some(RotationStep::Started)))
    }

    /// Whether a rotation is under way (started or switched, not finished).
    pub fn rotating(&self) -> bool {
        self.next_ca.is_some() || self.previous_ca.is_some()
    }

    /// Whether every member trusts the bundle as written and, with `certificates`, uses the
    /// certificate written for it.
    fn all_use(&self, in_use: &InUse, certificates: bool) -> bool {
        let bundle = sha256(&self.trust_bundle());
        in_use.iter().all(|(pod, used)| {
            used.as_ref().is_some_and(|u| {
                u.ca_sha256 == bundle
                    && (!certificates
                        || self
                            .member(pod)
                            .is_some_and(|c| sha256(&c.cert_pem) == u.certificate_sha256))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_crds::RaftCluster;

    fn names() -> ClusterNames {
        ClusterNames::new("prod", "ns", "cluster.local")
    }

    /// What each of `pods` reports after loading the files `pki` writes.
    fn loaded(pki: &ClusterPki, pods: &[&str]) -> InUse {
        let rc = RaftCluster::new("prod", Default::default());
        let secret = pki.members_secret(&rc, &names());
        let data = secret.data.unwrap();
        let file = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
        pods.iter()
            .map(|pod| {
                let used = TlsInUse {
                    certificate_sha256: sha256(&file(&format!("{pod}.crt"))),
                    ca_sha256: sha256(&file("ca.crt")),
                };
                ((*pod).to_owned(), Some(used))
            })
            .collect()
    }

    fn step(
        pki: ClusterPki,
        request: Option<&str>,
        in_use: &InUse,
    ) -> (ClusterPki, Option<RotationStep>) {
        let now = SystemTime::now();
        let (pki, step) = pki.rotate(&names(), request, in_use, now).unwrap();
        (
            ClusterPki::ensure(Some(pki), &names(), 3, now).unwrap(),
            step,
        )
    }

    const PODS: [&str; 3] = ["prod-0", "prod-1", "prod-2"];

    #[test]
    fn a_requested_rotation_moves_one_step_at_a_time_as_members_catch_up() {
        let start = ClusterPki::ensure(None, &names(), 3, SystemTime::now()).unwrap();
        let old_ca = start.ca_pem().to_owned();
        let old_member = start.member("prod-0").unwrap().clone();

        // Nothing asked, nothing expiring: nothing happens.
        let (pki, none) = step(start.clone(), None, &loaded(&start, &PODS));
        assert_eq!(none, None);
        assert_eq!(pki.trust_bundle(), old_ca);

        // Started: both trusted, certificates unchanged.
        let (one, started) = step(start.clone(), Some("2026-12"), &loaded(&start, &PODS));
        assert_eq!(started, Some(RotationStep::Started));
        assert_eq!(one.ca_pem(), old_ca);
        assert!(one.trust_bundle().starts_with(&old_ca) && one.trust_bundle().len() > old_ca.len());
        assert_eq!(one.member("prod-0"), Some(&old_member));

        // One member still on the old bundle: held.
        let mut lagging = loaded(&one, &PODS);
        lagging.insert(
            "prod-2".into(),
            loaded(&start, &["prod-2"])["prod-2"].clone(),
        );
        let (held, none) = step(one.clone(), Some("2026-12"), &lagging);
        assert_eq!(none, None);
        assert_eq!(held.trust_bundle(), one.trust_bundle());

        // Switched: the new CA signs, every certificate reissued by it, both still trusted.
        let (two, switched) = step(one.clone(), Some("2026-12"), &loaded(&one, &PODS));
        assert_eq!(switched, Some(RotationStep::Switched));
        assert_ne!(two.ca_pem(), old_ca);
        assert!(two.trust_bundle().contains(&old_ca));
        for pod in PODS {
            let cert = &two.member(pod).unwrap().cert_pem;
            assert!(raft_pki::signed_by(cert, two.ca_pem()), "{pod}");
            assert!(!raft_pki::signed_by(cert, &old_ca), "{pod}");
        }
        assert!(raft_pki::signed_by(
            std::str::from_utf8(&two.operator_tls().cert_pem).unwrap(),
            two.ca_pem()
        ));

        // Members that reloaded the bundle but not yet their certificates hold it again.
        let mut old_certs = loaded(&two, &PODS);
        old_certs
            .get_mut("prod-1")
            .unwrap()
            .as_mut()
            .unwrap()
            .certificate_sha256 = sha256(&old_member.cert_pem);
        assert_eq!(step(two.clone(), Some("2026-12"), &old_certs).1, None);
        let silent: InUse = PODS.iter().map(|p| ((*p).to_owned(), None)).collect();
        assert_eq!(step(two.clone(), Some("2026-12"), &silent).1, None);

        assert!(one.rotating() && two.rotating());

        // Finished: the old CA is gone from every bundle.
        let (three, finished) = step(two.clone(), Some("2026-12"), &loaded(&two, &PODS));
        assert_eq!(finished, Some(RotationStep::Finished));
        assert_eq!(three.trust_bundle(), three.ca_pem());
        assert!(!three.rotating());
        assert!(!three.trust_bundle().contains(&old_ca));

        // The same request again does nothing; a new one starts over.
        assert_eq!(
            step(three.clone(), Some("2026-12"), &loaded(&three, &PODS)).1,
            None
        );
        assert_eq!(
            step(three.clone(), Some("2027-01"), &loaded(&three, &PODS)).1,
            Some(RotationStep::Started)
        );
    }

    #[test]
    fn the_rotation_state_survives_the_secret_round_trip() {
        let rc = RaftCluster::new("prod", Default::default());
        let start = ClusterPki::ensure(None, &names(), 3, SystemTime::now()).unwrap();
        let (one, _) = step(start.clone(), Some("r1"), &loaded(&start, &PODS));
        let (two, _) = step(one.clone(), Some("r1"), &loaded(&one, &PODS));
        for pki in [one, two] {
            let read = ClusterPki::from_secrets(
                &pki.ca_secret(&rc, &names()),
                Some(&pki.members_secret(&rc, &names())),
            )
            .unwrap();
            assert_eq!(read.trust_bundle(), pki.trust_bundle());
            assert_eq!(read.ca_pem(), pki.ca_pem());
            assert_eq!(read.rotated_for, "r1");
        }
    }

    #[test]
    fn a_ca_close_to_expiry_is_rotated_without_being_asked() {
        let start = ClusterPki::ensure(None, &names(), 1, SystemTime::now()).unwrap();
        let late = SystemTime::now() + CA_VALIDITY - CA_RENEW_BEFORE + Duration::from_secs(86_400);
        let (_, step) = start
            .clone()
            .rotate(&names(), None, &loaded(&start, &["prod-0"]), late)
            .unwrap();
        assert_eq!(step, Some(RotationStep::Started));
    }
}
