//! Desired state: the `RaftCluster` resource itself (via the `CustomResource` derive) and its
//! spec. Every rule that must hold for *any* writer, `kubectl scale` included, is a CEL rule
//! here, so the API server refuses bad input before the operator ever sees it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, PodSecurityContext, ResourceRequirements, SecurityContext, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use crate::status::RaftClusterStatus;

/// Longest accepted `metadata.name`.
///
/// The StatefulSet is named after the cluster and stamps every pod with the label
/// `controller-revision-hash: <name>-<hash>`, where the hash takes up to 10 characters; label
/// values are limited to 63, so 52 is Kubernetes' own ceiling (longer StatefulSets cannot create
/// pods). We keep 2 more characters for the `-<ordinal>` suffix (replicas ≤ 9, one digit), so
/// that `<name>-<ordinal>` plus `-<hash>` still fits 63: per-member names can carry the same kind
/// of revision label.
pub const MAX_NAME_LENGTH: usize = 50;

/// Desired state of a Raft consensus cluster: the sidecars (and optionally the user's daemon) in
/// a StatefulSet, their volumes and Raft settings.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "consensus.unrdf.io",
    version = "v1alpha1",
    kind = "RaftCluster",
    namespaced,
    shortname = "rc",
    status = "RaftClusterStatus",
    derive = "PartialEq",
    doc = "A Raft consensus cluster managed by raft-operator",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Term", type_ = "integer", json_path = ".status.term"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(format!("self.metadata.name.size() <= {MAX_NAME_LENGTH}")).message(
        Message::Message(format!(
            "metadata.name must be at most {MAX_NAME_LENGTH} characters: pod names and the StatefulSet revision label derive from it"
        ))
    ),
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message(
        "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter): it names the headless Service"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.tls) == has(oldSelf.tls)").message(
        "spec.tls cannot be added or removed: the members trust only the CA that issued their certificates"
    ),
    validation = Rule::new("has(self.bootstrap) == has(oldSelf.bootstrap)").message(
        "spec.bootstrap cannot be added or removed: it says how the cluster was created"
    )
)]
pub struct RaftClusterSpec {
    /// Number of voting members: odd, 1 to 9 (1 only for development). Also what `kubectl scale`
    /// sets; the operator changes membership one member at a time towards it.
    #[serde(default = "default_replicas")]
    #[x_kube(
        validation = Rule::new("self >= 1 && self <= 9").message("replicas must be between 1 and 9"),
        validation = Rule::new("self % 2 == 1").message(
            "replicas must be odd: an even-sized Raft cluster tolerates no more failures than the odd size below it"
        )
    )]
    pub replicas: i32,

    /// The user's container, run beside the sidecar in every pod (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonSpec>,

    /// The raft-sidecar container.
    #[serde(default)]
    pub sidecar: SidecarSpec,

    /// One persistent volume per member, for the Raft log and snapshots.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Raft timing and log limits; each maps to the sidecar flag of the same name.
    #[serde(default)]
    pub raft: RaftSpec,

    /// Extra metadata and scheduling for the pods.
    #[serde(default)]
    pub pod_template: PodTemplateOverrides,

    /// The pods' security context, replacing the default (non-root user 65532, group and
    /// fsGroup 65532, RuntimeDefault seccomp), which passes the "restricted" Pod Security
    /// Standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,

    /// How the pods spread over failure domains (zones, nodes), as in a pod's
    /// `topologySpreadConstraints`; one without a `labelSelector` counts this cluster's pods.
    /// Independently, unless `podTemplate.affinity` is set, members preferably run on
    /// different nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// The NetworkPolicy the operator keeps for the cluster's pods.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Who issues the members' and the operator's certificates: the operator's own CA (the
    /// default), or a cert-manager issuer. Chosen when the cluster is created; it cannot be
    /// changed, added or removed afterwards (the members trust only the CA they started with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "spec.tls cannot be changed: the members trust only the CA that issued their certificates"
    ))]
    pub tls: Option<TlsSpec>,

    /// Scheduled backups to S3-compatible object storage, taken from the leader by the
    /// operator; the annotation `consensus.unrdf.io/backup-now` asks for one at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// How a new cluster starts: empty (the default), or from a backup. Read only until the
    /// cluster has an id; it cannot be changed, added or removed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "spec.bootstrap cannot be changed: it says how the cluster was created"
    ))]
    pub bootstrap: Option<BootstrapSpec>,

    /// Stop all membership changes and rolling restarts (manual recovery).
    #[serde(default)]
    pub paused: bool,
}

