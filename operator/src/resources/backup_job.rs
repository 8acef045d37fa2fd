//! The Job that backs a cluster up to, or restores it from, a PersistentVolumeClaim
//! (`persistentVolumeClaim` destinations). The operator mounts no volumes, so the one pod of
//! this Job does it: it mounts the claim and runs `raft-sidecar ctl backup|restore` from the
//! cluster's own sidecar image against one member's admin API (the leader for a backup, the
//! first member for a restore), with the operator's client certificate of this cluster and the
//! cluster token, and prints its result as one JSON line last ([`crate::backup::volume`] reads
//! it from the pod's log).
//!
//! The pod is "restricted" like the members (non-root, no capabilities, read-only root, no
//! service-account token), is never retried by the Job (the operator decides what happens after
//! a failure) and is labelled apart from the members: the StatefulSet, the PodDisruptionBudget
//! and the operator's member list never see it, and the NetworkPolicy admits it to the admin
//! port by [`job_pod_labels`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, KeyToPath, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::names::{ADMIN_PORT, ClusterNames, FIELD_MANAGER, TOKEN_DIR, TOKEN_KEY, TOKEN_VOLUME};
use super::statefulset::{restricted_pod_security, sidecar_security};
use super::tls::{CA_CERT_KEY, OPERATOR_CERT_KEY, OPERATOR_KEY_KEY};

/// Where the claim is mounted in the Job's pod.
pub const BACKUP_DIR: &str = "/var/lib/raft-backups";
/// Where the operator's client certificate (and the CA bundle) are mounted.
const CLIENT_TLS_DIR: &str = "/etc/raft-client-tls";
const CLIENT_TLS_VOLUME: &str = "raft-client-tls";
/// The members' trust bundle (`ca.crt` of `<name>-tls`): during a CA rotation it names both
/// CAs, where `<name>-ca`'s `ca.crt` names only the one that signs.
const TRUST_DIR: &str = "/etc/raft-trust";
const TRUST_VOLUME: &str = "raft-trust";
const BACKUP_VOLUME: &str = "backups";
const CONTAINER: &str = "raft-ctl";
/// `app.kubernetes.io/name` of the Job's pod.
const JOB_APP_NAME: &str = "raft-backup";
/// Deadline of each admin request but the restore upload (a snapshot build can take a while).
const REQUEST_TIMEOUT: &str = "120s";

/// What the Job does.
#[derive(Debug, Clone, PartialEq)]
pub enum JobTask {
    /// Build a snapshot on `pod` (the leader), store it, then keep the newest `keep` backups.
    Backup { keep: u32 },
    /// Restore the backup `backup` (a name, or `latest`) into `pod` (the first member).
    Restore { backup: String },
}

/// One backup or restore Job.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeJob {
    /// The Job's name is this, a dash and five random characters (`generateName`): an earlier
    /// attempt's Job is never mistaken for this one.
    pub name_prefix: String,
    /// The cluster's sidecar image, which holds `raft-sidecar ctl`.
    pub image: String,
    pub claim: String,
    /// Directory in the volume (relative).
    pub dir: String,
    /// The member whose admin API the pod calls.
    pub pod: String,
    pub task: JobTask,
    /// The pod is stopped after this long (`activeDeadlineSeconds`).
    pub deadline: Duration,
    /// The RaftCluster, so that deleting it deletes the Job.
    pub owner: Option<OwnerReference>,
}

/// Labels of the Job and its pod: this cluster's, but not its members' selector.
pub fn job_pod_labels(names: &ClusterNames) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), JOB_APP_NAME.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), names.name.clone()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            FIELD_MANAGER.to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "backup".to_owned(),
        ),
    ])
}

/// `ctl`'s arguments (after the image's entrypoint, `raft-sidecar`).
fn args(names: &ClusterNames, job: &VolumeJob) -> Vec<String> {
    let dir = format!("{BACKUP_DIR}/{}/", job.dir.trim_matches('/'));
    let mut args: Vec<String> = [
        "ctl".to_owned(),
        format!("--admin={}:{ADMIN_PORT}", names.pod_host(&job.pod)),
        format!("--token-file={TOKEN_DIR}/{TOKEN_KEY}"),
        format!("--tls-cert={CLIENT_TLS_DIR}/{OPERATOR_CERT_KEY}"),
        format!("--tls-key={CLIENT_TLS_DIR}/{OPERATOR_KEY_KEY}"),
        format!("--tls-ca={TRUST_DIR}/{CA_CERT_KEY}"),
        format!("--timeout={REQUEST_TIMEOUT}"),
    ]
    .into();
    match &job.task {
        JobTask::Backup { keep } => {
            args.extend(["backup".to_owned(), dir, format!("--keep={keep}")]);
        }
        JobTask::Restore { backup } => {
            args.extend([
                "restore".to_owned(),
                dir,
                format!("--deadline={}s", job.deadline.as_secs()),
            ]);
            if backup != raft_crds::LATEST_BACKUP {
                args.push(format!("--backup={backup}"));
            }
        }
    }
    args.push("--json".to_owned());
    args
}

