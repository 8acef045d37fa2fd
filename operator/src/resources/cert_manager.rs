//! Certificates from a cert-manager issuer (`spec.tls.issuerRef`), in place of the operator's
//! own CA ([`super::tls`]).
//!
//! The operator asks cert-manager for one `Certificate` per member (`<pod>-cert`, valid for the
//! same names as a certificate of its own CA) and one for itself (`<name>-operator-cert`, client
//! only). cert-manager writes each to a Secret of the same name, labelled as the cluster's, and
//! renews it. The operator reads those Secrets back ([`Issued`]) and writes the two Secrets it
//! writes with its own CA: `<name>-tls` (mounted by the members) and `<name>-ca` (its client
//! certificate, mounted by backup Jobs; here without a CA key). Pods, reloads and Jobs therefore
//! work the same way in both modes.
//!
//! The members trust the CAs the issued Secrets name in `ca.crt`. When the issuer's CA changes,
//! [`next`] moves in the same steps as a rotation of the operator's own CA: first every member
//! trusts the old and the new CA, then the renewed certificates are handed out, and the old CA
//! is dropped once every member uses one of them. A member that does not report what it loaded
//! holds the next step back (it would otherwise refuse its peers' new certificates).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use kube::CustomResource;
use raft_crds::{IssuerRef, RaftCluster};
use raft_pki::KeyedCert;
use serde::{Deserialize, Serialize};

use super::ca_rotation::{InUse, sha256};
use super::meta::owned_meta;
use super::names::ClusterNames;
use super::tls::{ClusterPki, get_opt, member_names};

/// Label on the Secrets cert-manager writes for a cluster: the pod the certificate is for, or
/// [`FOR_OPERATOR`].
pub const CERTIFICATE_FOR_LABEL: &str = "consensus.unrdf.io/certificate-for";
const FOR_OPERATOR: &str = "operator";
/// An issued certificate this close to expiry is not handed out (cert-manager renews long before).
const MIN_LEFT: Duration = Duration::from_secs(60);

