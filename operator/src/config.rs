//! Command line and environment of `raft-operator`, parsed and validated at the edge.

use std::net::SocketAddr;
use std::time::Duration;

use std::collections::BTreeMap;

use clap::{Args, Parser, Subcommand};

use crate::leader::{ElectionConfig, fallback_identity};
use crate::resources::OperatorPods;

#[derive(Debug, Parser)]
#[command(
    name = "raft-operator",
    version,
    about = "Kubernetes operator for RaftCluster resources"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (in-cluster config, or the kubeconfig of $KUBECONFIG / ~/.kube/config).
    Run(Box<RunConfig>),
    /// Print the RaftCluster CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    /// Listen address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "RAFT_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_addr: SocketAddr,
    /// Watch RaftClusters (and the objects they own) in these namespaces only, comma-separated
    /// (default: all namespaces).
    #[arg(
        long = "namespace",
        visible_alias = "namespaces",
        env = "RAFT_OPERATOR_NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Namespace of the operator's own pods (the chart sets it from the downward API). With
    /// --pod-selector, each cluster's NetworkPolicy admits these pods to the admin port.
    #[arg(long, env = "RAFT_OPERATOR_POD_NAMESPACE", requires = "pod_selector")]
    pub pod_namespace: Option<String>,
    /// Labels of the operator's own pods, `key=value,key=value` (the chart's selector labels).
    #[arg(long, env = "RAFT_OPERATOR_POD_SELECTOR", requires = "pod_namespace")]
    pub pod_selector: Option<String>,
    /// DNS suffix of the Kubernetes cluster, used in the members' peer addresses.
    #[arg(
        long,
        env = "RAFT_OPERATOR_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// Sidecar image for RaftClusters that name none.
    #[arg(long, env = "RAFT_OPERATOR_SIDECAR_IMAGE", default_value = raft_crds::spec::DEFAULT_SIDECAR_IMAGE)]
    pub sidecar_image: String,
    /// Deadline of each call to a sidecar's admin API.
    #[arg(long, env = "RAFT_OPERATOR_SIDECAR_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub sidecar_timeout: Duration,
    /// Deadline of each call to the Kubernetes API server, for the start of its answer (a
    /// watch answers at once). A call past it fails, and so does its reconcile, which is tried
    /// again. The default is above the API server's own limit on a request (its
    /// --request-timeout, 60 s by default), so a call that times out here is one the API server
    /// stopped answering, not one it was still committing.
    #[arg(long, env = "RAFT_OPERATOR_API_TIMEOUT", default_value = "70s", value_parser = humantime::parse_duration)]
    pub api_timeout: Duration,
    /// Requeue interval while a step is in flight or waiting.
    #[arg(long, env = "RAFT_OPERATOR_REQUEUE_ACTIVE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub requeue_active: Duration,
    /// Requeue interval of an idle cluster (keeps conditions fresh).
    #[arg(long, env = "RAFT_OPERATOR_REQUEUE_IDLE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub requeue_idle: Duration,
    /// After SIGTERM or SIGINT: how long in-flight reconciles may take to finish and the leader
    /// Lease to be released, together; what is unfinished then is abandoned (a reconcile is
    /// resumed by whichever replica leads next). The process may take up to 2 s more (the
    /// release and the metrics server get at least 1 s each): keep it at least 2 s under the
    /// pod's terminationGracePeriodSeconds (30 s in the chart). At most 1 h.
    #[arg(long, env = "RAFT_OPERATOR_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub leader_election: LeaderElectionArgs,
}

/// Leader election: which replica of several runs the controllers.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct LeaderElectionArgs {
    /// Run the controllers only while this process holds a coordination.k8s.io Lease, so that
    /// several replicas can run with one of them reconciling (the chart turns it on). Off, the
    /// process reconciles at once and must be the only one.
    #[arg(
        long = "leader-election",
        env = "RAFT_OPERATOR_LEADER_ELECTION",
        default_value_t = false
    )]
    pub enabled: bool,
    /// Namespace of the Lease (default: the namespace of the Kubernetes client: the service
    /// account's in a pod, the kubeconfig context's outside).
    #[arg(
        long = "leader-election-namespace",
        env = "RAFT_OPERATOR_LEADER_ELECTION_NAMESPACE"
    )]
    pub namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long = "leader-election-lease-name",
        env = "RAFT_OPERATOR_LEADER_ELECTION_LEASE_NAME",
        default_value = "raft-operator"
    )]
    pub lease_name: String,
    /// holderIdentity written into the Lease, unique per replica (the chart sets the pod name;
    /// default: the host name plus a random suffix).
    #[arg(long = "leader-election-identity", env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long the holder's claim lasts after its last renewal; whole seconds. A standby takes
    /// over a crashed leader after at most this long (a cleanly stopped one releases it first).
    #[arg(long = "leader-election-lease-duration", env = "RAFT_OPERATOR_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How often the leader renews the Lease.
    #[arg(long = "leader-election-renew-period", env = "RAFT_OPERATOR_LEADER_ELECTION_RENEW_PERIOD", default_value = "5s", value_parser = humantime::parse_duration)]
    pub renew_period: Duration,
    /// How often a standby tries to acquire the Lease, and the leader retries a failed renewal.
    #[arg(long = "leader-election-retry-period", env = "RAFT_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
}