/// Default for `spec.replicas`: the smallest size that survives one failure.
pub const DEFAULT_REPLICAS: i32 = 3;

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

impl Default for RaftClusterSpec {
    fn default() -> Self {
        Self {
            replicas: DEFAULT_REPLICAS,
            daemon: None,
            sidecar: SidecarSpec::default(),
            storage: StorageSpec::default(),
            raft: RaftSpec::default(),
            pod_template: PodTemplateOverrides::default(),
            pod_security_context: None,
            topology_spread_constraints: Vec::new(),
            network_policy: NetworkPolicySpec::default(),
            tls: None,
            backup: None,
            bootstrap: None,
            paused: false,
        }
    }
}

/// Scheduled backups: a snapshot of everything the leader applied, streamed with its manifest
/// to one destination, S3-compatible object storage or a PersistentVolumeClaim (the image `NAME`
/// and `NAME.manifest.json`, names from the UTC time), then all but the newest `retention`
/// backups deleted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.persistentVolumeClaim)")
    .message("backup needs exactly one destination: s3 or persistentVolumeClaim"))]
pub struct BackupSpec {
    /// When, as a five-field cron expression in UTC (minute hour day-of-month month
    /// day-of-week), such as `0 */6 * * *`.
    #[x_kube(validation = Rule::new("self.matches('^\\\\s*\\\\S+(\\\\s+\\\\S+){4}\\\\s*$')")
        .message("backup.schedule must be a five-field cron expression: minute hour day-of-month month day-of-week"))]
    pub schedule: String,
    /// How many backups to keep (the newest); older ones are deleted after each backup.
    #[serde(default = "default_backup_retention")]
    #[schemars(range(min = 1, max = 1000))]
    pub retention: i32,
    /// Backups go to this bucket (the operator streams them there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// Backups go to this volume (a short-lived Job per backup mounts it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<VolumeDestination>,
}

impl BackupSpec {
    /// The one destination, `None` when the spec names none or both (which the API server
    /// refuses).
    pub fn destination(&self) -> Option<Destination<'_>> {
        Destination::one_of(self.s3.as_ref(), self.persistent_volume_claim.as_ref())
    }
}

/// Where backups are, whichever kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Destination<'a> {
    S3(&'a S3Destination),
    Volume(&'a VolumeDestination),
}

impl<'a> Destination<'a> {
    fn one_of(
        s3: Option<&'a S3Destination>,
        volume: Option<&'a VolumeDestination>,
    ) -> Option<Self> {
        match (s3, volume) {
            (Some(s3), None) => Some(Self::S3(s3)),
            (None, Some(volume)) => Some(Self::Volume(volume)),
            _ => None,
        }
    }
}

/// Default of `spec.backup.retention`.
pub const DEFAULT_BACKUP_RETENTION: i32 = 7;

fn default_backup_retention() -> i32 {
    DEFAULT_BACKUP_RETENTION
}

/// How a new cluster starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Start from a backup instead of empty: the first member restores it and runs as the only
    /// voter with the backup's journal, dedupe records and settings; the journal continues at
    /// the backup's next index; the other members join one at a time and receive that state.
    /// The backed-up cluster's id becomes `status.parentClusterId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackupSpec>,
}

/// A backup to start a cluster from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.s3) != has(self.persistentVolumeClaim)")
        .message("bootstrap.fromBackup needs exactly one source: s3 or persistentVolumeClaim"),
    validation = Rule::new("!has(self.s3) || (has(self.s3.prefix) && self.s3.prefix.size() > 0)")
        .message("bootstrap.fromBackup.s3.prefix is required: the prefix of the backed-up cluster's backups"),
    validation = Rule::new("!has(self.persistentVolumeClaim) || (has(self.persistentVolumeClaim.path) && self.persistentVolumeClaim.path.size() > 0)")
        .message("bootstrap.fromBackup.persistentVolumeClaim.path is required: the directory of the backed-up cluster's backups")
)]
pub struct FromBackupSpec {
    /// The bucket the backups are in: the `spec.backup.s3` of the cluster they were taken
    /// from. `prefix` is required (the default prefix names this cluster, not that one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// The volume the backups are on: the `spec.backup.persistentVolumeClaim` of the cluster
    /// they were taken from (same namespace). `path` is required, as `prefix` is for `s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<VolumeDestination>,
    /// `latest` (the newest backup there) or a backup's name (`20261206T030000Z.rsnp`).
    #[serde(default = "latest_backup")]
    #[schemars(length(min = 1))]
    pub backup: String,
}