/// cert-manager's `Certificate` (cert-manager.io/v1), the fields the operator sets.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    namespaced,
    schema = "disabled",
    status = "CertificateStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    pub secret_name: String,
    pub secret_template: SecretTemplate,
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub usages: Vec<String>,
    pub private_key: PrivateKey,
    pub issuer_ref: IssuerRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretTemplate {
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrivateKey {
    pub algorithm: String,
    pub size: u32,
    pub encoding: String,
    pub rotation_policy: String,
}

/// What cert-manager reports about a `Certificate` (only what the operator shows).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CertificateStatus {
    #[serde(default)]
    pub conditions: Vec<CertificateCondition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CertificateCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl Certificate {
    /// cert-manager's word on a certificate that is not ready: `reason: message` of its
    /// `Ready` condition.
    pub fn not_ready(&self) -> Option<String> {
        let ready = self
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?;
        (ready.status != "True").then(|| {
            format!(
                "{}: {}",
                ready.reason.as_deref().unwrap_or("NotReady"),
                ready.message.as_deref().unwrap_or("")
            )
        })
    }
}

/// The `Certificate` for `issued_for` (a pod, or [`FOR_OPERATOR`]).
fn certificate(
    rc: &RaftCluster,
    names: &ClusterNames,
    issuer: &IssuerRef,
    issued_for: &str,
    common_name: String,
    dns_names: Vec<String>,
    usages: &[&str],
) -> Certificate {
    let name = if issued_for == FOR_OPERATOR {
        names.operator_certificate()
    } else {
        names.member_certificate(issued_for)
    };
    let mut labels = names.labels();
    labels.insert(CERTIFICATE_FOR_LABEL.to_owned(), issued_for.to_owned());
    let mut cert = Certificate::new(
        &name,
        CertificateSpec {
            secret_name: name.clone(),
            secret_template: SecretTemplate { labels },
            common_name,
            dns_names,
            usages: usages.iter().map(|u| (*u).to_owned()).collect(),
            private_key: PrivateKey {
                algorithm: "ECDSA".to_owned(),
                size: 256,
                encoding: "PKCS8".to_owned(),
                rotation_policy: "Always".to_owned(),
            },
            issuer_ref: issuer.clone(),
        },
    );
    cert.metadata = owned_meta(rc, names, &name);
    cert
}

/// The `Certificate` of member `pod`: valid for the names a certificate of the operator's own
/// CA would name, for serving and for dialling peers.
pub fn member_certificate(
    rc: &RaftCluster,
    names: &ClusterNames,
    issuer: &IssuerRef,
    pod: &str,
) -> Certificate {
    let usages = [
        "server auth",
        "client auth",
        "digital signature",
        "key encipherment",
    ];
    let cert_names = member_names(names, pod);
    certificate(rc, names, issuer, pod, pod.to_owned(), cert_names, &usages)
}

/// The operator's client `Certificate`.
pub fn operator_certificate(
    rc: &RaftCluster,
    names: &ClusterNames,
    issuer: &IssuerRef,
) -> Certificate {
    let usages = ["client auth", "digital signature", "key encipherment"];
    let common_name = "raft-operator".to_owned();
    let dns = vec![common_name.clone()];
    certificate(rc, names, issuer, FOR_OPERATOR, common_name, dns, &usages)
}

/// One certificate cert-manager issued: the pair and the CAs its Secret's `ca.crt` names.
#[derive(Clone, Debug)]
struct IssuedCert {
    pair: KeyedCert,
    cas: BTreeSet<String>,
}

/// What cert-manager has issued for a cluster, read from the Secrets it wrote: only
/// certificates fit to hand out (a key, a CA, the expected names, not about to expire); why
/// each other one is not.
#[derive(Clone, Debug, Default)]
pub struct Issued {
    members: BTreeMap<String, IssuedCert>,
    operator: Option<IssuedCert>,
    unfit: BTreeMap<String, String>,
}

impl Issued {
    /// Read the Secrets labelled [`CERTIFICATE_FOR_LABEL`]; a Secret is taken only under the
    /// name its label calls for, so a Secret labelled for another pod is ignored.
    pub fn from_secrets(names: &ClusterNames, secrets: &[Secret], now: SystemTime) -> Self {
        let mut issued = Issued::default();
        for secret in secrets {
            let Some(name) = secret.metadata.name.as_deref() else {
                continue;
            };
            let issued_for = secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CERTIFICATE_FOR_LABEL))
                .map(String::as_str);
            let (wanted, expected) = match issued_for {
                Some(FOR_OPERATOR) => (None, names.operator_certificate()),
                Some(pod) if names.ordinal_of(pod).is_some() => (
                    Some(member_names(names, pod)),
                    names.member_certificate(pod),
                ),
                _ => continue,
            };
            if name != expected {
                continue;
            }
            match fit(secret, wanted.as_deref(), now) {
                Ok(cert) => match issued_for {
                    Some(FOR_OPERATOR) => issued.operator = Some(cert),
                    Some(pod) => {
                        issued.members.insert(pod.to_owned(), cert);
                    }
                    None => {}
                },
                Err(why) => {
                    issued.unfit.insert(name.to_owned(), why);
                }
            }
        }
        issued
    }

    /// Why the Secret `name` holds no certificate fit to hand out, if it exists.
    pub fn unfit(&self, name: &str) -> Option<&str> {
        self.unfit.get(name).map(String::as_str)
    }

    /// The CAs of the operator's certificate and of the first `needed` members': those the
    /// members must trust. A certificate of another ordinal (the spare, or one left by a scale
    /// down) that cert-manager has not renewed since its issuer's CA changed would otherwise
    /// keep the old CA trusted until its own renewal, weeks later.
    fn cas(&self, names: &ClusterNames, needed: u32) -> BTreeSet<String> {
        let members = (0..needed).filter_map(|o| self.members.get(&names.pod(o)));
        members
            .chain(&self.operator)
            .flat_map(|c| c.cas.iter().cloned())
            .collect()
    }
}

