//! Command line of the agent: `run` (the node agent itself) and `exec-container` (the tiny
//! helper the agent runs inside each pod's network namespace to set up a container's mount and
//! UTS namespaces before it becomes the container's process). Parsed once at the edge; the rest
//! of the crate takes typed values.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::image::ImageRule;

/// Test node agent: a "process kubelet" for the e2e suite on a local control plane.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register the Node and run the pods bound to it (the agent)
    Run(AgentConfig),
    /// Internal: set up a container's mounts and hostname, then exec its command
    #[command(hide = true)]
    ExecContainer(ExecConfig),
}

/// Configuration of the agent.
#[derive(Debug, Clone, Args)]
pub struct AgentConfig {
    /// Name of the Node this agent registers and whose pods it runs
    #[arg(long, env = "AGENT_NODE_NAME", default_value = "e2e-node")]
    pub node_name: String,

    /// Directory for pod volumes, PVC directories, container logs and bookkeeping
    #[arg(long, env = "AGENT_STATE_DIR", default_value = "/tmp/raft-test-agent")]
    pub state_dir: PathBuf,

    /// Image to local binary mapping, `PATTERN=PATH`; `*` in PATTERN matches any text
    /// (e.g. `raft-sidecar:*=/path/to/raft-sidecar`). Repeatable; the first match wins
    #[arg(long = "image", env = "AGENT_IMAGES", value_delimiter = ',', value_parser = crate::image::parse_rule)]
    pub images: Vec<ImageRule>,

    /// Linux bridge the pods' veths are attached to (created if missing)
    #[arg(long, env = "AGENT_BRIDGE", default_value = "e2ebr0")]
    pub bridge: String,

    /// Address of the bridge on the host; also the node's InternalIP and the pods' gateway
    #[arg(long, env = "AGENT_BRIDGE_IP", default_value = "10.245.0.1")]
    pub bridge_ip: Ipv4Addr,

    /// Prefix length of the pod network (pod IPs are taken from the bridge's subnet)
    #[arg(long, env = "AGENT_POD_PREFIX_LEN", default_value_t = 24)]
    pub pod_prefix_len: u8,

    /// Prefix of the network namespaces (and their /etc/netns directories) the agent creates
    #[arg(long, env = "AGENT_NETNS_PREFIX", default_value = "e2epod-")]
    pub netns_prefix: String,

    /// Cluster DNS domain used in pod host names
    #[arg(long, env = "AGENT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// `KUBERNETES_SERVICE_HOST` given to containers (no kube-proxy: the apiserver's real address)
    #[arg(long, env = "AGENT_APISERVER_HOST")]
    pub apiserver_host: Option<String>,

    /// `KUBERNETES_SERVICE_PORT` given to containers
    #[arg(long, env = "AGENT_APISERVER_PORT")]
    pub apiserver_port: Option<u16>,

    /// Serving certificate (PEM) of the kubelet log API; without it `kubectl logs` is not served
    #[arg(long, env = "AGENT_KUBELET_CERT", requires = "kubelet_key")]
    pub kubelet_cert: Option<PathBuf>,

    /// Private key (PEM) of the kubelet log API
    #[arg(long, env = "AGENT_KUBELET_KEY", requires = "kubelet_cert")]
    pub kubelet_key: Option<PathBuf>,

    /// Port of the kubelet log API on the bridge address (reported as the node's kubelet port)
    #[arg(long, env = "AGENT_KUBELET_PORT", default_value_t = 10250)]
    pub kubelet_port: u16,

    /// How often the node Lease is renewed
    #[arg(long, env = "AGENT_LEASE_RENEW", default_value = "10s", value_parser = humantime_duration)]
    pub lease_renew: Duration,

    /// Longest back-off before restarting a crashed container (kubelet: 5m)
    #[arg(long, env = "AGENT_MAX_RESTART_BACKOFF", default_value = "10s", value_parser = humantime_duration)]
    pub max_restart_backoff: Duration,

    /// How often Secret, ConfigMap and projected volumes of running pods are read again and,
    /// when changed, swapped in atomically (a kubelet's sync period); 0 turns refreshing off
    #[arg(long, env = "AGENT_VOLUME_REFRESH", default_value = "3s", value_parser = humantime_duration)]
    pub volume_refresh: Duration,