impl Default for LeaderElectionArgs {
    /// The command line's defaults (leader election off).
    fn default() -> Self {
        LeaderElectionArgs {
            enabled: false,
            namespace: None,
            lease_name: "raft-operator".to_owned(),
            identity: None,
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaderElectionArgs {
    /// The election to run, if enabled; `client_namespace` is the Lease's namespace when none
    /// was given.
    pub fn election(&self, client_namespace: &str) -> Option<ElectionConfig> {
        self.enabled.then(|| ElectionConfig {
            namespace: self
                .namespace
                .clone()
                .unwrap_or_else(|| client_namespace.to_owned()),
            name: self.lease_name.clone(),
            identity: self
                .identity
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(fallback_identity),
            lease_duration: self.lease_duration,
            renew_period: self.renew_period,
            retry_period: self.retry_period,
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("leader-election-lease-duration", self.lease_duration),
            ("leader-election-renew-period", self.renew_period),
            ("leader-election-retry-period", self.retry_period),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.lease_duration.subsec_nanos() != 0
            || i32::try_from(self.lease_duration.as_secs()).is_err()
        {
            return Err(ConfigError::LeaseSeconds(self.lease_duration));
        }
        for (flag, d) in [
            ("renew-period", self.renew_period),
            ("retry-period", self.retry_period),
        ] {
            if d >= self.lease_duration {
                return Err(ConfigError::LeaseTiming {
                    flag,
                    period: d,
                    lease_duration: self.lease_duration,
                });
            }
        }
        if let Some(ns) = &self.namespace
            && !is_dns_label(ns)
        {
            return Err(ConfigError::LeaseNamespace(ns.clone()));
        }
        if !is_dns_subdomain(&self.lease_name) {
            return Err(ConfigError::LeaseName(self.lease_name.clone()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--cluster-domain {0:?} is not a DNS name")]
    ClusterDomain(String),
    #[error("--namespace {0:?} is not a namespace name")]
    Namespace(String),
    #[error("--pod-selector {0:?} must be key=value pairs separated by commas")]
    PodSelector(String),
    #[error("--leader-election-lease-duration {0:?} must be a whole number of seconds")]
    LeaseSeconds(Duration),
    #[error(
        "--leader-election-{flag} {period:?} must be shorter than --leader-election-lease-duration {lease_duration:?}"
    )]
    LeaseTiming {
        flag: &'static str,
        period: Duration,
        lease_duration: Duration,
    },
    #[error("--leader-election-namespace {0:?} is not a namespace name")]
    LeaseNamespace(String),
    #[error("--leader-election-lease-name {0:?} is not an object name")]
    LeaseName(String),
    #[error("--shutdown-grace {0:?} is longer than {max:?}", max = MAX_SHUTDOWN_GRACE)]
    ShutdownGrace(Duration),
}

/// Longest `--shutdown-grace`: far more than any pod's termination grace period.
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(60 * 60);

impl RunConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("sidecar-timeout", self.sidecar_timeout),
            ("api-timeout", self.api_timeout),
            ("requeue-active", self.requeue_active),
            ("requeue-idle", self.requeue_idle),
            ("shutdown-grace", self.shutdown_grace),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.shutdown_grace > MAX_SHUTDOWN_GRACE {
            return Err(ConfigError::ShutdownGrace(self.shutdown_grace));
        }
        let ok = !self.cluster_domain.is_empty()
            && self
                .cluster_domain
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            return Err(ConfigError::ClusterDomain(self.cluster_domain.clone()));
        }
        for ns in self.namespaces.iter().chain(&self.pod_namespace) {
            if !is_dns_label(ns) {
                return Err(ConfigError::Namespace(ns.clone()));
            }
        }
        self.operator_pods()?;
        self.leader_election.validate()
    }

    /// Where the operator's own pods run, when it was told (`--pod-namespace`,
    /// `--pod-selector`).
    pub fn operator_pods(&self) -> Result<Option<OperatorPods>, ConfigError> {
        let (Some(namespace), Some(selector)) = (&self.pod_namespace, &self.pod_selector) else {
            return Ok(None);
        };
        let bad = || ConfigError::PodSelector(selector.clone());
        let labels = selector
            .split(',')
            .map(|pair| {
                let (k, v) = pair.split_once('=').ok_or_else(bad)?;
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() || k.contains('=') || v.contains('=') {
                    return Err(bad());
                }
                Ok((k.to_owned(), v.to_owned()))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        Ok(Some(OperatorPods {
            namespace: namespace.clone(),
            labels,
        }))
    }
}

/// A Kubernetes namespace name (an RFC 1123 label).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes object name (an RFC 1123 subdomain).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let Command::Run(mut c) = Cli::parse_from(["raft-operator", "run"]).command else {
            panic!("expected run")
        };
        assert!(c.validate().is_ok());
        c.cluster_domain = "bad domain".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--cluster-domain")
        );
        c.cluster_domain = "cluster.local".into();
        c.requeue_active = Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--requeue-active")
        );
        c.requeue_active = Duration::from_secs(2);
        c.shutdown_grace = MAX_SHUTDOWN_GRACE + Duration::from_secs(1);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--shutdown-grace")
        );
    }

