//! Command line and environment of `raft-operator`, parsed and validated at the edge.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    Run(RunConfig),
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
    /// Watch RaftClusters in this namespace only (default: all namespaces).
    #[arg(long, env = "RAFT_OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,
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
    /// Requeue interval while a step is in flight or waiting.
    #[arg(long, env = "RAFT_OPERATOR_REQUEUE_ACTIVE", default_value = "2s", value_parser = humantime::parse_duration)]
    pub requeue_active: Duration,
    /// Requeue interval of an idle cluster (keeps conditions fresh).
    #[arg(long, env = "RAFT_OPERATOR_REQUEUE_IDLE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub requeue_idle: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--cluster-domain {0:?} is not a DNS name")]
    ClusterDomain(String),
}

impl RunConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, d) in [
            ("sidecar-timeout", self.sidecar_timeout),
            ("requeue-active", self.requeue_active),
            ("requeue-idle", self.requeue_idle),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        let ok = !self.cluster_domain.is_empty()
            && self
                .cluster_domain
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            return Err(ConfigError::ClusterDomain(self.cluster_domain.clone()));
        }
        Ok(())
    }
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
    }
}