    /// Grace period given to containers when the agent itself is stopped
    #[arg(long, env = "AGENT_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime_duration)]
    pub shutdown_grace: Duration,
}

/// Arguments of the internal `exec-container` helper.
#[derive(Debug, Clone, Args)]
pub struct ExecConfig {
    /// Host name of the container's UTS namespace
    #[arg(long, env = "AGENT_EXEC_HOSTNAME")]
    pub hostname: String,

    /// Working directory of the command
    #[arg(long, env = "AGENT_EXEC_WORKDIR", default_value = "/")]
    pub workdir: PathBuf,

    /// Bind mount `SOURCE:TARGET[:ro]`, applied in order
    #[arg(long = "bind", env = "AGENT_EXEC_BINDS", value_delimiter = ',', value_parser = parse_bind)]
    pub binds: Vec<Bind>,

    /// The command and its arguments
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// Errors of [`AgentConfig::validate`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--pod-prefix-len {0} is outside 16..=29")]
    PrefixLen(u8),
    #[error("--netns-prefix must be non-empty and made of [a-z0-9-]")]
    NetnsPrefix,
    #[error("--bridge '{0}' is not a valid interface name (1..=15 characters)")]
    Bridge(String),
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(16..=29).contains(&self.pod_prefix_len) {
            return Err(ConfigError::PrefixLen(self.pod_prefix_len));
        }
        let prefix_ok = !self.netns_prefix.is_empty()
            && self
                .netns_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !prefix_ok {
            return Err(ConfigError::NetnsPrefix);
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 || self.bridge.contains('/') {
            return Err(ConfigError::Bridge(self.bridge.clone()));
        }
        Ok(())
    }

    /// Where PVC directories live (they outlive pods).
    pub fn pv_dir(&self) -> PathBuf {
        self.state_dir.join("volumes")
    }

    /// Per-pod scratch directories (volumes materialised for one pod).
    pub fn pods_dir(&self) -> PathBuf {
        self.state_dir.join("pods")
    }

    /// Container logs, kept after the pod is gone.
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
}

/// Durations like `10s`, `500ms`, `2m`.
fn humantime_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration '{s}'"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration unit in '{s}' (ms, s, m)")),
    }
}

/// One bind mount of a volume into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

impl Bind {
    pub fn to_arg(&self) -> String {
        let ro = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{ro}", self.source.display(), self.target.display())
    }
}

/// Parses `SOURCE:TARGET[:ro]`.
pub fn parse_bind(s: &str) -> Result<Bind, String> {
    let (rest, read_only) = match s.strip_suffix(":ro") {
        Some(r) => (r, true),
        None => (s, false),
    };
    let (source, target) = rest
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not SOURCE:TARGET[:ro]"))?;
    if !source.starts_with('/') || !target.starts_with('/') {
        return Err(format!("'{s}': both paths must be absolute"));
    }
    Ok(Bind {
        source: PathBuf::from(source),
        target: PathBuf::from(target),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_round_trip_through_their_argument_form() {
        let b = parse_bind("/s/v:/var/lib/raft:ro").unwrap();
        assert_eq!(
            b,
            Bind {
                source: "/s/v".into(),
                target: "/var/lib/raft".into(),
                read_only: true
            }
        );
        assert_eq!(parse_bind(&b.to_arg()).unwrap(), b);
        assert!(!parse_bind("/a:/b").unwrap().read_only);
        assert!(parse_bind("a:/b").is_err());
        assert!(parse_bind("/a").is_err());
    }

    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_ms_s_and_m() {
        assert_eq!(humantime_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(humantime_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(humantime_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(humantime_duration("7"), Ok(Duration::from_secs(7)));
        assert!(humantime_duration("1h").is_err());
    }

    #[test]
    fn defaults_validate() {
        let cli = Cli::parse_from(["agent", "run"]);
        let Command::Run(cfg) = cli.command else {
            panic!("expected run");
        };
        assert!(cfg.validate().is_ok());
    }
}
