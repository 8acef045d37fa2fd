//! Command line and environment configuration of `raft-sidecar run`, parsed at the edge into
//! a typed [`NodeConfig`]. Every flag also reads `RAFT_<UPPER_SNAKE>`; defaults live here only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::store::state_machine::pace::DEFAULT_BUILD_SHARE;
use crate::tls::TlsPaths;

/// Who this member is and where it is reached: flags shared by `raft-sidecar run` and
/// `raft-sidecar restore` (which writes the member into the restored membership).
#[derive(Debug, Clone, Args)]
pub struct MemberArgs {
    /// Directory holding RocksDB and snapshots.
    #[arg(long, env = "RAFT_DATA_DIR", default_value = "/var/lib/raft")]
    pub data_dir: PathBuf,
    /// Human name of this member (the pod name); shown as `leaderId`. Default: $HOSTNAME.
    #[arg(long, env = "RAFT_NODE_NAME")]
    pub node_name: Option<String>,
    /// Cluster id; stored on first start, a data dir of another cluster is refused.
    #[arg(long, env = "RAFT_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Raft peer transport listen address.
    #[arg(long, env = "RAFT_PEER_ADDR", default_value = "0.0.0.0:7070")]
    pub peer_addr: SocketAddr,
    /// Admin API, metrics and probes listen address.
    #[arg(long, env = "RAFT_ADMIN_ADDR", default_value = "0.0.0.0:7090")]
    pub admin_addr: SocketAddr,
    /// How peers reach this node (`host:port`). Default: $HOSTNAME and the --peer-addr port.
    #[arg(long, env = "RAFT_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// How the operator reaches this node's admin API. Default: the --advertise-peer host and
    /// the --admin-addr port.
    #[arg(long, env = "RAFT_ADVERTISE_ADMIN")]
    pub advertise_admin: Option<String>,
}

/// [`MemberArgs`], checked and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMember {
    pub data_dir: PathBuf,
    pub cluster_id: String,
    pub name: String,
    pub advertise_peer: String,
    pub advertise_admin: String,
}

impl MemberArgs {
    pub fn resolve(&self) -> Result<ResolvedMember, ConfigError> {
        let cluster_id = cluster_id(self.cluster_id.as_deref())?;
        let name = node_name(self.node_name.as_deref())?;
        let (advertise_peer, advertise_admin) = advertised(
            &name,
            (self.peer_addr, self.advertise_peer.as_deref()),
            (self.admin_addr, self.advertise_admin.as_deref()),
        );
        Ok(ResolvedMember {
            data_dir: self.data_dir.clone(),
            cluster_id,
            name,
            advertise_peer,
            advertise_admin,
        })
    }
}