    fn run(args: &[&str]) -> RunConfig {
        let argv = ["raft-operator", "run"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(c) => *c,
            Command::Crd => panic!("expected run"),
        }
    }

    #[test]
    fn several_namespaces_are_watched_when_listed() {
        assert!(run(&[]).namespaces.is_empty(), "all namespaces by default");
        assert_eq!(run(&["--namespace", "a,b"]).namespaces, ["a", "b"]);
        assert_eq!(run(&["--namespaces", "a"]).namespaces, ["a"]);
        let bad = run(&["--namespace", "a,Not_A_Namespace"]);
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("--namespace")
        );
    }

    #[test]
    fn the_operators_own_pods_are_parsed_from_namespace_and_selector() {
        let c = run(&[
            "--pod-namespace",
            "raft-system",
            "--pod-selector",
            "app.kubernetes.io/name=raft-operator, app.kubernetes.io/instance=r",
        ]);
        let pods = c.operator_pods().unwrap().unwrap();
        assert_eq!(pods.namespace, "raft-system");
        assert_eq!(pods.labels.len(), 2);
        assert_eq!(pods.labels["app.kubernetes.io/instance"], "r");
        assert_eq!(run(&[]).operator_pods().unwrap(), None);
        let bad = run(&["--pod-namespace", "x", "--pod-selector", "name"]);
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("--pod-selector")
        );
        // One without the other is a usage error.
        let argv = ["raft-operator", "run", "--pod-namespace", "x"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn leader_election_is_off_unless_asked_for_and_defaults_to_the_chart_timings() {
        let c = run(&[]);
        assert_eq!(c.leader_election, LeaderElectionArgs::default());
        assert_eq!(c.leader_election.election("ns"), None);
        let c = run(&["--leader-election", "--leader-election-identity", "pod-0"]);
        assert!(c.validate().is_ok());
        let e = c.leader_election.election("raft-system").unwrap();
        assert_eq!(
            e.namespace, "raft-system",
            "the client's namespace by default"
        );
        assert_eq!(e.name, "raft-operator");
        assert_eq!(e.identity, "pod-0");
        assert_eq!(e.lease_duration, Duration::from_secs(15));
        assert_eq!(e.renew_period, Duration::from_secs(5));
        assert_eq!(e.retry_period, Duration::from_secs(2));
        let c = run(&[
            "--leader-election",
            "--leader-election-namespace",
            "ops",
            "--leader-election-lease-name",
            "raft-operator.lock",
        ]);
        let e = c.leader_election.election("raft-system").unwrap();
        assert_eq!(
            (e.namespace.as_str(), e.name.as_str()),
            ("ops", "raft-operator.lock")
        );
        assert!(!e.identity.is_empty(), "a generated identity");
        let other = c.leader_election.election("raft-system").unwrap();
        assert_ne!(
            e.identity, other.identity,
            "two processes on one host differ"
        );
    }

    #[test]
    fn leader_election_timings_that_cannot_work_are_refused() {
        let refused = |args: &[&str], flag: &str| {
            let message = run(args).validate().unwrap_err().to_string();
            assert!(message.contains(flag), "{args:?}: {message}");
        };
        refused(
            &["--leader-election-renew-period", "15s"],
            "--leader-election-renew-period",
        );
        refused(
            &["--leader-election-retry-period", "20s"],
            "--leader-election-retry-period",
        );
        refused(
            &["--leader-election-lease-duration", "15500ms"],
            "--leader-election-lease-duration",
        );
        refused(
            &["--leader-election-lease-duration", "0s"],
            "--leader-election-lease-duration",
        );
        refused(
            &["--leader-election-namespace", "Not_A_Namespace"],
            "--leader-election-namespace",
        );
        refused(
            &["--leader-election-lease-name", "Bad Name"],
            "--leader-election-lease-name",
        );
    }
}
