//! Scheduled backups (`spec.backup`): on schedule, or when the annotation
//! `consensus.unrdf.io/backup-now` takes a new value, the operator asks the leader for a
//! snapshot of everything it applied, streams it into the bucket with its manifest (or, for a
//! PersistentVolumeClaim, has a Job do that, [`volume`]), and deletes all but the newest
//! `retention` backups. The work runs in a task of its own, so a reconcile never waits for it;
//! the next reconcile records how it ended in `status.backup` and the `BackupReady` condition.
//!
//! When a backup is due and whether backups are current is decided in [`schedule`] (pure).
//! Restoring a backup into a new cluster's first member is [`restore`].

pub mod restore;
pub mod schedule;
pub mod volume;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use raft_api::backup::BackupReport;
use raft_backup::{BackupStore, S3Config};
use raft_crds::{
    BackupFailure, BackupRecord, BackupSpec, BackupStatus, Destination, S3Destination,
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::reconcile::model::Observed;
use crate::reconcile::observe::AdminAccess;
use crate::resources::backup_job::{JobTask, VolumeJob};
use schedule::{Due, Schedule};
use volume::JobParams;

/// Annotation whose new value asks for a backup at once (`kubectl raft backup now`).
pub const BACKUP_NOW_ANNOTATION: &str = "consensus.unrdf.io/backup-now";
/// Condition type.
pub const BACKUP_READY: &str = "BackupReady";
/// While a backup runs, look again this soon.
const WHILE_RUNNING: Duration = Duration::from_secs(2);
/// A backup that takes longer is abandoned and reported failed.
const DEADLINE: Duration = Duration::from_secs(60 * 60);
/// Time kept, within [`DEADLINE`], to abort an upload that ran out of it.
const ABORT_MARGIN: Duration = Duration::from_secs(60);

/// The backups in flight, one per cluster at most (keyed `namespace/name`).
#[derive(Default)]
pub struct Backups {
    running: Mutex<HashMap<String, Running>>,
    /// Results not yet seen in the cluster's status: kept until a status write carried them
    /// (a failed write must not lose a backup's result).
    finished: Mutex<HashMap<String, Finished>>,
    /// The last backup started for each cluster: what a reconcile reading a status older than
    /// its start (the watch cache lags the writes) must not take for "never started".
    started: Mutex<HashMap<String, Started>>,
}

/// When the last backup of a cluster started, and the request it answered.
#[derive(Debug, Clone, PartialEq)]
struct Started {
    at: Timestamp,
    request: Option<String>,
}

impl Started {
    /// Fold into a status that may predate this start, so that neither the schedule nor the
    /// request is taken as not yet acted on (a second backup).
    fn fold_into(&self, status: &mut BackupStatus) {
        if status
            .last_attempt_at
            .as_ref()
            .is_none_or(|t| t.0 < self.at)
        {
            status.last_attempt_at = Some(Time(self.at));
            if self.request.is_some() {
                status.request.clone_from(&self.request);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Finished {
    started_at: Timestamp,
    outcome: Result<BackupRecord, String>,
}

struct Running {
    started_at: Timestamp,
    handle: JoinHandle<Result<BackupRecord, String>>,
}

/// What one reconcile learned and decided about a cluster's backups.
#[derive(Debug, Default)]
pub struct Tick {
    pub status: Option<BackupStatus>,
    pub condition: Option<Condition>,
    /// When to look again (a backup in flight, or the next scheduled one).
    pub wake: Option<Duration>,
}

/// The inputs a tick needs from the reconcile.
pub struct ClusterBackup<'a> {
    pub spec: &'a BackupSpec,
    /// For a volume destination's Jobs.
    pub jobs: &'a JobParams,
    pub previous: Option<&'a BackupStatus>,
    pub request: Option<&'a str>,
    pub created: Timestamp,
    pub generation: Option<i64>,
    pub previous_condition: Option<&'a Condition>,
}

impl Backups {
    /// Record a finished backup, start a due one, and say when to look again.
    pub fn tick(
        &self,
        client: &kube::Client,
        o: &Observed,
        access: &AdminAccess,
        cluster: &ClusterBackup<'_>,
    ) -> Tick {
        let key = format!("{}/{}", o.names.namespace, o.names.name);
        let now = o.now;
        let mut status = cluster.previous.cloned().unwrap_or_default();
        if status.enabled_at.is_none() {
            status.enabled_at = Some(Time(now));
        }
        let since = status.enabled_at.as_ref().map_or(now, |t| t.0);
        let since = since.max(cluster.created);
        let schedule: Result<Schedule, String> = cluster.spec.schedule.parse();
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = running.get(&key)
            && task.handle.is_finished()
            && let Some(task) = running.remove(&key)
        {
            finished.insert(key.clone(), outcome_of(task));
        }
        if let Some(result) = finished.get(&key) {
            if recorded(cluster.previous, result) {
                finished.remove(&key);
            } else {
                record(&mut status, result, now);
            }
        }
        let in_flight = running.contains_key(&key);
        if !in_flight && !finished.contains_key(&key) {
            interrupted(&mut status, now);
        }
        drop(finished);
        let schedule = match schedule {
            Ok(s) => s,
            Err(message) => {
                status.next_scheduled_at = None;
                let condition =
                    backup_condition((Some(false), "InvalidSchedule", message), cluster, o.now);
                return Tick {
                    status: Some(status),
                    condition: Some(condition),
                    wake: None,
                };
            }
        };
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = started.get(&key) {
            last.fold_into(&mut status);
        }
        let due = schedule::due(&schedule, Some(&status), cluster.request, since, now);
        if let (Some(due), false) = (&due, in_flight) {
            match start(client, o, access, cluster) {
                Ok(handle) => {
                    info!(cluster = %key, ?due, "backup started");
                    running.insert(
                        key.clone(),
                        Running {
                            started_at: now,
                            handle,
                        },
                    );
                    status.last_attempt_at = Some(Time(now));
                    if let Due::Requested(value) = due {
                        status.request = Some(value.clone());
                    }
                    started.insert(
                        key.clone(),
                        Started {
                            at: now,
                            request: status.request.clone(),
                        },
                    );
                }
                // No leader to back up yet: due stays true, the next reconcile tries again (every
                // few seconds: logged at debug; `BackupReady` says when it is overdue).
                Err(why) => tracing::debug!(cluster = %key, %why, "backup due but not started"),
            }
        }
        let in_flight = running.contains_key(&key);
        drop(running);
        drop(started);
        let next = schedule.next(now);
        status.next_scheduled_at = next.map(Time);
        let condition = backup_condition(
            schedule::ready(&schedule, Some(&status), since, now),
            cluster,
            now,
        );
        let until_next = next.and_then(|n| {
            let secs = n.as_second().saturating_sub(now.as_second()).max(1);
            Some(Duration::from_secs(u64::try_from(secs).ok()?))
        });
        Tick {
            status: Some(status),
            condition: Some(condition),
            wake: if in_flight || due.is_some() {
                Some(WHILE_RUNNING)
            } else {
                until_next
            },
        }
    }
}

/// An attempt the status records as started, with neither a result nor a task here: the
/// operator that ran it restarted or lost its leadership. Reported as a failure, so the next
/// scheduled time (or request) tries again and `BackupReady` does not pretend all is well.
fn interrupted(status: &mut BackupStatus, now: Timestamp) {
    let Some(started) = status.last_attempt_at.as_ref().map(|t| t.0) else {
        return;
    };
    let succeeded = status
        .last_successful
        .as_ref()
        .is_some_and(|s| s.started_at.0 >= started);
    let failed = status
        .last_failure
        .as_ref()
        .is_some_and(|f| f.at.0 >= started);
    if !succeeded && !failed {
        status.last_failure = Some(BackupFailure {
            at: Time(now.max(started)),
            message: format!(
                "the backup started at {started} was interrupted (the operator restarted or \
                 lost its leadership)"
            ),
        });
    }
}

fn outcome_of(task: Running) -> Finished {
    let outcome = match task.handle.now_or_never() {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(format!("the backup task failed: {e}")),
        None => Err("the backup task ended without a result".into()),
    };
    match &outcome {
        Ok(record) => info!(backup = %record.name, location = %record.location, "backup completed"),
        Err(message) => warn!(%message, "backup failed"),
    }
    Finished {
        started_at: task.started_at,
        outcome,
    }
}

/// Whether the status already carries this result (a status write after it succeeded).
fn recorded(previous: Option<&BackupStatus>, result: &Finished) -> bool {
    let Some(previous) = previous else {
        return false;
    };
    match &result.outcome {
        Ok(record) => previous
            .last_successful
            .as_ref()
            .is_some_and(|s| s.name == record.name),
        Err(_) => previous
            .last_failure
            .as_ref()
            .is_some_and(|f| f.at.0 >= result.started_at),
    }
}

fn record(status: &mut BackupStatus, result: &Finished, now: Timestamp) {
    match &result.outcome {
        Ok(record) => {
            status.last_successful = Some(record.clone());
            status.last_failure = None;
        }
        Err(message) => {
            status.last_failure = Some(BackupFailure {
                at: Time(now.max(result.started_at)),
                message: message.clone(),
            });
        }
    }
}

fn backup_condition(
    (state, reason, message): (Option<bool>, &'static str, String),
    cluster: &ClusterBackup<'_>,
    now: Timestamp,
) -> Condition {
    let status = match state {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    };
    let last = cluster
        .previous_condition
        .filter(|c| c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: BACKUP_READY.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: last,
        observed_generation: cluster.generation,
    }
}

/// Start a backup of the cluster's leader, or say why not.
fn start(
    client: &kube::Client,
    o: &Observed,
    access: &AdminAccess,
    cluster: &ClusterBackup<'_>,
) -> Result<JoinHandle<Result<BackupRecord, String>>, String> {
    let leader = o.leader.as_ref().ok_or("the cluster has no leader")?;
    let pod = o
        .names
        .ordinal_of(&leader.pod)
        .and_then(|i| o.pods.get(&i))
        .ok_or_else(|| format!("the leader {} has no pod", leader.pod))?;
    let ip = pod
        .ip
        .as_deref()
        .ok_or_else(|| format!("the leader {} has no IP", leader.pod))?;
    let retention = usize::try_from(cluster.spec.retention.max(1)).unwrap_or(1);
    let work = match cluster.spec.destination() {
        Some(Destination::S3(s3)) => {
            let admin = access.client(&pod.name, ip, pod.admin_port)?;
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &o.names.namespace);
            let prefix = s3
                .prefix
                .clone()
                .unwrap_or_else(|| format!("{}/{}", o.names.namespace, o.names.name));
            let s3 = s3.clone();
            let leader_pod = leader.pod.clone();
            async move {
                let started = Instant::now();
                let config = s3_config(&secrets, &s3, prefix).await?;
                let store = BackupStore::s3(&config).map_err(|e| e.to_string())?;
                admin
                    .snapshot()
                    .await
                    .map_err(|e| format!("snapshot on {leader_pod}: {e}"))?;
                let name = raft_backup::new_name(std::time::SystemTime::now());
                // Ends before the task's own deadline, so the upload is aborted (no parts left
                // in the bucket) rather than dropped.
                let left = DEADLINE.saturating_sub(started.elapsed() + ABORT_MARGIN);
                let manifest = store
                    .upload_within(&admin, &name, Some(left))
                    .await
                    .map_err(|e| e.to_string())?;
                store.prune(retention).await.map_err(|e| e.to_string())?;
                Ok::<_, String>((name, store.location().to_owned(), manifest))
            }
            .boxed()
        }
        Some(Destination::Volume(volume)) => {
            let dir = volume::directory(volume, &o.names);
            let job = VolumeJob {
                name_prefix: format!("{}-backup", o.names.name),
                image: cluster.jobs.image.clone(),
                claim: volume.claim_name.clone(),
                dir: dir.clone(),
                pod: leader.pod.clone(),
                task: JobTask::Backup {
                    keep: u32::try_from(retention).unwrap_or(u32::MAX),
                },
                deadline: volume::job_deadline(DEADLINE),
                owner: cluster.jobs.owner.clone(),
            };
            let location = volume::location(volume, &dir);
            let client = client.clone();
            let names = o.names.clone();
            async move {
                let line = volume::run(&client, &names, &job).await?;
                let report: BackupReport = serde_json::from_str(&line).map_err(|e| {
                    format!("the backup Job's result is not a report ({e}): {line}")
                })?;
                Ok((report.name, location, report.manifest))
            }
            .boxed()
        }
        None => return Err("spec.backup names no single destination".into()),
    };
    Ok(tokio::spawn(async move {
        let started = Instant::now();
        let started_at = Timestamp::now();
        match tokio::time::timeout(DEADLINE, work).await {
            Ok(Ok((name, location, manifest))) => Ok(BackupRecord {
                name,
                location,
                started_at: Time(started_at),
                duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
                size_bytes: i64::try_from(manifest.size_bytes).unwrap_or(i64::MAX),
                last_log_index: i64::try_from(manifest.last_log_index).unwrap_or(i64::MAX),
                journal_last_index: i64::try_from(manifest.journal_last_index).unwrap_or(i64::MAX),
                sha256: manifest.sha256,
            }),
            Ok(Err(message)) => Err(message),
            Err(_) => Err(format!("not done within {DEADLINE:?}")),
        }
    }))
}

/// The bucket and credentials of `spec.s3`; the Secret is read at each backup, so rotated
/// credentials are used from the next one on.
pub(crate) async fn s3_config(
    secrets: &Api<Secret>,
    s3: &S3Destination,
    prefix: String,
) -> Result<S3Config, String> {
    let name = &s3.credentials_secret;
    let secret = secrets
        .get(name)
        .await
        .map_err(|e| format!("cannot read Secret {name}: {e}"))?;
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| -> Option<String> {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let required = |key: &str| value(key).ok_or_else(|| format!("Secret {name} has no {key}"));
    Ok(S3Config {
        bucket: s3.bucket.clone(),
        prefix,
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        access_key_id: required("AWS_ACCESS_KEY_ID")?,
        secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
        session_token: value("AWS_SESSION_TOKEN"),
    })
}

#[cfg(test)]
mod tests {
    use raft_crds::BackupRecord;

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_status_older_than_the_last_start_does_not_make_the_same_backup_due_again() {
        let last = Started {
            at: at("2026-12-06T03:00:00Z"),
            request: Some("7".into()),
        };
        // The cache still holds the status from before that start.
        let mut stale = BackupStatus {
            last_attempt_at: Some(Time(at("2026-12-06T02:00:00Z"))),
            request: Some("6".into()),
            ..BackupStatus::default()
        };
        last.fold_into(&mut stale);
        assert_eq!(stale.last_attempt_at, Some(Time(last.at)));
        assert_eq!(stale.request.as_deref(), Some("7"));
        // A newer status is left as it is.
        let mut newer = BackupStatus {
            last_attempt_at: Some(Time(at("2026-12-06T04:00:00Z"))),
            request: Some("8".into()),
            ..BackupStatus::default()
        };
        last.fold_into(&mut newer);
        assert_eq!(newer.request.as_deref(), Some("8"));
    }

    #[test]
    fn a_result_is_kept_until_a_status_write_carried_it() {
        let started = at("2026-12-06T03:00:00Z");
        let done = Finished {
            started_at: started,
            outcome: Ok(BackupRecord {
                name: "a.rsnp".into(),
                location: "s3://b/p".into(),
                started_at: Time(started),
                duration_ms: 1,
                size_bytes: 1,
                last_log_index: 1,
                journal_last_index: 1,
                sha256: "ab".into(),
            }),
        };
        assert!(!recorded(None, &done));
        let mut status = BackupStatus::default();
        assert!(
            !recorded(Some(&status), &done),
            "the write has not happened yet"
        );
        record(&mut status, &done, at("2026-12-06T03:00:05Z"));
        assert!(recorded(Some(&status), &done));
        let failed = Finished {
            started_at: at("2026-12-06T04:00:00Z"),
            outcome: Err("no leader".into()),
        };
        assert!(!recorded(Some(&status), &failed));
        record(&mut status, &failed, at("2026-12-06T04:00:01Z"));
        assert!(recorded(Some(&status), &failed));
        assert_eq!(status.last_successful.unwrap().name, "a.rsnp", "kept");
    }

    #[test]
    fn an_attempt_without_a_result_or_a_task_is_reported_interrupted_once() {
        let mut status = BackupStatus {
            last_attempt_at: Some(Time(at("2026-12-06T03:00:00Z"))),
            ..BackupStatus::default()
        };
        interrupted(&mut status, at("2026-12-06T03:00:30Z"));
        let failure = status.last_failure.clone().unwrap();
        assert!(
            failure.message.contains("interrupted"),
            "{}",
            failure.message
        );
        interrupted(&mut status, at("2026-12-06T03:01:00Z"));
        assert_eq!(status.last_failure, Some(failure), "reported once");

        let mut done = BackupStatus {
            last_attempt_at: Some(Time(at("2026-12-06T03:00:00Z"))),
            last_successful: Some(BackupRecord {
                name: "a.rsnp".into(),
                location: "s3://b/p".into(),
                started_at: Time(at("2026-12-06T03:00:00Z")),
                duration_ms: 1,
                size_bytes: 1,
                last_log_index: 1,
                journal_last_index: 1,
                sha256: "ab".into(),
            }),
            ..BackupStatus::default()
        };
        interrupted(&mut done, at("2026-12-06T03:00:30Z"));
        assert_eq!(done.last_failure, None, "it completed");
    }
}