/// Flags of `raft-sidecar run` (docs/sidecar.md "Configuration").
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub member: MemberArgs,
    /// Daemon API listen address (loopback unless --api-allow-remote).
    #[arg(long, env = "RAFT_API_ADDR", default_value = "127.0.0.1:7080")]
    pub api_addr: SocketAddr,
    /// Allow the daemon API on a non-loopback address.
    #[arg(long, env = "RAFT_API_ALLOW_REMOTE")]
    pub api_allow_remote: bool,
    /// File holding the shared cluster secret; required for peer and admin traffic.
    #[arg(long, env = "RAFT_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Run without a token: peer and admin traffic unauthenticated. Development only.
    #[arg(long, env = "RAFT_INSECURE")]
    pub insecure: bool,
    /// This member's certificate (PEM, its chain after it), valid for its --node-name as a DNS
    /// name; presented to peers and admin clients. Re-read when the file changes.
    #[arg(long, env = "RAFT_TLS_CERT", conflicts_with = "insecure_plaintext")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "RAFT_TLS_KEY", conflicts_with = "insecure_plaintext")]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificates (PEM; several during a CA rotation): peers and admin
    /// clients must present a certificate signed by one of them.
    #[arg(long, env = "RAFT_TLS_CA", conflicts_with = "insecure_plaintext")]
    pub tls_ca: Option<PathBuf>,
    /// Serve peers and the admin API in plain text, without mutual TLS. Anyone who can see the
    /// pod network can read and replay the cluster token. Development and tests only.
    #[arg(long, env = "RAFT_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
    /// Static bootstrap: `name=host:port,…`; the lowest name initializes the cluster once.
    #[arg(long, env = "RAFT_INITIAL_MEMBERS")]
    pub initial_members: Option<String>,
    /// Leader heartbeat interval.
    #[arg(long, env = "RAFT_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout.
    #[arg(long, env = "RAFT_ELECTION_TIMEOUT_MIN_MS", default_value_t = 200)]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    #[arg(long, env = "RAFT_ELECTION_TIMEOUT_MAX_MS", default_value_t = 400)]
    pub election_timeout_max_ms: u64,
    /// When a silent leader or a lost quorum becomes a partition event.
    #[arg(long, env = "RAFT_PARTITION_DETECTION_MS", default_value_t = 3000)]
    pub partition_detection_ms: u64,
    /// Applied entries between snapshots.
    #[arg(long, env = "RAFT_SNAPSHOT_INTERVAL", default_value_t = 5000)]
    pub snapshot_interval: u64,
    /// Raft log entries kept behind the snapshot before purge.
    #[arg(long, env = "RAFT_LOG_COMPACTION_THRESHOLD", default_value_t = 5000)]
    pub log_compaction_threshold: u64,
    /// Most of the time snapshot builds may take, in percent: each build waits until the
    /// previous one's end plus its duration times (100 − share) / share. A snapshot holds the
    /// whole state, so a build's cost grows with the dedupe window; the interval does not.
    #[arg(long, env = "RAFT_SNAPSHOT_BUILD_SHARE", default_value_t = DEFAULT_BUILD_SHARE,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub snapshot_build_share: u8,
    /// Cap on retained Raft log entries: past it a snapshot and a purge are asked for (the
    /// snapshot as soon as `--snapshot-build-share` allows).
    #[arg(long, env = "RAFT_MAX_LOG_SIZE", default_value_t = 10000)]
    pub max_log_size: u64,
    /// Committed operations kept readable by daemons.
    #[arg(long, env = "RAFT_JOURNAL_RETENTION", default_value_t = 100_000)]
    pub journal_retention: u64,
    /// How long a committed operation id is remembered for deduplication (e.g. `24h`, `90m`).
    #[arg(long, env = "RAFT_DEDUPE_WINDOW", default_value = "24h", value_parser = humantime::parse_duration)]
    pub dedupe_window: Duration,
    /// Larger operations are refused with 413 (bytes; `KiB`/`MiB` suffixes accepted).
    #[arg(long, env = "RAFT_MAX_OPERATION_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_operation_bytes: usize,
    /// Most operations in one `POST /v1/operations:batch` (the whole batch is also bounded by
    /// four times `--max-operation-bytes`).
    #[arg(long, env = "RAFT_MAX_BATCH_OPERATIONS", default_value_t = 1000)]
    pub max_batch_operations: usize,
    /// A submit that is not committed by then answers 504 TIMEOUT.
    #[arg(long, env = "RAFT_WRITE_TIMEOUT_MS", default_value_t = 5000)]
    pub write_timeout_ms: u64,
    /// Grace period for SIGTERM: in-flight work gets this long before the process exits.
    #[arg(long, env = "RAFT_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
}

/// The largest `--max-operation-bytes` accepted: bounds Raft entries and peer frames.
pub const MAX_OPERATION_BYTES_LIMIT: usize = 4 << 20;

/// Parse `1048576`, `512KiB`, `1MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte size (e.g. 1048576, 512KiB, 1MiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown byte unit {other:?} (use B, KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// One `name=host:port` of `--initial-members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_addr: String,
}