impl FromBackupSpec {
    /// The one source, `None` when the spec names none or both (which the API server refuses).
    pub fn source(&self) -> Option<Destination<'_>> {
        Destination::one_of(self.s3.as_ref(), self.persistent_volume_claim.as_ref())
    }
}

/// `spec.bootstrap.fromBackup.backup` for the newest backup.
pub const LATEST_BACKUP: &str = "latest";

fn latest_backup() -> String {
    LATEST_BACKUP.to_owned()
}

/// A bucket of S3-compatible object storage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Bucket name.
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Key prefix of this cluster's backups; default `<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// URL of an S3-compatible server (`https://…`, or `http://…` as given); default AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region; default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret in the cluster's namespace with the keys `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY` (and optionally `AWS_SESSION_TOKEN`), read by the operator only.
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
}

/// A directory on a PersistentVolumeClaim in the cluster's namespace. The operator never mounts
/// it: each backup or restore runs as a Job whose one pod mounts it (one at a time, so
/// `ReadWriteOnce` will do).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.path) || (!self.path.startsWith('/') && !self.path.matches('(^|/)[.][.](/|$)'))")
    .message("persistentVolumeClaim.path must be relative and must not contain '..'"))]
pub struct VolumeDestination {
    /// Name of the PersistentVolumeClaim.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// Directory in the volume, relative to its root; default `<namespace>/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The user's daemon container. It reaches its sidecar at `RAFT_API=http://127.0.0.1:7080`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonSpec {
    /// Container image of the daemon.
    pub image: String,
    /// Arguments passed to the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables, in addition to `RAFT_API`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Compute resources of the daemon container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The daemon container's security context, replacing the default (non-root, no privilege
    /// escalation, every capability dropped, read-only root filesystem), which passes the
    /// "restricted" Pod Security Standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// The cluster's NetworkPolicy: the peer port (7070) admits only the cluster's own pods, the
/// admin port (7090: admin API, `/metrics`, probes) only the operator's pods and `adminFrom`;
/// every other port (the daemon's) stays open as before. Probes from the pod's own node are
/// admitted whatever the policy says.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create and keep the NetworkPolicy; `false` deletes the one the operator created.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Who else may reach the admin port, as in a NetworkPolicy's `ingress[].from`: Prometheus
    /// scraping `/metrics`, a toolbox pod running `raft-sidecar ctl`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_from: Vec<NetworkPolicyPeer>,
}

fn enabled_by_default() -> bool {
    true
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            admin_from: Vec::new(),
        }
    }
}

/// Who issues the cluster's certificates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A cert-manager issuer (cert-manager.io/v1) in place of the operator's own CA. The
    /// operator then requests one `Certificate` per member (`<pod>-tls`) and one for itself
    /// (`<name>-operator-tls`) from it, and gives the members what cert-manager issues; the
    /// issuer must put its CA in each Secret's `ca.crt` (a CA or Vault issuer does; ACME does
    /// not, and cannot be used). Renewal is cert-manager's; members reload without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A cert-manager issuer, as in a `Certificate`'s `spec.issuerRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer; an `Issuer` must be in the cluster's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// `Issuer` (the default), `ClusterIssuer`, or the kind of an external issuer.
    #[serde(default = "default_issuer_kind")]
    #[schemars(length(min = 1))]
    pub kind: String,
    /// API group of the issuer: `cert-manager.io` (the default) or an external issuer's.
    #[serde(default = "default_issuer_group")]
    #[schemars(length(min = 1))]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".to_owned()
}

fn default_issuer_group() -> String {
    "cert-manager.io".to_owned()
}

/// Default of the operator's `--sidecar-image`, the image new clusters that name none run: the
/// sidecar of the operator's own version.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!("raft-sidecar:", env!("CARGO_PKG_VERSION"));

/// The raft-sidecar container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Container image of the sidecar. Unset: the operator's default image when the cluster is
    /// created, kept in `status.sidecarImage` through operator upgrades; the
    /// `consensus.unrdf.io/upgrade-sidecar` annotation moves the cluster onto the running
    /// operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources of the sidecar container (no CPU limit unless given here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Per-member persistent volume. Immutable: the StatefulSet's volume claim templates cannot
/// change after creation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each member's volume.
    #[serde(default = "default_storage_size")]
    #[schemars(schema_with = "storage_size_schema")]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("storage.size is immutable")
            .reason(Reason::FieldValueForbidden),
        validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
            .message("storage.size must be a positive quantity such as 1Gi")
    )]
    pub size: Quantity,
    /// StorageClass of the volumes; unset means the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("storage.storageClassName is immutable")
        .reason(Reason::FieldValueForbidden))]
    pub storage_class_name: Option<String>,
}

