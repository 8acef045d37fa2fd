//! The StatefulSet running the members: one pod per ordinal with the sidecar (and the user's
//! daemon), one volume claim per pod.
//!
//! Safety-relevant choices (docs/operator.md "What it creates"):
//! - `Parallel` pod management: bootstrap needs every initial pod up before `initialize`, and
//!   a stuck pod must not block the others;
//! - `OnDelete` updates: the operator restarts pods itself, one at a time, leader last;
//! - PVC retention `whenScaled: Delete` (a removed ordinal's node id must never come back) and
//!   `whenDeleted: Retain` (deleting the resource keeps the data);
//! - probes are local: neither liveness nor readiness depends on quorum, so a leaderless cluster
//!   is not restarted into a worse state.
//!
//! `replicas` is not taken from the spec: the plan decides it, following committed membership.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use raft_crds::RaftCluster;

use super::meta::owned_meta;
use super::names::{
    ADMIN_PORT, API_PORT, CLUSTER_ID_KEY, ClusterNames, DAEMON_CONTAINER, DATA_DIR, DATA_VOLUME,
    PEER_PORT, SIDECAR_CONTAINER, TOKEN_DIR, TOKEN_KEY, TOKEN_VOLUME,
};
use super::pod_template::{
    self, AppliedTemplate, TEMPLATE_INPUTS_ANNOTATION, TEMPLATE_RENDERED_ANNOTATION,
    TemplateChoice, TemplateInputs,
};
use super::tls::{CA_CERT_KEY, TLS_DIR, TLS_VOLUME};

/// What the StatefulSet needs besides the resource itself.
#[derive(Debug, Clone)]
pub struct StatefulSetParams {
    /// Replica count decided by the plan (follows membership, not `spec.replicas`).
    pub replicas: i32,
    /// Sidecar image ([`super::sidecar_image::choose`]).
    pub sidecar_image: String,
    /// `status.sidecarUpgradeRequest` from this reconcile on.
    pub sidecar_upgrade_request: Option<String>,
    /// The template the StatefulSet has, if it exists ([`super::pod_template`]).
    pub applied: Option<AppliedTemplate>,
    /// The spec did not change since the last reconcile.
    pub spec_reconciled: bool,
}

/// UID the runtime image runs as (distroless `nonroot`).
const RUN_AS_USER: i64 = 65532;

pub fn statefulset(
    rc: &RaftCluster,
    names: &ClusterNames,
    params: &StatefulSetParams,
) -> StatefulSet {
    let spec = &rc.spec;
    let mut pod_labels = spec.pod_template.labels.clone();
    pod_labels.extend(names.labels());
    let mut containers = Vec::new();
    if let Some(daemon) = &spec.daemon {
        containers.push(daemon_container(daemon));
    }
    containers.push(sidecar_container(rc, names, params));
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(spec.pod_template.annotations.clone()).filter(|a| !a.is_empty()),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(rc, names, containers)),
    };
    let inputs = TemplateInputs {
        spec,
        sidecar_image: &params.sidecar_image,
        upgrade_request: params.sidecar_upgrade_request.as_deref(),
        cluster_domain: &names.cluster_domain,
    }
    .digest();
    let rendered = pod_template::rendered_digest(&template);
    let applied = params.applied.as_ref();
    let choice = pod_template::choose(applied, &inputs, &rendered, params.spec_reconciled);
    let (template, rendered) = match (choice, applied) {
        (TemplateChoice::Keep, Some(a)) => (a.template.clone(), a.rendered.clone()),
        _ => (template, Some(rendered)),
    };
    let mut metadata = owned_meta(rc, names, names.statefulset());
    metadata.annotations = Some(
        [(TEMPLATE_INPUTS_ANNOTATION.to_owned(), inputs)]
            .into_iter()
            .chain(rendered.map(|r| (TEMPLATE_RENDERED_ANNOTATION.to_owned(), r)))
            .collect(),
    );

    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(params.replicas),
            service_name: Some(names.service().to_owned()),
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_scaled: Some("Delete".to_owned()),
                    when_deleted: Some("Retain".to_owned()),
                },
            ),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            },
            template,
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.to_owned()),
                    labels: Some(names.selector_labels()),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                    storage_class_name: spec.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_owned(),
                            spec.storage.size.clone(),
                        )])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            }]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// The pods' spec: the containers, the Secrets they mount, security and placement.