/// The shared cluster token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub name: String,
    pub cluster_id: String,
    pub api_addr: SocketAddr,
    pub peer_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub advertise_peer: String,
    pub advertise_admin: String,
    pub token: Option<Token>,
    /// `None` only with `--insecure-plaintext`.
    pub tls: Option<TlsPaths>,
    pub initial_members: Vec<InitialMember>,
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub partition_detection: Duration,
    pub snapshot_interval: u64,
    pub snapshot_build_share: u8,
    pub log_compaction_threshold: u64,
    pub max_log_size: u64,
    pub journal_retention: u64,
    pub dedupe_window: Duration,
    pub max_operation_bytes: usize,
    pub max_batch_operations: usize,
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--cluster-id (or RAFT_CLUSTER_ID) is required")]
    MissingClusterId,
    #[error("--cluster-id {0:?} must be 1-63 characters of [A-Za-z0-9._-]")]
    BadClusterId(String),
    #[error("--node-name is required when $HOSTNAME is not set")]
    MissingNodeName,
    #[error(
        "--api-addr {0} is not a loopback address; pass --api-allow-remote to expose the daemon API"
    )]
    RemoteApi(SocketAddr),
    #[error("--auth-token-file is required unless --insecure is given")]
    MissingToken,
    #[error(
        "--{0} is required: peers and the admin API use mutual TLS (--tls-cert, --tls-key, \
         --tls-ca); --insecure-plaintext turns it off"
    )]
    MissingTls(&'static str),
    #[error("cannot read --auth-token-file {path}: {reason}")]
    UnreadableToken { path: PathBuf, reason: String },
    #[error("--auth-token-file {0} is empty")]
    EmptyToken(PathBuf),
    #[error(
        "--election-timeout-min-ms ({min}) must be less than --election-timeout-max-ms ({max})"
    )]
    ElectionRange { min: u64, max: u64 },
    #[error("--heartbeat-ms ({heartbeat}) must be less than --election-timeout-min-ms ({min})")]
    Heartbeat { heartbeat: u64, min: u64 },
    #[error("--max-operation-bytes ({0}) must be at most 4MiB")]
    OperationTooLarge(usize),
    #[error("--{flag} must be greater than 0")]
    Zero { flag: &'static str },
    #[error("--max-log-size ({max}) must be at least --log-compaction-threshold ({threshold})")]
    LogSize { max: u64, threshold: u64 },
    #[error(
        "--dedupe-window {} must be longer than --write-timeout-ms ({write_timeout_ms} ms): a \
         client that retries a write which timed out must still find its id remembered",
        humantime::format_duration(*.window)
    )]
    DedupeWindow {
        window: Duration,
        write_timeout_ms: u64,
    },
    #[error("--initial-members entry {0:?} is not name=host:port")]
    BadInitialMember(String),
    #[error("--initial-members names {0:?} twice")]
    DuplicateInitialMember(String),
    #[error("--initial-members does not name this node ({0:?})")]
    SelfNotInInitialMembers(String),
}

/// `--cluster-id`, checked.
fn cluster_id(flag: Option<&str>) -> Result<String, ConfigError> {
    let cluster_id = flag
        .filter(|c| !c.is_empty())
        .ok_or(ConfigError::MissingClusterId)?
        .to_owned();
    let valid = cluster_id.len() <= 63
        && cluster_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(ConfigError::BadClusterId(cluster_id));
    }
    Ok(cluster_id)
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty())
}

/// `--node-name`, else `$HOSTNAME` (the pod name).
fn node_name(flag: Option<&str>) -> Result<String, ConfigError> {
    flag.map(str::to_owned)
        .or_else(hostname)
        .ok_or(ConfigError::MissingNodeName)
}

