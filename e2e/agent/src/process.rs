//! Container processes. A container is `ip netns exec <pod netns> <this binary> exec-container
//! --hostname … --bind SRC:DST … -- argv`: `ip netns exec` enters the pod's network namespace,
//! a fresh mount namespace with `/etc/netns/<netns>/*` over `/etc`; the helper then enters a UTS
//! namespace (the pod's hostname), bind-mounts each volume at its `mountPath` and execs the
//! command, so the container's process has the agent's child PID, in its own process group.
//! Mount points that do not exist on the host are created (empty) and remembered in
//! [`MountPoints`] so they can be removed when the agent stops.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::config::{Bind, ExecConfig};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("failed to open log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to create mount point {path}: {source}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to spawn container {container}: {source}")]
    Spawn {
        container: String,
        #[source]
        source: std::io::Error,
    },
}

/// Errors of the `exec-container` helper (printed to the container log).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{step}: {source}")]
    Setup {
        step: String,
        #[source]
        source: nix::Error,
    },
    #[error("chdir {path}: {source}")]
    Chdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("exec {argv0}: {source}")]
    Exec {
        argv0: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no command")]
    NoCommand,
}

/// The `exec-container` helper: runs inside `ip netns exec`, never returns on success.
pub fn exec_container(cfg: &ExecConfig) -> Result<Infallible, ExecError> {
    let setup = |step: String| move |source| ExecError::Setup { step, source };
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS).map_err(setup("unshare".into()))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(setup("make / rslave".into()))?;
    nix::unistd::sethostname(&cfg.hostname).map_err(setup("sethostname".into()))?;
    for b in &cfg.binds {
        mount(
            Some(&b.source),
            &b.target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(setup(format!("bind {}", b.to_arg())))?;
        if b.read_only {
            mount(
                None::<&str>,
                &b.target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(setup(format!("remount read-only {}", b.target.display())))?;
        }
    }
    std::env::set_current_dir(&cfg.workdir).map_err(|source| ExecError::Chdir {
        path: cfg.workdir.clone(),
        source,
    })?;
    let (argv0, args) = cfg.argv.split_first().ok_or(ExecError::NoCommand)?;
    let source = std::process::Command::new(argv0).args(args).exec();
    Err(ExecError::Exec {
        argv0: argv0.clone(),
        source,
    })
}

/// Mount points the agent created on the host, removed (if still empty) when it stops.
#[derive(Debug, Clone)]
pub struct MountPoints {
    created: Arc<Mutex<BTreeSet<PathBuf>>>,
    record: PathBuf,
}

impl MountPoints {
    /// `record` is a file listing them, one per line, for `cluster down` after a crash; the
    /// entries of an earlier run (an agent restart) are taken over.
    pub fn new(record: PathBuf) -> Self {
        let earlier: BTreeSet<PathBuf> = std::fs::read_to_string(&record)
            .map(|text| {
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            created: Arc::new(Mutex::new(earlier)),
            record,
        }
    }

    /// Makes `target` exist as a directory (or an empty file when `source` is a file).
    pub fn ensure(&self, source: &Path, target: &Path) -> Result<(), ProcessError> {
        if target.exists() {
            return Ok(());
        }
        let err = |source| ProcessError::MountPoint {
            path: target.to_owned(),
            source,
        };
        let topmost = target
            .ancestors()
            .take_while(|a| !a.exists())
            .last()
            .unwrap_or(target)
            .to_owned();
        if source.is_dir() {
            std::fs::create_dir_all(target).map_err(err)?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(err)?;
            }
            std::fs::File::create(target).map_err(err)?;
        }
        if let Ok(mut set) = self.created.lock()
            && set.insert(topmost.clone())
        {
            let line = format!("{}\n", topmost.display());
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.record)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = appended {
                tracing::warn!(error = %e, "failed to record mount point");
            }
        }
        Ok(())
    }

    /// Removes every created mount point that holds only empty directories and empty files.
    pub fn remove_all(&self) {
        let paths: Vec<PathBuf> = self
            .created
            .lock()
            .map(|s| s.iter().rev().cloned().collect())
            .unwrap_or_default();
        for p in paths {
            if only_empty(&p) {
                let removed = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                if let Err(e) = removed {
                    tracing::warn!(path = %p.display(), error = %e, "failed to remove mount point");
                }
            } else {
                tracing::warn!(path = %p.display(), "mount point not empty; left in place");
            }
        }
        let _ = std::fs::remove_file(&self.record);
    }
}

