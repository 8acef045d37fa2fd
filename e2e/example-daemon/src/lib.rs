//! `raft-example-daemon`: the reference daemon for a `raft-sidecar`.
//!
//! A daemon runs beside its sidecar in the same pod and talks to it on loopback (`RAFT_API`,
//! `http://127.0.0.1:7080`). This crate shows the three rules such a daemon follows:
//!
//! 1. **Submit with retries by id** ([`submit`]). Every operation gets an id that is stable
//!    across retries *and restarts* (`<daemon-id>-<n>`). Retryable answers (`NO_LEADER`,
//!    `NO_QUORUM`, `TIMEOUT`, `SHUTTING_DOWN`, `NOT_INITIALIZED`) and connection errors are
//!    retried with the **same** id, with capped exponential backoff that honours `retryAfterMs`.
//!    The sidecar dedupes by id, so a retry of an operation that did commit is answered
//!    `"duplicate": true` rather than committed twice. No failure is silent: each is logged,
//!    and an operation still not committed after its deadline is counted as failed.
//! 2. **Apply from the journal, never from the submit answer** ([`apply`]). The daemon follows
//!    `GET /v1/journal/watch` and executes every committed operation — its own and everyone
//!    else's — exactly once, in journal order. All daemons therefore go through the same
//!    sequence of states ([`digest`]), which `GET /digest` exposes ([`server`]).
//! 3. **Checkpoint atomically with the effect** ([`checkpoint`]). The last applied journal
//!    index is stored together with the state it produced, in one atomic write, so a restart
//!    resumes at `index + 1` without executing anything twice or skipping anything.
//!
//! `main.rs` only parses flags, sets up logging and waits for SIGTERM/SIGINT; [`Daemon`] owns
//! the tasks.

pub mod apply;
pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod digest;
pub mod server;
pub mod sse;
pub mod state;
pub mod submit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use raft_api::client::SidecarClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apply::Applier;
use crate::checkpoint::{CheckpointError, Checkpointer, SubmitProgress};
use crate::config::Settings;
use crate::digest::ApplyState;
use crate::state::{DigestReport, Shared};
use crate::submit::Submitter;

/// The stop signal every task watches. Cloned into each task; `Daemon::stop` sets it.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new(rx: watch::Receiver<bool>) -> Self {
        Self(rx)
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun (or its sender is gone, which means the same).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Sleep for `d` unless shutdown begins first; true when it did.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => self.is_set(),
            () = self.wait() => true,
        }
    }
}

/// `e` and its causes, for logs: reqwest's own message ("error sending request") hides the
/// useful part ("Connection refused") in its source chain.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Bind(#[from] server::BindError),
}

#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("the {0} task did not stop within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the {0} task failed: {1}")]
    Task(&'static str, String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// A running daemon: its HTTP server, journal follower and submitter.
pub struct Daemon {
    /// Where `/digest` is served (the real port when `--listen` asked for port 0).
    pub listen_addr: SocketAddr,
    shared: Arc<Shared>,
    checkpointer: Arc<Checkpointer>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    grace: Duration,
}

impl Daemon {
    /// Restore the checkpoint (if any), bind the HTTP endpoint and start the tasks.
    pub async fn start(settings: Settings) -> Result<Daemon, StartError> {
        let checkpointer = Arc::new(Checkpointer::new(settings.state_dir.as_deref()));
        let (apply, progress) = restore(&checkpointer, &settings.daemon_id)?;
        let shared = Arc::new(Shared::new(settings.daemon_id.clone(), apply, progress));
        let (stop, rx) = watch::channel(false);
        let shutdown = Shutdown::new(rx);

        let (listen_addr, server) =
            server::serve(settings.listen, shared.clone(), shutdown.clone()).await?;
        tracing::info!(%listen_addr, api = %settings.api, daemon_id = %settings.daemon_id, "serving /digest");

        let client = SidecarClient::new(Some(&settings.api), None, None, settings.request_timeout);
        let applier = Applier {
            client: client.clone(),
            shared: shared.clone(),
            checkpointer: checkpointer.clone(),
            open_timeout: settings.request_timeout,
            idle_timeout: settings.watch_idle_timeout,
        };
        let submitter = Submitter {
            client,
            shared: shared.clone(),
            checkpointer: checkpointer.clone(),
            operations: settings.operations,
            interval: settings.submit_interval,
            op_deadline: settings.op_deadline,
        };
        let tasks = vec![
            ("http server", server),
            (
                "journal follower",
                tokio::spawn(applier.run(shutdown.clone())),
            ),
            ("submitter", tokio::spawn(submitter.run(shutdown))),
        ];
        Ok(Daemon {
            listen_addr,
            shared,
            checkpointer,
            stop,
            tasks,
            grace: settings.shutdown_grace,
        })
    }

    /// What `GET /digest` answers right now.
    pub fn report(&self) -> DigestReport {
        self.shared.report()
    }

    /// Stop the tasks (an operation in flight is abandoned and resubmitted after a restart),
    /// wait up to the shutdown grace for them, then write the last checkpoint.
    pub async fn stop(self) -> Result<(), StopError> {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        let mut first_error = None;
        for (name, mut task) in self.tasks {
            match tokio::time::timeout_at(deadline, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(StopError::Task(name, e.to_string()));
                }
                Err(_) => {
                    task.abort();
                    first_error.get_or_insert(StopError::Timeout(name, self.grace));
                }
            }
        }
        self.checkpointer.save(|| self.shared.checkpoint()).await?;
        let r = self.shared.report();
        tracing::info!(
            applied_index = r.applied_index,
            digest = %r.digest,
            "stopped"
        );
        first_error.map_or(Ok(()), Err)
    }
}

/// The state to start from: the checkpoint's, or a fresh one.
fn restore(
    checkpointer: &Checkpointer,
    daemon_id: &str,
) -> Result<(ApplyState, SubmitProgress), CheckpointError> {
    let Some(path) = checkpointer.path() else {
        tracing::info!("no --state-dir: replaying the journal from its start");
        return Ok((ApplyState::default(), SubmitProgress::start()));
    };
    match checkpoint::load(path)? {
        None => {
            tracing::info!(path = %path.display(), "no checkpoint yet: starting from the beginning");
            Ok((ApplyState::default(), SubmitProgress::start()))
        }
        Some((cp, apply)) => {
            tracing::info!(
                applied_index = apply.applied_index,
                digest = %apply.digest_hex(),
                next_operation = cp.submit.next,
                "resuming from checkpoint {}",
                path.display()
            );
            // The journal position is the cluster's and holds for any daemon id; the submit
            // sequence belongs to the id that wrote it.
            let progress = if cp.daemon_id == daemon_id {
                cp.submit
            } else {
                tracing::warn!(
                    previous = %cp.daemon_id,
                    "checkpoint was written by another daemon id: submitting from operation 1"
                );
                SubmitProgress::start()
            };
            Ok((apply, progress))
        }
    }
}