/// The peer and admin addresses other members use: the `--advertise-*` flags, else
/// `$HOSTNAME` (or the node name) with the listening ports; the admin host follows the peer's.
fn advertised(
    name: &str,
    (peer_listen, advertise_peer): (SocketAddr, Option<&str>),
    (admin_listen, advertise_admin): (SocketAddr, Option<&str>),
) -> (String, String) {
    let host = hostname().unwrap_or_else(|| name.to_owned());
    let peer = advertise_peer
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{host}:{}", peer_listen.port()));
    let admin = advertise_admin.map(str::to_owned).unwrap_or_else(|| {
        let peer_host = peer.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
        format!("{peer_host}:{}", admin_listen.port())
    });
    (peer, admin)
}

impl RunArgs {
    /// Check every flag and build the typed configuration.
    pub fn validate(&self) -> Result<NodeConfig, ConfigError> {
        let ResolvedMember {
            data_dir,
            cluster_id,
            name,
            advertise_peer,
            advertise_admin,
        } = self.member.resolve()?;
        if !self.api_addr.ip().is_loopback() && !self.api_allow_remote {
            return Err(ConfigError::RemoteApi(self.api_addr));
        }
        let token = self.read_token()?;
        let tls = self.tls_paths()?;
        let (min, max, hb) = (
            self.election_timeout_min_ms,
            self.election_timeout_max_ms,
            self.heartbeat_ms,
        );
        for (flag, v) in [
            ("heartbeat-ms", hb),
            ("partition-detection-ms", self.partition_detection_ms),
            ("snapshot-interval", self.snapshot_interval),
            ("journal-retention", self.journal_retention),
            ("write-timeout-ms", self.write_timeout_ms),
            ("max-operation-bytes", self.max_operation_bytes as u64),
            ("max-batch-operations", self.max_batch_operations as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self.max_operation_bytes > MAX_OPERATION_BYTES_LIMIT {
            return Err(ConfigError::OperationTooLarge(self.max_operation_bytes));
        }
        if min >= max {
            return Err(ConfigError::ElectionRange { min, max });
        }
        if hb >= min {
            return Err(ConfigError::Heartbeat { heartbeat: hb, min });
        }
        if self.max_log_size < self.log_compaction_threshold {
            return Err(ConfigError::LogSize {
                max: self.max_log_size,
                threshold: self.log_compaction_threshold,
            });
        }
        if self.dedupe_window <= Duration::from_millis(self.write_timeout_ms) {
            return Err(ConfigError::DedupeWindow {
                window: self.dedupe_window,
                write_timeout_ms: self.write_timeout_ms,
            });
        }
        let initial_members = self.parse_initial_members(&name)?;
        Ok(NodeConfig {
            data_dir,
            name,
            cluster_id,
            api_addr: self.api_addr,
            peer_listen: self.member.peer_addr,
            admin_listen: self.member.admin_addr,
            advertise_peer,
            advertise_admin,
            token,
            tls,
            initial_members,
            heartbeat: Duration::from_millis(hb),
            election_timeout_min: Duration::from_millis(min),
            election_timeout_max: Duration::from_millis(max),
            partition_detection: Duration::from_millis(self.partition_detection_ms),
            snapshot_interval: self.snapshot_interval,
            snapshot_build_share: self.snapshot_build_share,
            log_compaction_threshold: self.log_compaction_threshold,
            max_log_size: self.max_log_size,
            journal_retention: self.journal_retention,
            dedupe_window: self.dedupe_window,
            max_operation_bytes: self.max_operation_bytes,
            max_batch_operations: self.max_batch_operations,
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        })
    }

    fn read_token(&self) -> Result<Option<Token>, ConfigError> {
        match (&self.auth_token_file, self.insecure) {
            (None, true) => Ok(None),
            (None, false) => Err(ConfigError::MissingToken),
            (Some(path), _) => {
                let raw =
                    std::fs::read_to_string(path).map_err(|e| ConfigError::UnreadableToken {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                let token = raw.trim().to_string();
                if token.is_empty() {
                    return Err(ConfigError::EmptyToken(path.clone()));
                }
                Ok(Some(Token(token)))
            }
        }
    }

    fn tls_paths(&self) -> Result<Option<TlsPaths>, ConfigError> {
        if self.insecure_plaintext {
            return Ok(None);
        }
        let cert = self
            .tls_cert
            .clone()
            .ok_or(ConfigError::MissingTls("tls-cert"))?;
        let key = self
            .tls_key
            .clone()
            .ok_or(ConfigError::MissingTls("tls-key"))?;
        let ca = self
            .tls_ca
            .clone()
            .ok_or(ConfigError::MissingTls("tls-ca"))?;
        Ok(Some(TlsPaths { cert, key, ca }))
    }

    fn parse_initial_members(&self, own_name: &str) -> Result<Vec<InitialMember>, ConfigError> {
        let Some(spec) = self
            .initial_members
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(Vec::new());
        };
        let mut members: Vec<InitialMember> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, addr) = part
                .split_once('=')
                .ok_or_else(|| ConfigError::BadInitialMember(part.into()))?;
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if name.is_empty() || !port_ok {
                return Err(ConfigError::BadInitialMember(part.into()));
            }
            if members.iter().any(|m| m.name == name) {
                return Err(ConfigError::DuplicateInitialMember(name.into()));
            }
            members.push(InitialMember {
                name: name.into(),
                peer_addr: addr.into(),
            });
        }
        if !members.iter().any(|m| m.name == own_name) {
            return Err(ConfigError::SelfNotInInitialMembers(own_name.into()));
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        run: RunArgs,
    }

    /// A node without a token file, neither with TLS files nor plaintext.
    const TOKENLESS: [&str; 6] = [
        "probe",
        "--cluster-id",
        "c1",
        "--node-name",
        "n1",
        "--insecure",
    ];

    fn parse(args: &[&str]) -> RunArgs {
        let mut all = TOKENLESS.to_vec();
        all.push("--insecure-plaintext");
        all.extend_from_slice(args);
        Probe::try_parse_from(all).unwrap().run
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Probe::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_spec() {
        let cfg = parse(&[]).validate().unwrap();
        assert_eq!(cfg.api_addr, "127.0.0.1:7080".parse().unwrap());
        assert_eq!(cfg.peer_listen, "0.0.0.0:7070".parse().unwrap());
        assert_eq!(cfg.admin_listen, "0.0.0.0:7090".parse().unwrap());
        assert_eq!(cfg.heartbeat, Duration::from_millis(50));
        assert_eq!(
            (
                cfg.election_timeout_min.as_millis(),
                cfg.election_timeout_max.as_millis()
            ),
            (200, 400)
        );
        assert_eq!(cfg.max_operation_bytes, 1 << 20);
        assert_eq!(cfg.dedupe_window, Duration::from_secs(24 * 3600));
        assert_eq!(cfg.journal_retention, 100_000);
        assert_eq!(cfg.write_timeout, Duration::from_secs(5));
        assert_eq!(cfg.snapshot_build_share, 10);
    }

    #[test]
    fn a_snapshot_build_share_outside_1_to_100_percent_is_refused() {
        for share in ["0", "101", "ten"] {
            let args = TOKENLESS
                .iter()
                .copied()
                .chain(["--snapshot-build-share", share]);
            let err = Probe::try_parse_from(args).err().map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("--snapshot-build-share")),
                "{share}: {err:?}"
            );
        }
        assert_eq!(
            parse(&["--snapshot-build-share", "100"]).snapshot_build_share,
            100
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let err = parse(&["--election-timeout-min-ms", "400"])
            .validate()
            .unwrap_err();
        assert_eq!(err, ConfigError::ElectionRange { min: 400, max: 400 });
        let err = parse(&["--api-addr", "0.0.0.0:7080"])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("--api-allow-remote"));
        assert!(
            parse(&["--api-addr", "0.0.0.0:7080", "--api-allow-remote"])
                .validate()
                .is_ok()
        );
        let err = parse(&["--heartbeat-ms", "300"]).validate().unwrap_err();
        assert!(matches!(err, ConfigError::Heartbeat { .. }));
        let err = parse(&["--initial-members", "n1=a:1,n2"])
            .validate()
            .unwrap_err();
        assert_eq!(err, ConfigError::BadInitialMember("n2".into()));
        let err = parse(&["--initial-members", "n2=a:1,n3=b:2"])
            .validate()
            .unwrap_err();
        assert_eq!(err, ConfigError::SelfNotInInitialMembers("n1".into()));
        for window in ["0s", "5s"] {
            let err = parse(&["--dedupe-window", window]).validate().unwrap_err();
            assert!(
                matches!(err, ConfigError::DedupeWindow { .. }),
                "{window}: {err}"
            );
            assert!(err.to_string().contains("--write-timeout-ms"), "{err}");
        }
        assert!(parse(&["--dedupe-window", "6s"]).validate().is_ok());
        assert!(Probe::try_parse_from(["probe", "--api-addr", "not-an-address"]).is_err());
    }

    #[test]
    fn a_token_file_is_required_unless_insecure() {
        let args = Probe::try_parse_from(["probe", "--cluster-id", "c1", "--node-name", "n"])
            .unwrap()
            .run;
        assert_eq!(args.validate().unwrap_err(), ConfigError::MissingToken);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let path = file.to_str().unwrap();
        let args = Probe::try_parse_from([
            "probe",
            "--cluster-id",
            "c1",
            "--node-name",
            "n",
            "--insecure-plaintext",
            "--auth-token-file",
            path,
        ])
        .unwrap()
        .run;
        let cfg = args.validate().unwrap();
        assert_eq!(cfg.token.as_ref().map(Token::expose), Some("s3cret"));
        assert!(
            !format!("{cfg:?}").contains("s3cret"),
            "the token is printed"
        );
        let missing = dir.path().join("nope");
        let args = Probe::try_parse_from([
            "probe",
            "--cluster-id",
            "c1",
            "--node-name",
            "n",
            "--auth-token-file",
            missing.to_str().unwrap(),
        ])
        .unwrap()
        .run;
        assert!(matches!(
            args.validate().unwrap_err(),
            ConfigError::UnreadableToken { .. }
        ));
    }

    #[test]
    fn mutual_tls_is_required_unless_plaintext_is_asked_for() {
        let args = Probe::try_parse_from(TOKENLESS).unwrap().run;
        assert_eq!(
            args.validate().unwrap_err(),
            ConfigError::MissingTls("tls-cert")
        );
        let mut with_files = TOKENLESS.to_vec();
        with_files.extend(["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        let args = Probe::try_parse_from(&with_files).unwrap().run;
        assert_eq!(
            args.validate().unwrap_err(),
            ConfigError::MissingTls("tls-ca")
        );
        with_files.extend(["--tls-ca", "ca.pem"]);
        let cfg = Probe::try_parse_from(&with_files)
            .unwrap()
            .run
            .validate()
            .unwrap();
        assert_eq!(cfg.tls.unwrap().ca, PathBuf::from("ca.pem"));
        with_files.push("--insecure-plaintext");
        assert!(
            Probe::try_parse_from(&with_files).is_err(),
            "files and plaintext conflict"
        );
        assert_eq!(parse(&[]).validate().unwrap().tls, None);
    }

    #[test]
    fn byte_sizes_accept_binary_suffixes() {
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("42"), Ok(42));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1XB").is_err());
    }

    #[test]
    fn initial_members_are_sorted_by_name_and_advertise_defaults_follow() {
        let cfg = parse(&[
            "--initial-members",
            "n2=h2:7070, n1=h1:7070",
            "--advertise-peer",
            "h1:7070",
        ])
        .validate()
        .unwrap();
        assert_eq!(
            cfg.initial_members[0],
            InitialMember {
                name: "n1".into(),
                peer_addr: "h1:7070".into()
            }
        );
        assert_eq!(cfg.advertise_admin, "h1:7090");
    }
}