/// Whether `secret` holds a certificate fit to hand out.
fn fit(secret: &Secret, wanted: Option<&[String]>, now: SystemTime) -> Result<IssuedCert, String> {
    let get = |key: &str| {
        get_opt(secret, key)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| format!("no {key}"))
    };
    let cert_pem = get("tls.crt")?;
    let key_pem = get("tls.key")?;
    let cas = pem_blocks(&get("ca.crt").map_err(|_| {
        "no ca.crt: the issuer does not name its CA, and members must trust it (use a CA or \
         Vault issuer, not ACME)"
            .to_owned()
    })?);
    let inspected = raft_pki::inspect(&cert_pem).map_err(|e| e.to_string())?;
    if inspected.not_after < now + MIN_LEFT {
        return Err("expired".to_owned());
    }
    if let Some(wanted) = wanted {
        let have: BTreeSet<&String> = inspected.names.iter().collect();
        if have != wanted.iter().collect() {
            return Err(format!(
                "issued for {:?}, not for {:?}",
                inspected.names, wanted
            ));
        }
    }
    Ok(IssuedCert {
        pair: KeyedCert { cert_pem, key_pem },
        cas,
    })
}

/// The certificates (PEM blocks) in `text`, each normalised to end with one newline.
fn pem_blocks(text: &str) -> BTreeSet<String> {
    const END: &str = "-----END CERTIFICATE-----";
    text.split_inclusive(END)
        .filter_map(|block| {
            let start = block.find("-----BEGIN CERTIFICATE-----")?;
            block
                .ends_with(END)
                .then(|| format!("{}\n", &block[start..]))
        })
        .collect()
}

fn bundle(cas: &BTreeSet<String>) -> String {
    cas.iter().map(String::as_str).collect()
}

/// Certificates that are needed and neither issued nor already handed out, by Secret name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub missing: Vec<String>,
}

/// What [`next`] hands out.
#[derive(Debug, Clone)]
pub struct Handout {
    pub pki: ClusterPki,
    /// The members trust other CAs than the issuer's own: a change of the issuer's CA is under
    /// way, and its next step waits on members reloading files, which wakes no watch.
    pub ca_changing: bool,
}