pub fn volume_job(names: &ClusterNames, job: &VolumeJob) -> Job {
    let labels = job_pod_labels(names);
    let restore = matches!(job.task, JobTask::Restore { .. });
    let secret = |name: &str, secret: String, items: Option<Vec<KeyToPath>>| Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            items,
            default_mode: Some(0o400),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let item = |key: &str| KeyToPath {
        key: key.to_owned(),
        path: key.to_owned(),
        mode: None,
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let q = |s: &str| Quantity(s.to_owned());
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(job.image.clone()),
        args: Some(args(names, job)),
        volume_mounts: Some(vec![
            mount(BACKUP_VOLUME, BACKUP_DIR, restore),
            mount(TOKEN_VOLUME, TOKEN_DIR, true),
            mount(CLIENT_TLS_VOLUME, CLIENT_TLS_DIR, true),
            mount(TRUST_VOLUME, TRUST_DIR, true),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), q("50m")),
                ("memory".to_owned(), q("64Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_owned(), q("256Mi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(sidecar_security()),
        ..Container::default()
    };
    let deadline = i64::try_from(job.deadline.as_secs()).unwrap_or(i64::MAX);
    Job {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", job.name_prefix)),
            namespace: Some(names.namespace.clone()),
            labels: Some(labels.clone()),
            owner_references: job.owner.clone().map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            // The operator deletes it once it read the result; this is for an operator that
            // never came back.
            ttl_seconds_after_finished: Some(24 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    security_context: Some(restricted_pod_security()),
                    volumes: Some(vec![
                        Volume {
                            name: BACKUP_VOLUME.to_owned(),
                            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                claim_name: job.claim.clone(),
                                read_only: Some(restore),
                            }),
                            ..Volume::default()
                        },
                        secret(TOKEN_VOLUME, names.secret(), Some(vec![item(TOKEN_KEY)])),
                        // Not the CA's key: the client certificate only.
                        secret(
                            CLIENT_TLS_VOLUME,
                            names.ca_secret(),
                            Some(vec![item(OPERATOR_CERT_KEY), item(OPERATOR_KEY_KEY)]),
                        ),
                        // Not the members' keys: their trust bundle only.
                        secret(
                            TRUST_VOLUME,
                            names.tls_secret(),
                            Some(vec![item(CA_CERT_KEY)]),
                        ),
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ClusterNames {
        ClusterNames::new("orders", "shop", "cluster.local")
    }

    fn job(task: JobTask) -> VolumeJob {
        VolumeJob {
            name_prefix: "orders-backup".into(),
            image: "ghcr.io/unrdf/raft-sidecar:1.0.0".into(),
            claim: "backups".into(),
            dir: "shop/orders".into(),
            pod: "orders-1".into(),
            task,
            deadline: Duration::from_secs(3600),
            owner: None,
        }
    }

    fn pod_spec(job: &Job) -> PodSpec {
        job.spec.clone().unwrap().template.spec.unwrap()
    }

    #[test]
    fn a_backup_job_calls_the_leader_with_the_operator_certificate_and_keeps_the_newest() {
        let built = volume_job(&names(), &job(JobTask::Backup { keep: 7 }));
        let spec = pod_spec(&built);
        let args = spec.containers[0].args.clone().unwrap();
        assert_eq!(args[0], "ctl");
        assert!(args.contains(&"--admin=orders-1.orders.shop.svc.cluster.local:7090".to_owned()));
        let tail: Vec<&str> = args[7..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "backup",
                "/var/lib/raft-backups/shop/orders/",
                "--keep=7",
                "--json"
            ]
        );
        let volumes = spec.volumes.unwrap();
        let tls = volumes
            .iter()
            .find(|v| v.name == CLIENT_TLS_VOLUME)
            .and_then(|v| v.secret.clone())
            .unwrap();
        assert_eq!(tls.secret_name.as_deref(), Some("orders-ca"));
        let keys: Vec<String> = tls.items.unwrap().into_iter().map(|i| i.key).collect();
        assert!(!keys.contains(&"ca.key".to_owned()), "{keys:?}");
        // The CA bundle the members trust (both CAs during a rotation), and nothing else of
        // the members' Secret.
        let trust = volumes
            .iter()
            .find(|v| v.name == TRUST_VOLUME)
            .and_then(|v| v.secret.clone())
            .unwrap();
        assert_eq!(trust.secret_name.as_deref(), Some("orders-tls"));
        let keys: Vec<String> = trust.items.unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["ca.crt"]);
        let claim = volumes
            .iter()
            .find_map(|v| v.persistent_volume_claim.clone())
            .unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("backups", Some(false))
        );
    }

    #[test]
    fn a_restore_job_mounts_the_volume_read_only_and_names_the_backup_unless_latest() {
        let named = volume_job(
            &names(),
            &job(JobTask::Restore {
                backup: "20261206T030000.000Z.rsnp".into(),
            }),
        );
        let args = pod_spec(&named).containers[0].args.clone().unwrap();
        assert!(args.contains(&"restore".to_owned()));
        assert!(args.contains(&"--backup=20261206T030000.000Z.rsnp".to_owned()));
        assert!(args.contains(&"--deadline=3600s".to_owned()));
        let latest = volume_job(
            &names(),
            &job(JobTask::Restore {
                backup: "latest".into(),
            }),
        );
        let spec = pod_spec(&latest);
        let args = spec.containers[0].args.clone().unwrap();
        assert!(!args.iter().any(|a| a.starts_with("--backup")), "{args:?}");
        let mount = spec.containers[0].volume_mounts.clone().unwrap();
        assert_eq!(mount[0].read_only, Some(true));
    }

    #[test]
    fn the_job_pod_is_restricted_never_retried_and_not_selected_as_a_member() {
        let names = names();
        let built = volume_job(&names, &job(JobTask::Backup { keep: 1 }));
        let spec = built.spec.clone().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(3600));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        let members = names.selector_labels();
        assert!(
            !members.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "the members' selector must not match the Job's pod: {labels:?}"
        );
    }
}
