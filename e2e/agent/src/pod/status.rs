//! Pod status as the kubelet reports it, computed from the worker's view of its containers.
//! Pure: the worker owns the clock and the containers; this module only shapes `PodStatus`
//! (phase, conditions with stable transition times, containerStatuses, IPs).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A container's current state, as the worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        since: Time,
    },
    Terminated(Exit),
}

/// How a container run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub started_at: Option<Time>,
    pub finished_at: Time,
}

/// Everything the status needs about one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub pid: Option<u32>,
    pub state: RunState,
    pub last: Option<Exit>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

fn state_of(s: &RunState, container_id: Option<&str>) -> ContainerState {
    match s {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        RunState::Running { since } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(since.clone()),
            }),
            ..ContainerState::default()
        },
        RunState::Terminated(e) => ContainerState {
            terminated: Some(terminated(e, container_id)),
            ..ContainerState::default()
        },
    }
}

fn terminated(e: &Exit, container_id: Option<&str>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: e.exit_code,
        signal: e.signal,
        reason: Some(e.reason.clone()),
        started_at: e.started_at.clone(),
        finished_at: Some(e.finished_at.clone()),
        container_id: container_id.map(str::to_owned),
        message: None,
    }
}

impl ContainerView {
    pub fn to_status(&self) -> ContainerStatus {
        let id = self.pid.map(|p| format!("process://{p}"));
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            container_id: id.clone(),
            state: Some(state_of(&self.state, id.as_deref())),
            last_state: Some(
                self.last
                    .as_ref()
                    .map(|e| ContainerState {
                        terminated: Some(terminated(e, None)),
                        ..ContainerState::default()
                    })
                    .unwrap_or_default(),
            ),
            ready: self.ready,
            restart_count: self.restart_count,
            started: Some(self.started),
            ..ContainerStatus::default()
        }
    }
}

/// Condition types this agent owns (PodScheduled belongs to the scheduler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConditionType {
    PodReadyToStartContainers,
    Initialized,
    ContainersReady,
    Ready,
}

impl ConditionType {
    fn as_str(self) -> &'static str {
        match self {
            Self::PodReadyToStartContainers => "PodReadyToStartContainers",
            Self::Initialized => "Initialized",
            Self::ContainersReady => "ContainersReady",
            Self::Ready => "Ready",
        }
    }
}

/// Remembers when each condition last changed, so transition times only move on a change.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    current: BTreeMap<ConditionType, (bool, Time, Option<String>)>,
}

impl Conditions {
    pub fn set(&mut self, t: ConditionType, value: bool, reason: Option<&str>, now: &Time) {
        match self.current.get_mut(&t) {
            Some((v, _, r)) if *v == value => *r = reason.map(str::to_owned),
            _ => {
                self.current
                    .insert(t, (value, now.clone(), reason.map(str::to_owned)));
            }
        }
    }

    pub fn to_list(&self) -> Vec<PodCondition> {
        self.current
            .iter()
            .map(|(t, (v, since, reason))| PodCondition {
                type_: t.as_str().to_owned(),
                status: if *v { "True" } else { "False" }.to_owned(),
                last_transition_time: Some(since.clone()),
                reason: reason.clone(),
                ..PodCondition::default()
            })
            .collect()
    }
}

/// Pod phase per restart policy: Pending until every container has started once, Running while
/// any runs or will restart, Succeeded/Failed when all have stopped for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// `finished` says, per main container, whether it stopped for good (no restart coming).
pub fn phase(initialized: bool, containers: &[ContainerView], finished: &[bool]) -> Phase {
    if !initialized || containers.is_empty() {
        return Phase::Pending;
    }
    if containers.iter().zip(finished).all(|(_, f)| *f) {
        let all_ok = containers
            .iter()
            .all(|c| matches!(&c.state, RunState::Terminated(e) if e.exit_code == 0));
        return if all_ok {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
    }
    let ever_started = containers.iter().all(|c| {
        matches!(c.state, RunState::Running { .. })
            || c.restart_count > 0
            || c.last.is_some()
            || matches!(c.state, RunState::Terminated(_))
    });
    if ever_started {
        Phase::Running
    } else {
        Phase::Pending
    }
}

/// Inputs of one status report.
pub struct Report<'a> {
    pub phase: Phase,
    pub conditions: &'a Conditions,
    pub init_containers: &'a [ContainerView],
    pub containers: &'a [ContainerView],
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: Ipv4Addr,
    pub start_time: &'a Time,
    pub message: Option<String>,
}

