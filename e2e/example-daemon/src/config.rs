//! Command line and environment. Every flag also reads an environment variable, because in a pod
//! the operator and the manifest speak environment, not argv.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Operation type this daemon submits and executes.
pub const OPERATION_TYPE: &str = "example.increment";

/// Longest operation id the sidecar accepts, in bytes (`MAX_ID_BYTES` in the sidecar).
const MAX_ID_BYTES: usize = 256;

/// Example daemon beside a raft-sidecar: submits operations with retries by id, executes the
/// committed journal in order, and serves a digest of what it executed.
#[derive(Debug, Clone, Parser)]
#[command(name = "raft-example-daemon", version, about, long_about = None)]
pub struct Config {
    /// The sidecar's daemon API. The operator sets `RAFT_API` in the daemon container; the
    /// sidecar listens on loopback, so this is normally left alone.
    #[arg(long, env = "RAFT_API", default_value = "http://127.0.0.1:7080")]
    pub api: String,

    /// This daemon's name: the prefix of its operation ids (`<daemon-id>-<n>`). Defaults to
    /// `POD_NAME`, then `HOSTNAME`, which is the pod name in Kubernetes and stable across
    /// restarts of a StatefulSet pod, so a restarted daemon resubmits under the same ids.
    #[arg(long, env = "DAEMON_ID")]
    pub daemon_id: Option<String>,

    /// Where `GET /digest` and `GET /healthz` are served.
    #[arg(long, env = "DAEMON_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// How many operations this daemon submits in total, across restarts when `--state-dir`
    /// is set (0: submit none, only follow the journal).
    #[arg(long, env = "DAEMON_OPERATIONS", default_value_t = 100)]
    pub operations: u64,

    /// Upper bound of the submit rate, in operations per second.
    #[arg(long, env = "DAEMON_RATE", default_value_t = 20.0)]
    pub rate: f64,

    /// Directory of the checkpoint (last applied journal index, digest, submit progress),
    /// written atomically. Without it every start replays the journal from the beginning and
    /// resubmits from operation 1 (answered as duplicates).
    #[arg(long, env = "DAEMON_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// How long one operation is retried, counted from the first answer of a member sidecar,
    /// before it is counted as failed and the daemon moves on (humantime: `60s`, `2m`).
    #[arg(long, env = "DAEMON_OP_DEADLINE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub op_deadline: Duration,

    /// Deadline of one HTTP request to the sidecar. Longer than the sidecar's write timeout
    /// (5 s by default), so that a slow commit answers `TIMEOUT` rather than a cut connection.
    #[arg(long, env = "DAEMON_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// A journal watch that delivers nothing, not even the sidecar's 15 s keep-alive, for
    /// this long is considered dead and reopened.
    #[arg(long, env = "DAEMON_WATCH_IDLE_TIMEOUT", default_value = "45s", value_parser = humantime::parse_duration)]
    pub watch_idle_timeout: Duration,

    /// How long a SIGTERM/SIGINT waits for the tasks to stop and the last checkpoint to be
    /// written (Kubernetes gives 30 s by default before SIGKILL).
    #[arg(long, env = "DAEMON_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no daemon id: set --daemon-id (DAEMON_ID), POD_NAME or HOSTNAME")]
    NoDaemonId,
    #[error(
        "--daemon-id {0:?} is too long: with the `-<n>` suffix ids must stay within {MAX_ID_BYTES} bytes"
    )]
    DaemonIdTooLong(String),
    #[error("--rate must be a finite number > 0, not {0}")]
    BadRate(String),
    #[error("--{0} must be > 0")]
    ZeroDuration(&'static str),
}

/// The checked configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api: String,
    pub daemon_id: String,
    pub listen: SocketAddr,
    pub operations: u64,
    /// Minimum time between two submits (from `--rate`).
    pub submit_interval: Duration,
    pub state_dir: Option<PathBuf>,
    pub op_deadline: Duration,
    pub request_timeout: Duration,
    pub watch_idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Config {
    /// Check the flags and fill the defaults that come from the environment.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let daemon_id = pick_daemon_id(
            self.daemon_id.as_deref(),
            std::env::var("POD_NAME").ok().as_deref(),
            std::env::var("HOSTNAME").ok().as_deref(),
        )?;
        // Leave room for `-<u64>`.
        if daemon_id.len() + 21 > MAX_ID_BYTES {
            return Err(ConfigError::DaemonIdTooLong(daemon_id));
        }
        let submit_interval = submit_interval(self.rate)?;
        for (name, d) in [
            ("op-deadline", self.op_deadline),
            ("request-timeout", self.request_timeout),
            ("watch-idle-timeout", self.watch_idle_timeout),
            ("shutdown-grace", self.shutdown_grace),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        Ok(Settings {
            api: self.api.clone(),
            daemon_id,
            listen: self.listen,
            operations: self.operations,
            submit_interval,
            state_dir: self.state_dir.clone(),
            op_deadline: self.op_deadline,
            request_timeout: self.request_timeout,
            watch_idle_timeout: self.watch_idle_timeout,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// First non-blank of the flag, `POD_NAME` and `HOSTNAME`.
fn pick_daemon_id(
    flag: Option<&str>,
    pod_name: Option<&str>,
    hostname: Option<&str>,
) -> Result<String, ConfigError> {
    [flag, pod_name, hostname]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(ConfigError::NoDaemonId)
}

/// The pause between submits for `rate` operations per second; at least 1 µs, because a
/// zero-period interval is invalid.
fn submit_interval(rate: f64) -> Result<Duration, ConfigError> {
    if !rate.is_finite() || rate <= 0.0 {
        return Err(ConfigError::BadRate(rate.to_string()));
    }
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .map_err(|_| ConfigError::BadRate(rate.to_string()))?;
    Ok(period.max(Duration::from_micros(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn daemon_id_falls_back_to_pod_name_then_hostname() {
        assert_eq!(
            pick_daemon_id(Some("d"), Some("p"), Some("h")),
            Ok("d".into())
        );
        assert_eq!(pick_daemon_id(None, Some("p"), Some("h")), Ok("p".into()));
        assert_eq!(pick_daemon_id(Some(" "), None, Some("h")), Ok("h".into()));
        assert_eq!(
            pick_daemon_id(None, None, None),
            Err(ConfigError::NoDaemonId)
        );
    }

    #[test]
    fn rate_becomes_a_positive_interval() {
        assert_eq!(submit_interval(20.0), Ok(Duration::from_millis(50)));
        assert_eq!(submit_interval(1e12), Ok(Duration::from_micros(1)));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(submit_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_parse_with_their_defaults() {
        let cfg = Config::try_parse_from(["raft-example-daemon", "--daemon-id", "d-0"]).unwrap();
        let s = cfg.settings().unwrap();
        assert_eq!(s.daemon_id, "d-0");
        assert_eq!(s.operations, 100);
        assert_eq!(s.op_deadline, Duration::from_secs(60));
        let long = "x".repeat(240);
        let cfg = Config::try_parse_from(["raft-example-daemon", "--daemon-id", &long]).unwrap();
        assert!(matches!(
            cfg.settings(),
            Err(ConfigError::DaemonIdTooLong(_))
        ));
    }
}