/// What to hand out next: `written` is what `<name>-tls` and `<name>-ca` hold now, `issued`
/// what cert-manager has issued, `in_use` what each existing member reports it loaded.
/// Certificates for the first `needed` members and the operator must exist, issued or
/// already handed out; `spare` more are handed out when issued.
pub fn next(
    names: &ClusterNames,
    written: Option<&ClusterPki>,
    issued: &Issued,
    in_use: &InUse,
    needed: u32,
    spare: u32,
    now: SystemTime,
) -> Result<Handout, Pending> {
    let issued_cas = issued.cas(names, needed);
    let written_cas = written.map(|w| pem_blocks(w.ca_pem())).unwrap_or_default();
    let trusted_by_all = |bundle: &str| {
        let sum = sha256(bundle);
        in_use
            .values()
            .all(|u| u.as_ref().is_some_and(|u| u.ca_sha256 == sum))
    };
    let uses_issued = in_use.iter().all(|(pod, used)| {
        let issued = issued.members.get(pod).map(|c| sha256(&c.pair.cert_pem));
        used.as_ref()
            .is_some_and(|u| Some(&u.certificate_sha256) == issued.as_ref())
    });
    // Which CAs to trust, and whether the issued certificates may replace written ones.
    let (cas, hand_out_issued) = if written.is_none() {
        (issued_cas.clone(), true)
    } else if !issued_cas.is_subset(&written_cas) {
        // A new CA: trusted by everyone before anything it signed is handed out.
        (&written_cas | &issued_cas, false)
    } else if !trusted_by_all(&bundle(&written_cas)) {
        (written_cas.clone(), false)
    } else if written_cas != issued_cas && uses_issued && !issued_cas.is_empty() {
        // Every member uses a certificate of the issuer's current CAs: drop the others.
        (issued_cas.clone(), true)
    } else {
        (written_cas.clone(), true)
    };
    let still_good = |c: &KeyedCert, wanted: Option<Vec<String>>| {
        raft_pki::inspect(&c.cert_pem).is_ok_and(|i| {
            i.not_after > now + MIN_LEFT
                && wanted.is_none_or(|w| {
                    i.names.iter().collect::<BTreeSet<_>>() == w.iter().collect::<BTreeSet<_>>()
                })
        })
    };
    let choose = |issued: Option<&IssuedCert>, written: Option<&KeyedCert>, wanted| {
        let written = written.filter(|c| still_good(c, wanted));
        let issued = issued.map(|c| &c.pair);
        if hand_out_issued {
            issued.or(written)
        } else {
            written.or(issued)
        }
        .cloned()
    };
    let mut missing = Vec::new();
    let operator = choose(issued.operator.as_ref(), written.map(|w| &w.operator), None);
    if operator.is_none() {
        missing.push(names.operator_certificate());
    }
    let mut members = BTreeMap::new();
    for ordinal in 0..needed.saturating_add(spare) {
        let pod = names.pod(ordinal);
        let wanted = Some(member_names(names, &pod));
        match choose(
            issued.members.get(&pod),
            written.and_then(|w| w.member(&pod)),
            wanted,
        ) {
            // A spare certificate only if the members trust its CA: they would refuse it.
            Some(pair)
                if ordinal < needed
                    || cas.iter().any(|ca| raft_pki::signed_by(&pair.cert_pem, ca)) =>
            {
                members.insert(pod, pair);
            }
            None if ordinal < needed => missing.push(names.member_certificate(&pod)),
            _ => {}
        }
    }
    match operator {
        Some(operator) if missing.is_empty() => Ok(Handout {
            ca_changing: cas != issued_cas,
            pki: ClusterPki {
                ca_cert: bundle(&cas),
                ca_key: None,
                operator,
                members,
                next_ca: None,
                previous_ca: None,
                rotated_for: String::new(),
            },
        }),
        _ => Err(Pending { missing }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use raft_api::admin::TlsInUse;
    use raft_pki::{Authority, Subject, Usage};

    const DAY: Duration = Duration::from_secs(86_400);

    fn names() -> ClusterNames {
        ClusterNames::new("prod", "ns", "cluster.local")
    }

    /// The Secret cert-manager would write for `issued_for`, signed by `ca`.
    fn issued_secret(ca: &Authority, issued_for: &str) -> Secret {
        let names = names();
        let (name, dns) = if issued_for == FOR_OPERATOR {
            (
                names.operator_certificate(),
                vec!["raft-operator".to_owned()],
            )
        } else {
            (
                names.member_certificate(issued_for),
                member_names(&names, issued_for),
            )
        };
        let pair = ca
            .issue(&Subject {
                common_name: issued_for.to_owned(),
                names: dns,
                usage: Usage::Member,
                valid_for: DAY,
            })
            .unwrap();
        let data = [
            ("tls.crt", pair.cert_pem),
            ("tls.key", pair.key_pem),
            ("ca.crt", ca.cert_pem().to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes())))
        .collect();
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name),
                labels: Some(BTreeMap::from([(
                    CERTIFICATE_FOR_LABEL.to_owned(),
                    issued_for.to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    fn issued_by(ca: &Authority, pods: &[&str]) -> Issued {
        let mut secrets: Vec<Secret> = pods.iter().map(|p| issued_secret(ca, p)).collect();
        secrets.push(issued_secret(ca, FOR_OPERATOR));
        Issued::from_secrets(&names(), &secrets, SystemTime::now())
    }

    /// Every pod of `pki` reporting that it loaded what `pki` holds for it.
    fn loaded(pki: &ClusterPki, pods: &[&str]) -> InUse {
        pods.iter()
            .map(|p| {
                let used = TlsInUse {
                    certificate_sha256: sha256(&pki.member(p).unwrap().cert_pem),
                    ca_sha256: sha256(&pki.trust_bundle()),
                };
                ((*p).to_owned(), Some(used))
            })
            .collect()
    }

    fn ca(name: &str) -> Authority {
        Authority::generate(name, 10 * DAY).unwrap()
    }

    const PODS: [&str; 3] = ["prod-0", "prod-1", "prod-2"];

    #[test]
    fn a_new_cluster_waits_for_every_needed_certificate_then_trusts_the_issuer() {
        let a = ca("issuer A");
        let partial = issued_by(&a, &["prod-0"]);
        let pending = next(
            &names(),
            None,
            &partial,
            &InUse::new(),
            3,
            1,
            SystemTime::now(),
        );
        assert_eq!(
            pending.unwrap_err().missing,
            vec!["prod-1-cert".to_owned(), "prod-2-cert".to_owned()]
        );

        // The spare (prod-3) is not needed.
        let issued = issued_by(&a, &PODS);
        let pki = next(
            &names(),
            None,
            &issued,
            &InUse::new(),
            3,
            1,
            SystemTime::now(),
        )
        .unwrap()
        .pki;
        assert_eq!(
            pki.trust_bundle(),
            a.cert_pem().trim_end().to_owned() + "\n"
        );
        assert!(pki.ca_key.is_none());
        for pod in PODS {
            let cert = &pki.member(pod).unwrap().cert_pem;
            assert!(raft_pki::signed_by(cert, a.cert_pem()), "{pod}");
        }
        assert!(pki.member("prod-3").is_none());
    }

    #[test]
    fn a_certificate_for_other_names_or_without_its_ca_is_not_handed_out() {
        let a = ca("issuer A");
        let mut wrong = issued_secret(&a, "prod-0");
        wrong.metadata.name = Some("prod-1-cert".to_owned());
        wrong.metadata.labels = Some(BTreeMap::from([(
            CERTIFICATE_FOR_LABEL.to_owned(),
            "prod-1".to_owned(),
        )]));
        let mut no_ca = issued_secret(&a, "prod-2");
        no_ca.data.as_mut().unwrap().remove("ca.crt");
        let issued = Issued::from_secrets(&names(), &[wrong, no_ca], SystemTime::now());
        assert!(issued.unfit("prod-1-cert").unwrap().contains("issued for"));
        assert!(issued.unfit("prod-2-cert").unwrap().contains("no ca.crt"));
        assert!(issued.members.is_empty());
    }

    /// [`next`] for three members and no spare, all certificates there.
    fn step(written: Option<&ClusterPki>, issued: &Issued, in_use: &InUse) -> Handout {
        next(&names(), written, issued, in_use, 3, 0, SystemTime::now()).unwrap()
    }

    #[test]
    fn a_renewal_by_the_same_ca_is_handed_out_at_once() {
        let a = ca("issuer A");
        let first = step(None, &issued_by(&a, &PODS), &InUse::new()).pki;
        let renewed = issued_by(&a, &PODS);
        let second = step(Some(&first), &renewed, &loaded(&first, &PODS));
        assert!(!second.ca_changing);
        assert_eq!(second.pki.trust_bundle(), first.trust_bundle());
        assert_eq!(
            second.pki.member("prod-1"),
            Some(&renewed.members["prod-1"].pair)
        );
    }

    #[test]
    fn a_new_issuer_ca_is_trusted_everywhere_before_its_certificates_are_used() {
        let (a, b) = (ca("issuer A"), ca("issuer B"));
        let old = step(None, &issued_by(&a, &PODS), &InUse::new()).pki;
        let from_b = issued_by(&b, &PODS);

        // 1. Both CAs trusted, the old certificates kept.
        let both = step(Some(&old), &from_b, &loaded(&old, &PODS));
        assert!(
            both.ca_changing,
            "a step is pending: the operator must look again soon"
        );
        let both = both.pki;
        assert_eq!(pem_blocks(both.ca_pem()).len(), 2);
        assert_eq!(both.member("prod-0"), old.member("prod-0"));

        // Not every member reloaded the bundle yet: nothing moves.
        let mut lagging = loaded(&both, &PODS);
        lagging.insert("prod-2".to_owned(), loaded(&old, &PODS)["prod-2"].clone());
        let waiting = step(Some(&both), &from_b, &lagging).pki;
        assert_eq!(waiting.member("prod-2"), old.member("prod-2"));

        // 2. Everyone trusts both: the new certificates are handed out, both CAs still trusted.
        let switched = step(Some(&both), &from_b, &loaded(&both, &PODS));
        assert!(switched.ca_changing);
        let switched = switched.pki;
        let new_cert = Some(&from_b.members["prod-2"].pair);
        assert_eq!(switched.member("prod-2"), new_cert);
        assert_eq!(switched.operator, from_b.operator.as_ref().unwrap().pair);
        assert_eq!(switched.trust_bundle(), both.trust_bundle());

        // 3. Everyone uses a certificate of the new CA: the old one is no longer trusted.
        let done = step(Some(&switched), &from_b, &loaded(&switched, &PODS));
        assert!(!done.ca_changing);
        let new_ca = b.cert_pem().trim_end().to_owned() + "\n";
        assert_eq!(done.pki.trust_bundle(), new_ca);
    }

    #[test]
    fn a_spare_certificate_of_the_old_ca_neither_holds_the_change_back_nor_is_handed_out() {
        let (a, b) = (ca("issuer A"), ca("issuer B"));
        let now = SystemTime::now();
        let with_spare = |ca: &Authority, spare: &Authority| {
            let mut secrets: Vec<Secret> = PODS.iter().map(|p| issued_secret(ca, p)).collect();
            secrets.push(issued_secret(ca, FOR_OPERATOR));
            secrets.push(issued_secret(spare, "prod-3"));
            Issued::from_secrets(&names(), &secrets, now)
        };
        let step = |written: Option<&ClusterPki>, issued: &Issued, in_use: &InUse| {
            next(&names(), written, issued, in_use, 3, 1, now).unwrap()
        };
        let old = step(None, &with_spare(&a, &a), &InUse::new()).pki;
        assert!(
            old.member("prod-3").is_some(),
            "the spare, of the trusted CA"
        );
        // Every certificate but the spare's renewed from B.
        let from_b = with_spare(&b, &a);
        let both = step(Some(&old), &from_b, &loaded(&old, &PODS)).pki;
        let switched = step(Some(&both), &from_b, &loaded(&both, &PODS)).pki;
        let done = step(Some(&switched), &from_b, &loaded(&switched, &PODS));
        assert!(!done.ca_changing);
        let new_ca = b.cert_pem().trim_end().to_owned() + "\n";
        assert_eq!(done.pki.trust_bundle(), new_ca);
        assert!(
            done.pki.member("prod-3").is_none(),
            "A's spare is not handed out"
        );
    }

    #[test]
    fn a_member_that_reports_nothing_holds_the_switch_back() {
        let (a, b) = (ca("issuer A"), ca("issuer B"));
        let old = step(None, &issued_by(&a, &PODS), &InUse::new()).pki;
        let from_b = issued_by(&b, &PODS);
        let both = step(Some(&old), &from_b, &loaded(&old, &PODS)).pki;
        let mut silent = loaded(&both, &PODS);
        silent.insert("prod-1".to_owned(), None);
        let held = step(Some(&both), &from_b, &silent).pki;
        assert_eq!(held.member("prod-1"), old.member("prod-1"));
    }

    #[test]
    fn the_certificates_ask_for_what_members_and_the_operator_present() {
        let rc = RaftCluster::new("prod", raft_crds::RaftClusterSpec::default());
        let issuer = IssuerRef {
            name: "cluster-ca".to_owned(),
            kind: "ClusterIssuer".to_owned(),
            group: "cert-manager.io".to_owned(),
        };
        let member = member_certificate(&rc, &names(), &issuer, "prod-1");
        assert_eq!(member.metadata.name.as_deref(), Some("prod-1-cert"));
        assert_eq!(member.spec.secret_name, "prod-1-cert");
        assert_eq!(member.spec.dns_names, member_names(&names(), "prod-1"));
        assert!(member.spec.usages.iter().any(|u| u == "server auth"));
        assert!(member.spec.usages.iter().any(|u| u == "client auth"));
        assert_eq!(
            member
                .spec
                .secret_template
                .labels
                .get(CERTIFICATE_FOR_LABEL),
            Some(&"prod-1".to_owned())
        );
        assert_eq!(
            member
                .spec
                .secret_template
                .labels
                .get("app.kubernetes.io/managed-by"),
            Some(&"raft-operator".to_owned())
        );
        let json = serde_json::to_value(&member).unwrap();
        assert_eq!(json["apiVersion"], "cert-manager.io/v1");
        assert_eq!(json["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(json["spec"]["privateKey"]["encoding"], "PKCS8");

        let operator = operator_certificate(&rc, &names(), &issuer);
        assert_eq!(operator.spec.secret_name, "prod-operator-cert");
        assert!(!operator.spec.usages.iter().any(|u| u == "server auth"));
    }
}