/// True when `p` is an empty file or a tree of empty directories and empty files.
fn only_empty(p: &Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_file() => m.len() == 0,
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().all(|e| only_empty(&e.path())))
            .unwrap_or(false),
        _ => false,
    }
}

/// Everything needed to start one container process. `Debug` shows the environment's names
/// only: values may come from Secrets (`secretKeyRef`, `envFrom.secretRef`).
#[derive(Clone)]
pub struct Launch {
    pub container: String,
    pub netns: String,
    pub hostname: String,
    pub workdir: PathBuf,
    pub binds: Vec<Bind>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Redacted<'a>(&'a [(String, String)]);
        impl std::fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map()
                    .entries(self.0.iter().map(|(name, _)| (name, "<redacted>")))
                    .finish()
            }
        }
        f.debug_struct("Launch")
            .field("container", &self.container)
            .field("netns", &self.netns)
            .field("hostname", &self.hostname)
            .field("workdir", &self.workdir)
            .field("binds", &self.binds)
            .field("argv", &self.argv)
            .field("env", &Redacted(&self.env))
            .field("log", &self.log)
            .finish()
    }
}

/// Starts a container process; its stdout and stderr are appended to `launch.log`.
pub fn spawn(self_exe: &Path, launch: &Launch) -> Result<tokio::process::Child, ProcessError> {
    if let Some(parent) = launch.log.parent() {
        std::fs::create_dir_all(parent).map_err(|source| ProcessError::Log {
            path: launch.log.clone(),
            source,
        })?;
    }
    let log_err = |source| ProcessError::Log {
        path: launch.log.clone(),
        source,
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(log_err)?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let marker = crate::kubelet_api::START_MARKER;
    writeln!(log, "{marker}{now} starting {:?}", launch.argv).map_err(log_err)?;
    let stderr = log.try_clone().map_err(log_err)?;
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &launch.netns])
        .arg(self_exe)
        .args([
            "exec-container",
            "--hostname",
            &launch.hostname,
            "--workdir",
        ])
        .arg(&launch.workdir);
    for b in &launch.binds {
        cmd.arg("--bind").arg(b.to_arg());
    }
    cmd.arg("--")
        .args(&launch.argv)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn().map_err(|source| ProcessError::Spawn {
        container: launch.container.clone(),
        source,
    })
}

/// Sends `signal` to the container's process group (best effort: it may be gone already).
pub fn signal_group(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

/// Sends SIGKILL to single processes (e.g. stray ones found in a pod's netns).
pub fn kill_pids(pids: &[i32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_debug_shows_env_names_but_not_values() {
        let launch = Launch {
            container: "sidecar".into(),
            netns: "e2epod-x".into(),
            hostname: "rc-0".into(),
            workdir: PathBuf::from("/"),
            binds: Vec::new(),
            argv: vec!["/bin/raft-sidecar".into(), "run".into()],
            env: vec![("RAFT_CLUSTER_ID".into(), "s3cr3t-from-a-secret".into())],
            log: PathBuf::from("/tmp/rc-0.log"),
        };
        let shown = format!("{launch:?}");
        assert!(!shown.contains("s3cr3t-from-a-secret"), "{shown}");
        assert!(shown.contains("RAFT_CLUSTER_ID"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn created_mount_points_are_removed_only_while_empty() {
        let base = std::env::temp_dir().join(format!("agent-mp-{}", std::process::id()));
        let src = base.join("src");
        std::fs::create_dir_all(&src).unwrap();
        let mp = MountPoints::new(base.join("record"));
        let empty = base.join("a/b/c");
        let full = base.join("x/y");
        mp.ensure(&src, &empty).unwrap();
        mp.ensure(&src, &full).unwrap();
        std::fs::write(full.join("data"), "keep").unwrap();
        assert!(
            std::fs::read_to_string(base.join("record"))
                .unwrap()
                .contains("/a\n")
        );
        let restarted = MountPoints::new(base.join("record"));
        restarted.remove_all();
        assert!(!base.join("a").exists());
        assert!(full.join("data").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
