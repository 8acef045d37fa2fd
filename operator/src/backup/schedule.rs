//! When a cluster's backup is due and whether its backups are current: pure functions of the
//! schedule, what the status recorded and the time, tested without a cluster.

use std::str::FromStr;

use k8s_openapi::jiff::Timestamp;
use raft_crds::BackupStatus;

/// A five-field cron schedule, evaluated in UTC.
#[derive(Debug, Clone)]
pub struct Schedule(croner::Cron);

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(s.trim())
            .map(Schedule)
            .map_err(|e| format!("backup.schedule {s:?}: {e}"))
    }
}

fn to_chrono(t: Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.as_second(), 0)
}

fn from_chrono(t: chrono::DateTime<chrono::Utc>) -> Option<Timestamp> {
    Timestamp::from_second(t.timestamp()).ok()
}

impl Schedule {
    /// The latest occurrence at or before `now`.
    pub fn previous(&self, now: Timestamp) -> Option<Timestamp> {
        let t = self
            .0
            .find_previous_occurrence(&to_chrono(now)?, true)
            .ok()?;
        from_chrono(t)
    }

    /// The first occurrence after `now`.
    pub fn next(&self, now: Timestamp) -> Option<Timestamp> {
        let t = self.0.find_next_occurrence(&to_chrono(now)?, false).ok()?;
        from_chrono(t)
    }
}

/// Why a backup starts now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The `consensus.unrdf.io/backup-now` annotation took a value not acted on yet.
    Requested(String),
    /// A scheduled time passed since the last attempt (and since the cluster was created).
    Scheduled,
}

/// Whether a backup is due at `now`. `created` is when backups began for this cluster (the
/// RaftCluster's creation, or `spec.backup` first seen): a schedule whose last occurrence
/// precedes it does not start one at once.
pub fn due(
    schedule: &Schedule,
    status: Option<&BackupStatus>,
    request: Option<&str>,
    created: Timestamp,
    now: Timestamp,
) -> Option<Due> {
    let acted_on = status.and_then(|s| s.request.as_deref());
    if let Some(request) = request
        && Some(request) != acted_on
    {
        return Some(Due::Requested(request.to_owned()));
    }
    let last_attempt = status
        .and_then(|s| s.last_attempt_at.as_ref())
        .map_or(created, |t| t.0.max(created));
    let previous = schedule.previous(now)?;
    (previous > last_attempt).then_some(Due::Scheduled)
}

/// The `BackupReady` condition: `Some(true)` when the newest successful backup is no older
/// than the previous scheduled time but one, `Some(false)` when the last attempt failed or
/// backups are overdue, `None` (Unknown) before the schedule has had the chance to run twice.
pub fn ready(
    schedule: &Schedule,
    status: Option<&BackupStatus>,
    created: Timestamp,
    now: Timestamp,
) -> (Option<bool>, &'static str, String) {
    let success = status.and_then(|s| s.last_successful.as_ref());
    let failure = status.and_then(|s| s.last_failure.as_ref());
    if let Some(f) = failure
        && success.is_none_or(|s| f.at.0 > s.started_at.0)
    {
        return (
            Some(false),
            BACKUP_FAILED,
            format!("the last backup failed: {}", f.message),
        );
    }
    // A backup may miss one occurrence (it ran late or is running); two is overdue.
    let overdue_before = schedule
        .previous(now)
        .and_then(|p| schedule.previous(p - k8s_openapi::jiff::SignedDuration::from_secs(1)));
    match (success, overdue_before) {
        (Some(s), Some(limit)) if s.started_at.0 < limit => (
            Some(false),
            BACKUP_OVERDUE,
            format!(
                "the newest backup, {}, started at {}: the scheduled backup of {limit} did not \
                 complete",
                s.name, s.started_at.0
            ),
        ),
        (Some(s), _) => (
            Some(true),
            BACKUP_SUCCEEDED,
            format!("{} in {} ({} bytes)", s.name, s.location, s.size_bytes),
        ),
        (None, Some(limit)) if limit > created => (
            Some(false),
            BACKUP_OVERDUE,
            format!("no backup has completed; one was scheduled at {limit}"),
        ),
        (None, _) => (None, NO_BACKUP_YET, "no backup has run yet".into()),
    }
}