fn pod_spec(rc: &RaftCluster, names: &ClusterNames, containers: Vec<Container>) -> PodSpec {
    let spec = &rc.spec;
    PodSpec {
        containers,
        volumes: Some(vec![
            Volume {
                name: TOKEN_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names.secret()),
                    default_mode: Some(0o400),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: TLS_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names.tls_secret()),
                    default_mode: Some(0o400),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        security_context: Some(
            spec.pod_security_context
                .clone()
                .unwrap_or_else(restricted_pod_security),
        ),
        // Neither container talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(30),
        node_selector: Some(spec.pod_template.node_selector.clone()).filter(|s| !s.is_empty()),
        tolerations: Some(spec.pod_template.tolerations.clone()).filter(|t| !t.is_empty()),
        affinity: Some(
            spec.pod_template
                .affinity
                .clone()
                .unwrap_or_else(|| spread_over_nodes(names)),
        ),
        topology_spread_constraints: Some(topology_spread(rc, names)).filter(|c| !c.is_empty()),
        ..PodSpec::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn sidecar_container(
    rc: &RaftCluster,
    names: &ClusterNames,
    params: &StatefulSetParams,
) -> Container {
    let raft = &rc.spec.raft;
    let image = params.sidecar_image.clone();
    // `$(POD_NAME)` is expanded by the kubelet from the variable defined before it.
    let pod_host = format!(
        "$(POD_NAME).{}.{}.svc.{}",
        names.service(),
        names.namespace,
        names.cluster_domain
    );
    let mut vars = vec![
        EnvVar {
            name: "POD_NAME".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        EnvVar {
            name: "RAFT_CLUSTER_ID".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: names.secret(),
                    key: CLUSTER_ID_KEY.to_owned(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        },
        env("RAFT_NODE_NAME", "$(POD_NAME)"),
        env("RAFT_DATA_DIR", DATA_DIR),
        env("RAFT_API_ADDR", format!("127.0.0.1:{API_PORT}")),
        env("RAFT_PEER_ADDR", format!("0.0.0.0:{PEER_PORT}")),
        env("RAFT_ADMIN_ADDR", format!("0.0.0.0:{ADMIN_PORT}")),
        env("RAFT_ADVERTISE_PEER", format!("{pod_host}:{PEER_PORT}")),
        env("RAFT_ADVERTISE_ADMIN", format!("{pod_host}:{ADMIN_PORT}")),
        env("RAFT_AUTH_TOKEN_FILE", format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        // Each member presents its own pair from the cluster's TLS Secret.
        env("RAFT_TLS_CERT", format!("{TLS_DIR}/$(POD_NAME).crt")),
        env("RAFT_TLS_KEY", format!("{TLS_DIR}/$(POD_NAME).key")),
        env("RAFT_TLS_CA", format!("{TLS_DIR}/{CA_CERT_KEY}")),
        env("RAFT_HEARTBEAT_MS", raft.heartbeat_ms.to_string()),
        env(
            "RAFT_ELECTION_TIMEOUT_MIN_MS",
            raft.election_timeout_min_ms.to_string(),
        ),
        env(
            "RAFT_ELECTION_TIMEOUT_MAX_MS",
            raft.election_timeout_max_ms.to_string(),
        ),
        env(
            "RAFT_PARTITION_DETECTION_MS",
            raft.partition_detection_ms.to_string(),
        ),
        env("RAFT_SNAPSHOT_INTERVAL", raft.snapshot_interval.to_string()),
        env(
            "RAFT_LOG_COMPACTION_THRESHOLD",
            raft.log_compaction_threshold.to_string(),
        ),
        env("RAFT_MAX_LOG_SIZE", raft.max_log_size.to_string()),
    ];
    // Only when set: a new variable in the template would roll every existing cluster's pods
    // on the operator's upgrade.
    if let Some(share) = raft.snapshot_build_share {
        vars.push(env("RAFT_SNAPSHOT_BUILD_SHARE", share.to_string()));
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            // The admin port speaks TLS; the kubelet does not verify probe certificates.
            scheme: Some("HTTPS".to_owned()),
            port: IntOrString::Int(i32::from(ADMIN_PORT)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    Container {
        name: SIDECAR_CONTAINER.to_owned(),
        image: Some(image),
        args: Some(vec!["run".to_owned()]),
        env: Some(vars),
        ports: Some(vec![port("peer", PEER_PORT), port("admin", ADMIN_PORT)]),
        readiness_probe: Some(probe("/readyz", 2, 3)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        resources: Some(
            rc.spec
                .sidecar
                .resources
                .clone()
                .unwrap_or_else(default_sidecar_resources),
        ),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.to_owned(),
                mount_path: DATA_DIR.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: TOKEN_VOLUME.to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: TLS_VOLUME.to_owned(),
                mount_path: TLS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(sidecar_security()),
        ..Container::default()
    }
}

/// The sidecar image's security context: complete on its own ("restricted"), whatever the pod's
/// says (also for the backup Jobs, [`super::backup_job`]).
pub(super) fn sidecar_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        seccomp_profile: Some(runtime_default_seccomp()),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

/// Requests sized from the measured idle and loaded RSS (docs/sidecar.md); no CPU limit, since
/// throttling a Raft node delays heartbeats and causes needless elections.
fn default_sidecar_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("100m")),
            ("memory".to_owned(), q("64Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("512Mi"))])),
        ..ResourceRequirements::default()
    }
}

fn daemon_container(daemon: &raft_crds::DaemonSpec) -> Container {
    let mut env_vars = daemon.env.clone();
    if !env_vars.iter().any(|e| e.name == "RAFT_API") {
        env_vars.push(env("RAFT_API", format!("http://127.0.0.1:{API_PORT}")));
    }
    Container {
        name: DAEMON_CONTAINER.to_owned(),
        image: Some(daemon.image.clone()),
        args: Some(daemon.args.clone()).filter(|a| !a.is_empty()),
        env: Some(env_vars),
        resources: daemon.resources.clone(),
        security_context: Some(
            daemon
                .security_context
                .clone()
                .unwrap_or_else(restricted_daemon_security),
        ),
        ..Container::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// The pods' default security context: what the "restricted" Pod Security Standard asks at the
/// pod level.
/// The default affinity: members preferably on different nodes, so one node's loss costs one
/// member. Preferred, not required: a cluster larger than the node count still schedules.
fn spread_over_nodes(names: &ClusterNames) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(names.selector_labels()),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// `spec.topologySpreadConstraints` as given; one without a label selector counts this
/// cluster's pods.
fn topology_spread(rc: &RaftCluster, names: &ClusterNames) -> Vec<TopologySpreadConstraint> {
    rc.spec
        .topology_spread_constraints
        .iter()
        .cloned()
        .map(|mut c| {
            c.label_selector.get_or_insert_with(|| LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            });
            c
        })
        .collect()
}

pub(super) fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

/// The daemon container's default security context ("restricted", read-only root).
fn restricted_daemon_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_crds::{DaemonSpec, RaftClusterSpec};

    fn params() -> StatefulSetParams {
        StatefulSetParams {
            replicas: 3,
            sidecar_image: "raft-sidecar:9.9.9".into(),
            sidecar_upgrade_request: None,
            applied: None,
            spec_reconciled: true,
        }
    }

    fn names() -> ClusterNames {
        ClusterNames::new("prod", "team-a", "cluster.local")
    }

    fn build(spec: RaftClusterSpec) -> StatefulSet {
        let rc = RaftCluster::new("prod", spec);
        statefulset(&rc, &names(), &params())
    }

    fn template(sts: &StatefulSet) -> PodTemplateSpec {
        sts.spec.clone().unwrap().template
    }

    #[test]
    fn the_template_of_an_older_operator_is_kept_until_the_clusters_inputs_change() {
        let rc = RaftCluster::new("prod", RaftClusterSpec::default());
        let fresh = statefulset(&rc, &names(), &params());
        let annotations = fresh.metadata.annotations.clone().unwrap();
        // What an older operator rendered from the same inputs: another template.
        let mut old_template = template(&fresh);
        old_template
            .spec
            .as_mut()
            .unwrap()
            .termination_grace_period_seconds = Some(10);
        let older = AppliedTemplate {
            template: old_template.clone(),
            inputs: Some(annotations[TEMPLATE_INPUTS_ANNOTATION].clone()),
            rendered: Some("older".into()),
        };
        let on = |rc: &RaftCluster, applied: &AppliedTemplate| {
            let params = StatefulSetParams {
                applied: Some(applied.clone()),
                ..params()
            };
            statefulset(rc, &names(), &params)
        };
        let kept = on(&rc, &older);
        assert_eq!(template(&kept), old_template);
        let kept_notes = kept.metadata.annotations.unwrap();
        assert_eq!(kept_notes[TEMPLATE_RENDERED_ANNOTATION], "older");
        assert_eq!(
            kept_notes[TEMPLATE_INPUTS_ANNOTATION],
            annotations[TEMPLATE_INPUTS_ANNOTATION]
        );

        // A field the pods see changes: the new rendering, in the same roll.
        let mut tuned = rc.clone();
        tuned.spec.raft.heartbeat_ms = 60;
        let rolled = on(&tuned, &older);
        let grace = template(&rolled)
            .spec
            .unwrap()
            .termination_grace_period_seconds;
        assert_eq!(grace, Some(30));
        assert_ne!(
            rolled.metadata.annotations.unwrap()[TEMPLATE_RENDERED_ANNOTATION],
            "older"
        );

        // The rendering it has: rendered again, so a hand edit is undone.
        let edited = AppliedTemplate {
            template: old_template,
            inputs: Some(annotations[TEMPLATE_INPUTS_ANNOTATION].clone()),
            rendered: Some(annotations[TEMPLATE_RENDERED_ANNOTATION].clone()),
        };
        assert_eq!(template(&on(&rc, &edited)), template(&fresh));
    }

    fn pod_spec(sts: &StatefulSet) -> PodSpec {
        sts.spec.clone().unwrap().template.spec.unwrap()
    }

    #[test]
    fn members_prefer_different_nodes_unless_the_user_sets_affinity() {
        let spec = pod_spec(&build(RaftClusterSpec::default()));
        let preferred = spec
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap()
            .preferred_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(preferred.len(), 1);
        let term = &preferred[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        assert_eq!(
            term.label_selector.as_ref().unwrap().match_labels,
            Some(ClusterNames::new("prod", "team-a", "cluster.local").selector_labels())
        );
        assert!(spec.topology_spread_constraints.is_none());

        let mut own = RaftClusterSpec::default();
        let mine = Affinity {
            node_affinity: Some(Default::default()),
            ..Affinity::default()
        };
        own.pod_template.affinity = Some(mine.clone());
        assert_eq!(
            pod_spec(&build(own)).affinity,
            Some(mine),
            "replaced, not merged"
        );
    }

    #[test]
    fn topology_spread_constraints_pass_through_and_count_this_clusters_pods_by_default() {
        let mut spec = RaftClusterSpec::default();
        let zone = TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            ..TopologySpreadConstraint::default()
        };
        let given = TopologySpreadConstraint {
            label_selector: Some(LabelSelector::default()),
            ..zone.clone()
        };
        spec.topology_spread_constraints = vec![zone, given.clone()];
        let constraints = pod_spec(&build(spec)).topology_spread_constraints.unwrap();
        assert_eq!(
            constraints[0].label_selector.as_ref().unwrap().match_labels,
            Some(ClusterNames::new("prod", "team-a", "cluster.local").selector_labels())
        );
        assert_eq!(constraints[1], given, "a selector given is kept");
    }

    fn sidecar(sts: &StatefulSet) -> Container {
        let pod = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.containers
            .iter()
            .find(|c| c.name == SIDECAR_CONTAINER)
            .unwrap()
            .clone()
    }

    fn env_value(c: &Container, name: &str) -> Option<String> {
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn pods_start_in_parallel_update_on_delete_and_drop_volumes_only_when_scaled_down() {
        let sts = build(RaftClusterSpec::default());
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(
            spec.update_strategy.unwrap().type_.as_deref(),
            Some("OnDelete")
        );
        let retention = spec.persistent_volume_claim_retention_policy.unwrap();
        assert_eq!(retention.when_scaled.as_deref(), Some("Delete"));
        assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
        assert_eq!(spec.service_name.as_deref(), Some("prod"));
    }

    #[test]
    fn probes_are_local_and_the_sidecar_has_no_cpu_limit() {
        let c = sidecar(&build(RaftClusterSpec::default()));
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
        let limits = c.resources.unwrap().limits.unwrap();
        assert!(!limits.contains_key("cpu"));
    }

    #[test]
    fn the_sidecar_advertises_its_stable_dns_name_and_reads_the_token_from_the_secret() {
        let c = sidecar(&build(RaftClusterSpec::default()));
        assert_eq!(c.image.as_deref(), Some("raft-sidecar:9.9.9"));
        assert_eq!(
            env_value(&c, "RAFT_ADVERTISE_PEER").as_deref(),
            Some("$(POD_NAME).prod.team-a.svc.cluster.local:7070")
        );
        assert_eq!(
            env_value(&c, "RAFT_AUTH_TOKEN_FILE").as_deref(),
            Some("/etc/raft/token")
        );
        assert_eq!(
            env_value(&c, "RAFT_API_ADDR").as_deref(),
            Some("127.0.0.1:7080")
        );
        // POD_NAME must be defined before the variables that expand it.
        let names: Vec<_> = c.env.unwrap().into_iter().map(|e| e.name).collect();
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("POD_NAME") < pos("RAFT_ADVERTISE_PEER"));
    }

    #[test]
    fn raft_timing_maps_to_the_sidecar_flags_of_the_same_name() {
        let mut spec = RaftClusterSpec::default();
        spec.raft.heartbeat_ms = 70;
        spec.raft.snapshot_interval = 1234;
        let c = sidecar(&build(spec));
        assert_eq!(env_value(&c, "RAFT_HEARTBEAT_MS").as_deref(), Some("70"));
        assert_eq!(
            env_value(&c, "RAFT_SNAPSHOT_INTERVAL").as_deref(),
            Some("1234")
        );
        assert_eq!(
            env_value(&c, "RAFT_SNAPSHOT_BUILD_SHARE"),
            None,
            "unset: left out"
        );
        let mut spec = RaftClusterSpec::default();
        spec.raft.snapshot_build_share = Some(25);
        let c = sidecar(&build(spec));
        assert_eq!(
            env_value(&c, "RAFT_SNAPSHOT_BUILD_SHARE").as_deref(),
            Some("25")
        );
    }

    #[test]
    fn pods_are_restricted_by_default_and_the_user_can_replace_the_pod_and_daemon_contexts() {
        let daemon = DaemonSpec {
            image: "unrdf/daemon:1.4".into(),
            args: vec![],
            env: vec![],
            resources: None,
            security_context: None,
        };
        let spec = RaftClusterSpec {
            daemon: Some(daemon.clone()),
            ..RaftClusterSpec::default()
        };
        let pod = build(spec).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.clone().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        for c in &pod.containers {
            let sc = c.security_context.clone().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.unwrap().drop.unwrap(),
                ["ALL"],
                "{}",
                c.name
            );
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        }

        let spec = RaftClusterSpec {
            daemon: Some(DaemonSpec {
                security_context: Some(SecurityContext {
                    read_only_root_filesystem: Some(false),
                    ..SecurityContext::default()
                }),
                ..daemon
            }),
            pod_security_context: Some(PodSecurityContext {
                run_as_user: Some(1000),
                ..PodSecurityContext::default()
            }),
            ..RaftClusterSpec::default()
        };
        let pod = build(spec).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.security_context.unwrap().run_as_user, Some(1000));
        let daemon = &pod.containers[0];
        let sidecar = &pod.containers[1];
        assert_eq!(
            daemon
                .security_context
                .clone()
                .unwrap()
                .read_only_root_filesystem,
            Some(false)
        );
        // The sidecar stays restricted on its own, whatever the pod's context says.
        let sc = sidecar.security_context.clone().unwrap();
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(sc.run_as_non_root, Some(true));
    }

    #[test]
    fn the_daemon_runs_beside_the_sidecar_and_finds_it_through_raft_api() {
        let spec = RaftClusterSpec {
            daemon: Some(DaemonSpec {
                image: "unrdf/daemon:1.4".into(),
                args: vec!["--verbose".into()],
                env: vec![],
                resources: None,
                security_context: None,
            }),
            ..RaftClusterSpec::default()
        };
        let sts = build(spec);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers.len(), 2);
        let daemon = &pod.containers[0];
        assert_eq!(daemon.name, DAEMON_CONTAINER);
        assert_eq!(
            env_value(daemon, "RAFT_API").as_deref(),
            Some("http://127.0.0.1:7080")
        );
    }

    #[test]
    fn user_labels_never_override_the_selector() {
        let mut spec = RaftClusterSpec::default();
        spec.pod_template
            .labels
            .insert("app.kubernetes.io/instance".into(), "other".into());
        spec.pod_template.labels.insert("team".into(), "a".into());
        let sts = build(spec);
        let labels = sts.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "prod");
        assert_eq!(labels["team"], "a");
    }
}