pub fn pod_status(r: &Report<'_>) -> PodStatus {
    PodStatus {
        phase: Some(r.phase.as_str().to_owned()),
        conditions: Some(r.conditions.to_list()),
        container_statuses: Some(r.containers.iter().map(ContainerView::to_status).collect()),
        init_container_statuses: (!r.init_containers.is_empty()).then(|| {
            r.init_containers
                .iter()
                .map(ContainerView::to_status)
                .collect()
        }),
        pod_ip: r.pod_ip.map(|ip| ip.to_string()),
        pod_ips: r.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        host_ip: Some(r.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: r.host_ip.to_string(),
        }]),
        start_time: Some(r.start_time.clone()),
        message: r.message.clone(),
        ..PodStatus::default()
    }
}

/// The body of a strategic-merge `pods/status` patch. Absent optional fields become explicit
/// nulls where the merge would otherwise keep a stale value: a container's old `waiting` next to
/// its new `running`, a condition's old `reason`, the pod's old `message`.
pub fn patch_body(status: &PodStatus) -> serde_json::Value {
    let mut value = serde_json::json!({ "status": status });
    let Some(s) = value.get_mut("status").and_then(|s| s.as_object_mut()) else {
        return value;
    };
    s.entry("message").or_insert(serde_json::Value::Null);
    for cond in s
        .get_mut("conditions")
        .and_then(|c| c.as_array_mut())
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_object_mut())
    {
        cond.entry("reason").or_insert(serde_json::Value::Null);
        cond.entry("message").or_insert(serde_json::Value::Null);
    }
    for list in ["containerStatuses", "initContainerStatuses"] {
        for cs in s
            .get_mut(list)
            .and_then(|c| c.as_array_mut())
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_object_mut())
        {
            for field in ["state", "lastState"] {
                if let Some(state) = cs.get_mut(field).and_then(|v| v.as_object_mut()) {
                    for k in ["waiting", "running", "terminated"] {
                        state.entry(k).or_insert(serde_json::Value::Null);
                    }
                }
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn view(state: RunState) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "i".into(),
            image_id: "local:///bin/i".into(),
            pid: Some(7),
            state,
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    #[test]
    fn transition_times_move_only_when_the_value_changes() {
        let mut c = Conditions::default();
        c.set(ConditionType::Ready, false, None, &t(1));
        c.set(ConditionType::Ready, false, None, &t(2));
        assert_eq!(c.to_list()[0].last_transition_time, Some(t(1)));
        c.set(ConditionType::Ready, true, None, &t(3));
        assert_eq!(c.to_list()[0].last_transition_time, Some(t(3)));
        assert_eq!(c.to_list()[0].status, "True");
    }

    #[test]
    fn phase_follows_the_containers() {
        let waiting = view(RunState::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        });
        let running = view(RunState::Running { since: t(1) });
        let exit = |code| {
            view(RunState::Terminated(Exit {
                exit_code: code,
                signal: None,
                reason: "Completed".into(),
                started_at: None,
                finished_at: t(2),
            }))
        };
        assert_eq!(
            phase(false, std::slice::from_ref(&running), &[false]),
            Phase::Pending
        );
        assert_eq!(phase(true, &[waiting], &[false]), Phase::Pending);
        assert_eq!(phase(true, &[running], &[false]), Phase::Running);
        assert_eq!(phase(true, &[exit(0)], &[true]), Phase::Succeeded);
        assert_eq!(
            phase(true, &[exit(0), exit(1)], &[true, true]),
            Phase::Failed
        );
        assert_eq!(phase(true, &[exit(1)], &[false]), Phase::Running);
    }

    #[test]
    fn patches_null_out_the_fields_a_merge_would_keep() {
        let mut c = Conditions::default();
        c.set(ConditionType::Ready, true, None, &t(1));
        let views = [view(RunState::Running { since: t(1) })];
        let status = pod_status(&Report {
            phase: Phase::Running,
            conditions: &c,
            init_containers: &[],
            containers: &views,
            pod_ip: None,
            host_ip: Ipv4Addr::new(10, 0, 0, 1),
            start_time: &t(1),
            message: None,
        });
        let body = patch_body(&status);
        let s = &body["status"];
        assert!(s["message"].is_null() && s.get("message").is_some());
        assert!(
            s["conditions"][0]
                .get("reason")
                .is_some_and(|r| r.is_null())
        );
        let state = &s["containerStatuses"][0]["state"];
        assert!(state["running"].is_object());
        assert!(state.get("waiting").is_some_and(|w| w.is_null()));
        assert!(state.get("terminated").is_some_and(|w| w.is_null()));
    }

    #[test]
    fn container_status_carries_ids_and_restarts() {
        let mut v = view(RunState::Running { since: t(5) });
        v.restart_count = 2;
        v.ready = true;
        let s = v.to_status();
        assert_eq!(s.container_id.as_deref(), Some("process://7"));
        assert_eq!(s.restart_count, 2);
        assert!(s.ready);
        assert!(s.state.unwrap().running.is_some());
    }
}
