//! Restoring `spec.bootstrap.fromBackup` into a new cluster's first member: the backup's
//! manifest and image are read from the bucket and the image is streamed, as it arrives, into
//! the member's `POST /admin/v1/restore`, which checks it against the manifest, stages it and
//! restarts onto it. Nothing is held whole in memory or written to the operator's disk. From a
//! PersistentVolumeClaim, a Job that mounts it does the same ([`super::volume`]).
//!
//! Run by the apply stage for the plan's `Action::RestoreFromBackup`; the reconcile waits for
//! it, within [`DEADLINE`]. A restore that failed (a damaged backup, a wrong bucket) is tried
//! again after a back-off ([`Attempts`]), not at every reconcile: each try downloads the image.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use raft_api::ErrorCode;
use raft_api::admin::RestoreResult;
use raft_api::backup::{BackupManifest, RestoreReport};
use raft_api::client::SidecarClient;
use raft_backup::BackupStore;
use raft_crds::{
    Destination, FromBackupSpec, LATEST_BACKUP, RestoredFromStatus, S3Destination,
    VolumeDestination,
};
use tracing::info;

use super::volume::JobParams;
use crate::error::Error;
use crate::resources::backup_job::{JobTask, VolumeJob};
use crate::resources::names::ClusterNames;

/// Longest a restore may take, from reading the manifest to the member's answer.
pub const DEADLINE: Duration = Duration::from_secs(60 * 60);

/// A backup staged in the first member.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    /// The cluster the backup was taken from.
    pub parent_cluster_id: String,
    pub from: RestoredFromStatus,
}

/// Stream the backup `from` names into `pod`. `None`: the member had already staged a backup
/// and is restarting onto it (an earlier call whose answer was lost).
pub async fn restore(
    client: &kube::Client,
    names: &ClusterNames,
    pod: &str,
    sidecar: &SidecarClient,
    from: &FromBackupSpec,
    jobs: &JobParams,
) -> Result<Option<Staged>, Error> {
    let failed = failed_in(pod);
    let work = async {
        match from.source() {
            Some(Destination::S3(s3)) => {
                from_bucket(client, names, pod, sidecar, s3, &from.backup).await
            }
            Some(Destination::Volume(volume)) => {
                from_volume(client, names, pod, volume, &from.backup, jobs)
                    .await
                    .map_err(failed)
            }
            None => Err(failed(
                "spec.bootstrap.fromBackup names no single source".into(),
            )),
        }
    };
    match tokio::time::timeout(DEADLINE, work).await {
        Ok(result) => result,
        Err(_) => Err(failed(format!("not done within {DEADLINE:?}"))),
    }
}

/// The operator streams the image from the bucket into the member.
async fn from_bucket(
    client: &kube::Client,
    names: &ClusterNames,
    pod: &str,
    sidecar: &SidecarClient,
    s3: &S3Destination,
    backup: &str,
) -> Result<Option<Staged>, Error> {
    let failed = failed_in(pod);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    let prefix = s3.prefix.clone().unwrap_or_default();
    let config = super::s3_config(&secrets, s3, prefix)
        .await
        .map_err(failed)?;
    let store = BackupStore::s3(&config).map_err(|e| failed(e.to_string()))?;
    let (name, manifest) = if backup == LATEST_BACKUP {
        let newest = store.latest().await.map_err(|e| failed(e.to_string()))?;
        (newest.name, newest.manifest)
    } else {
        let manifest = store
            .manifest(backup)
            .await
            .map_err(|e| failed(e.to_string()))?;
        (backup.to_owned(), manifest)
    };
    let image = store
        .open_image(&name)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let location = format!("{}/{name}", store.location());
    info!(%pod, backup = %location, size = manifest.size_bytes, "restoring a backup into the first member");
    match sidecar.restore(&manifest, image, DEADLINE).await {
        Ok(done) => Ok(Some(staged(location, manifest, &done))),
        // Staged by an earlier call: the member is on its way down to start on it.
        Err(e) if e.code() == Some(ErrorCode::ShuttingDown) => Ok(None),
        Err(source) => Err(Error::Sidecar {
            pod: pod.to_owned(),
            call: "restore",
            source,
        }),
    }
}