/// Default for `spec.storage.size`.
pub const DEFAULT_STORAGE_SIZE: &str = "1Gi";

fn default_storage_size() -> Quantity {
    Quantity(DEFAULT_STORAGE_SIZE.to_owned())
}

/// A quantity that may be left out (it has a default) but never set to `null`: kube marks every
/// optional int-or-string as nullable, and the API server keeps an explicit `null` instead of
/// defaulting it, which would leave an object the operator cannot read.
fn storage_size_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Quantity>();
    schema.insert("nullable".to_owned(), false.into());
    schema
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Raft timing and log limits. Defaults equal the sidecar's flag defaults; the same ordering
/// rules the sidecar checks at start-up are enforced here, so a bad value is refused at
/// `kubectl apply` instead of crash-looping pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.electionTimeoutMinMs < self.electionTimeoutMaxMs")
        .message("raft.electionTimeoutMinMs must be less than raft.electionTimeoutMaxMs"),
    validation = Rule::new("self.heartbeatMs < self.electionTimeoutMinMs")
        .message("raft.heartbeatMs must be less than raft.electionTimeoutMinMs"),
    validation = Rule::new("self.logCompactionThreshold <= self.maxLogSize")
        .message("raft.maxLogSize must be at least raft.logCompactionThreshold")
)]
pub struct RaftSpec {
    /// Leader heartbeat interval (`--heartbeat-ms`).
    #[serde(default = "raft_defaults::heartbeat_ms")]
    #[schemars(range(min = 1))]
    pub heartbeat_ms: i32,
    /// Lower bound of the randomized election timeout (`--election-timeout-min-ms`).
    #[serde(default = "raft_defaults::election_timeout_min_ms")]
    #[schemars(range(min = 1))]
    pub election_timeout_min_ms: i32,
    /// Upper bound of the randomized election timeout (`--election-timeout-max-ms`).
    #[serde(default = "raft_defaults::election_timeout_max_ms")]
    #[schemars(range(min = 1))]
    pub election_timeout_max_ms: i32,
    /// Time without quorum contact before a node reports a partition (`--partition-detection-ms`).
    #[serde(default = "raft_defaults::partition_detection_ms")]
    #[schemars(range(min = 1))]
    pub partition_detection_ms: i32,
    /// Log entries between snapshots (`--snapshot-interval`).
    #[serde(default = "raft_defaults::snapshot_interval")]
    #[schemars(range(min = 1))]
    pub snapshot_interval: i64,
    /// Log entries kept before compaction (`--log-compaction-threshold`).
    #[serde(default = "raft_defaults::log_compaction_threshold")]
    #[schemars(range(min = 0))]
    pub log_compaction_threshold: i64,
    /// Log size, in entries, past which a snapshot and a purge are asked for (`--max-log-size`).
    #[serde(default = "raft_defaults::max_log_size")]
    #[schemars(range(min = 0))]
    pub max_log_size: i64,
    /// Most of the time snapshot builds may take, in percent (`--snapshot-build-share`; the
    /// sidecar's default, 10, when unset). Left out of the pods when unset, so setting it is
    /// the only thing that rolls them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub snapshot_build_share: Option<i32>,
}

/// The sidecar's flag defaults (`raft-sidecar run --help`), in one place.
mod raft_defaults {
    pub(super) fn heartbeat_ms() -> i32 {
        50
    }
    pub(super) fn election_timeout_min_ms() -> i32 {
        200
    }
    pub(super) fn election_timeout_max_ms() -> i32 {
        400
    }
    pub(super) fn partition_detection_ms() -> i32 {
        3000
    }
    pub(super) fn snapshot_interval() -> i64 {
        5000
    }
    pub(super) fn log_compaction_threshold() -> i64 {
        5000
    }
    pub(super) fn max_log_size() -> i64 {
        10_000
    }
}

impl Default for RaftSpec {
    fn default() -> Self {
        Self {
            heartbeat_ms: raft_defaults::heartbeat_ms(),
            election_timeout_min_ms: raft_defaults::election_timeout_min_ms(),
            election_timeout_max_ms: raft_defaults::election_timeout_max_ms(),
            partition_detection_ms: raft_defaults::partition_detection_ms(),
            snapshot_interval: raft_defaults::snapshot_interval(),
            log_compaction_threshold: raft_defaults::log_compaction_threshold(),
            max_log_size: raft_defaults::max_log_size(),
            snapshot_build_share: None,
        }
    }
}

/// Additions to the pods the operator builds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra pod labels (the operator's own selector labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of the pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pods (for example anti-affinity across nodes or zones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}
