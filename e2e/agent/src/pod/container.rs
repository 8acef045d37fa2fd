//! One container of a pod across its runs: process handle, state for `containerStatuses`,
//! restart count and back-off, probe trackers. The restart decision ([`ContainerRun::exited`])
//! is pure so it can be tested without processes.

use std::process::ExitStatus;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::process::Child;
use tokio::time::Instant;

use super::status::{ContainerView, Exit, RunState};
use crate::probe::Tracker;
use crate::process;

pub fn now_time() -> Time {
    Time(Timestamp::now())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("OnFailure") => Self::OnFailure,
            Some("Never") => Self::Never,
            _ => Self::Always,
        }
    }

    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// One container's runs.
pub struct ContainerRun {
    pub(super) spec: Container,
    pub(super) init: bool,
    pub(super) child: Option<Child>,
    pub(super) pid: Option<u32>,
    pub(super) state: RunState,
    pub(super) last: Option<Exit>,
    pub(super) restart_count: i32,
    pub(super) ran_before: bool,
    pub(super) started_at: Option<Time>,
    pub(super) started_instant: Option<Instant>,
    pub(super) next_start: Instant,
    pub(super) backoff: Duration,
    pub(super) readiness: Option<Tracker>,
    pub(super) liveness: Option<Tracker>,
    pub(super) startup: Option<Tracker>,
    pub(super) ready: bool,
    pub(super) started: bool,
    pub(super) finished: bool,
    pub(super) kill_at: Option<Instant>,
}

impl ContainerRun {
    pub fn new(
        spec: Container,
        init: bool,
        previous: Option<&k8s_openapi::api::core::v1::ContainerStatus>,
    ) -> Self {
        Self {
            spec,
            init,
            child: None,
            pid: None,
            state: RunState::Waiting {
                reason: "ContainerCreating".to_owned(),
                message: None,
            },
            last: None,
            restart_count: previous.map_or(0, |p| p.restart_count),
            ran_before: previous
                .is_some_and(|p| p.state.as_ref().is_some_and(|s| s.waiting.is_none())),
            started_at: None,
            started_instant: None,
            next_start: Instant::now(),
            backoff: Duration::from_secs(1),
            readiness: None,
            liveness: None,
            startup: None,
            ready: false,
            started: false,
            finished: false,
            kill_at: None,
        }
    }

    pub fn view(&self, images: &crate::image::ImageMap) -> ContainerView {
        let image = self.spec.image.clone().unwrap_or_default();
        let image_id = images
            .binary_for(&image)
            .map(|b| format!("local://{}", b.display()))
            .unwrap_or_default();
        ContainerView {
            name: self.spec.name.clone(),
            image,
            image_id,
            pid: self.pid,
            state: self.state.clone(),
            last: self.last.clone(),
            restart_count: self.restart_count,
            ready: self.ready,
            started: self.started,
        }
    }