/// A Job mounts the volume and sends the image into the member ([`super::volume`]).
async fn from_volume(
    client: &kube::Client,
    names: &ClusterNames,
    pod: &str,
    volume: &VolumeDestination,
    backup: &str,
    jobs: &JobParams,
) -> Result<Option<Staged>, String> {
    let dir = super::volume::directory(volume, names);
    let job = VolumeJob {
        name_prefix: format!("{}-restore", names.name),
        image: jobs.image.clone(),
        claim: volume.claim_name.clone(),
        dir: dir.clone(),
        pod: pod.to_owned(),
        task: JobTask::Restore {
            backup: backup.to_owned(),
        },
        deadline: super::volume::job_deadline(DEADLINE),
        owner: jobs.owner.clone(),
    };
    info!(%pod, claim = %volume.claim_name, %dir, %backup, "restoring a backup into the first member through a Job");
    let line = super::volume::run(client, names, &job).await?;
    let report: RestoreReport = serde_json::from_str(&line)
        .map_err(|e| format!("the restore Job's result is not a report ({e}): {line}"))?;
    let location = format!("{}/{}", super::volume::location(volume, &dir), report.name);
    Ok(report
        .result
        .map(|done| staged(location, report.manifest, &done)))
}

/// Makes the error of a restore into `pod` that failed for the reason given.
fn failed_in(pod: &str) -> impl Fn(String) -> Error + Copy + '_ {
    move |reason| Error::Restore {
        pod: pod.to_owned(),
        reason,
    }
}

fn staged(location: String, manifest: BackupManifest, done: &RestoreResult) -> Staged {
    info!(snapshot = %done.snapshot_id, last_log_index = done.last_log_index, "backup staged; the member restarts onto it");
    Staged {
        parent_cluster_id: manifest.cluster_id,
        from: RestoredFromStatus {
            backup: location,
            snapshot_id: done.snapshot_id.clone(),
            last_log_index: i64::try_from(done.last_log_index).unwrap_or(i64::MAX),
            last_log_term: i64::try_from(done.last_log_term).unwrap_or(i64::MAX),
            sha256: manifest.sha256,
        },
    }
}

/// First wait after a failed restore; doubled after each further failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// Failed restores by cluster (`namespace/name`), for the back-off between attempts. In memory:
/// a restarted operator tries once at once, then backs off again.
#[derive(Default)]
pub struct Attempts {
    failed: Mutex<HashMap<String, Failed>>,
}

#[derive(Debug, Clone)]
struct Failed {
    at: Instant,
    count: u32,
    message: String,
}

/// A restore not to try yet: why the last one failed and how long until the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub message: String,
    pub failures: u32,
    pub retry_in: Duration,
}

impl Attempts {
    /// `Some` while the back-off after the last failure lasts.
    pub fn waiting(&self, cluster: &str, now: Instant) -> Option<Waiting> {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let f = failed.get(cluster)?;
        let until = f.at + backoff(f.count);
        (now < until).then(|| Waiting {
            message: f.message.clone(),
            failures: f.count,
            retry_in: until - now,
        })
    }

    /// Record a failure; returns the back-off before the next attempt.
    pub fn failed(&self, cluster: &str, message: String, now: Instant) -> Duration {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failed.get(cluster).map_or(0, |f| f.count) + 1;
        failed.insert(
            cluster.to_owned(),
            Failed {
                at: now,
                count,
                message,
            },
        );
        backoff(count)
    }

    pub fn succeeded(&self, cluster: &str) {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(cluster);
    }
}

fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_restore_waits_longer_after_each_failure_up_to_the_cap_and_success_clears_it() {
        let attempts = Attempts::default();
        let t0 = Instant::now();
        assert_eq!(attempts.waiting("ns/c", t0), None);
        assert_eq!(attempts.failed("ns/c", "damaged".into(), t0), FIRST_BACKOFF);
        let w = attempts
            .waiting("ns/c", t0 + Duration::from_secs(4))
            .unwrap();
        assert_eq!((w.message.as_str(), w.failures), ("damaged", 1));
        assert_eq!(w.retry_in, Duration::from_secs(6));
        assert_eq!(attempts.waiting("ns/c", t0 + FIRST_BACKOFF), None);
        assert_eq!(attempts.waiting("ns/other", t0), None);
        assert_eq!(
            attempts.failed("ns/c", "damaged".into(), t0),
            FIRST_BACKOFF * 2
        );
        for _ in 0..10 {
            attempts.failed("ns/c", "damaged".into(), t0);
        }
        assert_eq!(attempts.waiting("ns/c", t0).unwrap().retry_in, MAX_BACKOFF);
        attempts.succeeded("ns/c");
        assert_eq!(attempts.waiting("ns/c", t0), None);
    }
}