pub const BACKUP_SUCCEEDED: &str = "BackupSucceeded";
pub const BACKUP_FAILED: &str = "BackupFailed";
pub const BACKUP_OVERDUE: &str = "BackupOverdue";
pub const NO_BACKUP_YET: &str = "NoBackupYet";

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use raft_crds::{BackupFailure, BackupRecord};

    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn hourly() -> Schedule {
        "0 * * * *".parse().unwrap()
    }

    fn success(started: &str) -> BackupRecord {
        BackupRecord {
            name: "b.rsnp".into(),
            location: "s3://b/p".into(),
            started_at: Time(at(started)),
            duration_ms: 10,
            size_bytes: 100,
            last_log_index: 5,
            journal_last_index: 4,
            sha256: "00".into(),
        }
    }

    #[test]
    fn six_fields_and_nonsense_are_not_schedules() {
        assert!("0 0 * * * *".parse::<Schedule>().is_err());
        assert!("every hour".parse::<Schedule>().is_err());
        let s = hourly();
        assert_eq!(
            s.previous(at("2026-12-06T10:30:00Z")),
            Some(at("2026-12-06T10:00:00Z"))
        );
        assert_eq!(
            s.next(at("2026-12-06T10:00:00Z")),
            Some(at("2026-12-06T11:00:00Z"))
        );
    }

    #[test]
    fn a_backup_is_due_once_per_occurrence_and_not_for_one_before_the_cluster_existed() {
        let s = hourly();
        let created = at("2026-12-06T10:05:00Z");
        assert_eq!(
            due(&s, None, None, created, at("2026-12-06T10:30:00Z")),
            None
        );
        assert_eq!(
            due(&s, None, None, created, at("2026-12-06T11:00:10Z")),
            Some(Due::Scheduled)
        );
        let attempted = BackupStatus {
            last_attempt_at: Some(Time(at("2026-12-06T11:00:10Z"))),
            ..BackupStatus::default()
        };
        let later = at("2026-12-06T11:40:00Z");
        assert_eq!(due(&s, Some(&attempted), None, created, later), None);
        assert_eq!(
            due(
                &s,
                Some(&attempted),
                None,
                created,
                at("2026-12-06T12:00:01Z")
            ),
            Some(Due::Scheduled)
        );
    }

    #[test]
    fn a_new_annotation_value_asks_for_one_backup() {
        let s = hourly();
        let created = at("2026-12-06T10:05:00Z");
        let now = at("2026-12-06T10:30:00Z");
        assert_eq!(
            due(&s, None, Some("1"), created, now),
            Some(Due::Requested("1".into()))
        );
        let acted = BackupStatus {
            request: Some("1".into()),
            last_attempt_at: Some(Time(now)),
            ..BackupStatus::default()
        };
        assert_eq!(due(&s, Some(&acted), Some("1"), created, now), None);
        assert_eq!(
            due(&s, Some(&acted), Some("2"), created, now),
            Some(Due::Requested("2".into()))
        );
    }

    #[test]
    fn backups_are_ready_until_two_occurrences_pass_without_one() {
        let s = hourly();
        let created = at("2026-12-06T09:30:00Z");
        let ok = BackupStatus {
            last_successful: Some(success("2026-12-06T10:00:01Z")),
            ..BackupStatus::default()
        };
        let (state, reason, _) = ready(&s, Some(&ok), created, at("2026-12-06T11:10:00Z"));
        assert_eq!((state, reason), (Some(true), BACKUP_SUCCEEDED));
        let (state, reason, message) = ready(&s, Some(&ok), created, at("2026-12-06T12:10:00Z"));
        assert_eq!((state, reason), (Some(false), BACKUP_OVERDUE), "{message}");
        let (state, reason, _) = ready(&s, None, created, at("2026-12-06T10:20:00Z"));
        assert_eq!((state, reason), (None, NO_BACKUP_YET));
        let (state, reason, _) = ready(&s, None, created, at("2026-12-06T11:20:00Z"));
        assert_eq!((state, reason), (Some(false), BACKUP_OVERDUE));
    }

    #[test]
    fn a_failure_after_the_last_success_makes_backups_not_ready() {
        let s = hourly();
        let created = at("2026-12-06T09:30:00Z");
        let failed = BackupStatus {
            last_successful: Some(success("2026-12-06T10:00:01Z")),
            last_failure: Some(BackupFailure {
                at: Time(at("2026-12-06T11:00:05Z")),
                message: "Secret s3 not found".into(),
            }),
            ..BackupStatus::default()
        };
        let (state, reason, message) =
            ready(&s, Some(&failed), created, at("2026-12-06T11:10:00Z"));
        assert_eq!((state, reason), (Some(false), BACKUP_FAILED));
        assert!(message.contains("Secret s3 not found"), "{message}");
    }
}