    /// SIGTERM now, SIGKILL after `grace` (checked by `reap`).
    pub fn stop(&mut self, grace: Duration) {
        if let (Some(pid), None) = (self.pid, self.kill_at) {
            process::signal_group(pid, Signal::SIGTERM);
            self.kill_at = Some(Instant::now() + grace);
        }
    }
    /// Whether the process has exited (reaped), escalating an overdue stop to SIGKILL.
    pub fn poll(&mut self, now: Instant) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status),
            Ok(None) => {
                if let (Some(at), Some(pid)) = (self.kill_at, self.pid)
                    && now >= at
                {
                    process::signal_group(pid, Signal::SIGKILL);
                }
                None
            }
            Err(e) => {
                tracing::warn!(container = %self.spec.name, error = %e, "wait failed");
                None
            }
        }
    }

    /// Drops the process handle and everything that lived with the process.
    pub fn forget_process(&mut self) {
        self.child = None;
        self.pid = None;
        self.kill_at = None;
        self.ready = false;
        self.started = false;
        self.readiness = None;
        self.liveness = None;
        self.startup = None;
    }

    /// A new process for this container is running.
    pub fn started(&mut self, child: Child, now: Instant) {
        if self.last.is_some() || self.ran_before {
            self.restart_count += 1;
        }
        self.ran_before = false;
        self.pid = child.id();
        self.child = Some(child);
        let since = now_time();
        self.started_at = Some(since.clone());
        self.started_instant = Some(now);
        self.state = RunState::Running { since };
        self.readiness = self
            .spec
            .readiness_probe
            .clone()
            .map(|p| Tracker::new(p, now));
        self.liveness = self
            .spec
            .liveness_probe
            .clone()
            .map(|p| Tracker::new(p, now));
        self.startup = self
            .spec
            .startup_probe
            .clone()
            .map(|p| Tracker::new(p, now));
        self.started = self.startup.is_none();
        self.ready = self.started && self.readiness.is_none() && !self.init;
    }

    /// The process ended with `exit_code` (128+signal when killed): record it and decide,
    /// per restart policy, between a restart after a back-off and stopping for good.
    /// Back-off doubles from 1 s up to `max_backoff` and falls back to 1 s after a 60 s run.
    pub fn exited(
        &mut self,
        exit_code: i32,
        signal: Option<i32>,
        now: Instant,
        policy: RestartPolicy,
        max_backoff: Duration,
    ) {
        let exit = Exit {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
            started_at: self.started_at.clone(),
            finished_at: now_time(),
        };
        let ran_for = self.started_instant.map(|s| now - s).unwrap_or_default();
        self.forget_process();
        self.last = Some(exit.clone());
        let restart = if self.init {
            exit_code != 0 && policy != RestartPolicy::Never
        } else {
            policy.restarts(exit_code)
        };
        if restart {
            self.backoff = if ran_for >= Duration::from_secs(60) {
                Duration::from_secs(1)
            } else {
                (self.backoff * 2).min(max_backoff)
            };
            self.next_start = now + self.backoff;
            self.state = RunState::Waiting {
                reason: "CrashLoopBackOff".to_owned(),
                message: Some(format!(
                    "back-off {:?} restarting failed container {}",
                    self.backoff, self.spec.name
                )),
            };
        } else {
            self.finished = true;
            self.state = RunState::Terminated(exit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(init: bool) -> ContainerRun {
        ContainerRun::new(
            Container {
                name: "c".into(),
                ..Container::default()
            },
            init,
            None,
        )
    }

    #[test]
    fn always_restarts_with_doubling_back_off_up_to_the_cap() {
        let mut r = run(false);
        let t0 = Instant::now();
        let max = Duration::from_secs(5);
        r.exited(1, None, t0, RestartPolicy::Always, max);
        assert!(!r.finished);
        assert_eq!(r.next_start, t0 + Duration::from_secs(2));
        assert!(
            matches!(&r.state, RunState::Waiting { reason, .. } if reason == "CrashLoopBackOff")
        );
        r.exited(0, None, t0, RestartPolicy::Always, max);
        assert_eq!(r.next_start, t0 + Duration::from_secs(4));
        r.exited(0, None, t0, RestartPolicy::Always, max);
        assert_eq!(r.next_start, t0 + Duration::from_secs(5));
        assert_eq!(
            r.last.as_ref().map(|e| e.reason.as_str()),
            Some("Completed")
        );
    }

    #[test]
    fn on_failure_stops_after_success_and_never_stops_at_once() {
        let t0 = Instant::now();
        let mut r = run(false);
        r.exited(
            0,
            None,
            t0,
            RestartPolicy::OnFailure,
            Duration::from_secs(10),
        );
        assert!(r.finished);
        assert!(matches!(&r.state, RunState::Terminated(e) if e.exit_code == 0));
        let mut r = run(false);
        r.exited(
            137,
            Some(9),
            t0,
            RestartPolicy::Never,
            Duration::from_secs(10),
        );
        assert!(r.finished);
        assert!(matches!(&r.state, RunState::Terminated(e) if e.signal == Some(9)));
    }

    #[test]
    fn init_containers_finish_on_success_and_retry_failures() {
        let t0 = Instant::now();
        let mut r = run(true);
        r.exited(2, None, t0, RestartPolicy::Always, Duration::from_secs(10));
        assert!(!r.finished);
        r.exited(0, None, t0, RestartPolicy::Always, Duration::from_secs(10));
        assert!(r.finished);
    }

    #[test]
    fn restart_count_continues_from_the_previous_agent() {
        let previous = k8s_openapi::api::core::v1::ContainerStatus {
            name: "c".into(),
            restart_count: 4,
            state: Some(k8s_openapi::api::core::v1::ContainerState {
                running: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = ContainerRun::new(Container::default(), false, Some(&previous));
        assert_eq!(r.restart_count, 4);
        assert!(r.ran_before);
    }
}
