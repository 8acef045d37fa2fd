//! Backups to and restores from a PersistentVolumeClaim: each runs as a Job
//! ([`crate::resources::backup_job`]) whose pod mounts the claim and runs `raft-sidecar ctl`.
//! [`run`] creates the Job, waits for it to end within its deadline, reads the result (the last
//! line of the pod's log, JSON) and deletes the Job; a Job that failed is reported with the
//! last lines of its log, which say why.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use raft_crds::VolumeDestination;
use tracing::{info, warn};

use crate::resources::backup_job::{VolumeJob, volume_job};
use crate::resources::names::ClusterNames;

/// What every Job of a cluster needs from the reconcile.
#[derive(Debug, Clone)]
pub struct JobParams {
    /// The cluster's sidecar image (it holds `raft-sidecar ctl`).
    pub image: String,
    /// The RaftCluster, so that deleting it deletes its Jobs.
    pub owner: Option<OwnerReference>,
}

/// How often the Job is looked at while it runs.
const POLL: Duration = Duration::from_secs(2);
/// Time past the Job's own deadline to see it marked failed.
const GRACE: Duration = Duration::from_secs(120);
/// Bytes of the pod's log read for the result.
const LOG_LIMIT: i64 = 64 << 10;

/// The deadline to give a Job whose caller gives up after `outer`: early enough to see it end
/// and delete it.
pub fn job_deadline(outer: Duration) -> Duration {
    outer.saturating_sub(GRACE + Duration::from_secs(60))
}

/// The directory of a volume destination in the volume: `path`, or `<namespace>/<name>`.
pub fn directory(volume: &VolumeDestination, names: &ClusterNames) -> String {
    volume
        .path
        .as_deref()
        .map(|p| p.trim_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| format!("{}/{}", names.namespace, names.name))
}

/// How a volume destination reads in status: `pvc://CLAIM/DIR`.
pub fn location(volume: &VolumeDestination, dir: &str) -> String {
    format!("pvc://{}/{dir}", volume.claim_name)
}

/// Run `job` to its end; the last line of its output, or why it failed.
pub async fn run(
    client: &kube::Client,
    names: &ClusterNames,
    job: &VolumeJob,
) -> Result<String, String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &names.namespace);
    let created = jobs
        .create(&PostParams::default(), &volume_job(names, job))
        .await
        .map_err(|e| format!("cannot create a Job {}-…: {e}", job.name_prefix))?;
    let name = created.metadata.name.unwrap_or_default();
    info!(job = %name, pod = %job.pod, claim = %job.claim, "Job started");
    let ended = tokio::time::timeout(job.deadline + GRACE, wait(&jobs, &name)).await;
    let result = match ended {
        Ok(Ok(succeeded)) => {
            let output = last_lines(client, names, &name).await;
            match (succeeded, output) {
                (true, Ok(lines)) => lines
                    .last()
                    .cloned()
                    .ok_or_else(|| format!("the Job {name} succeeded but printed nothing")),
                (true, Err(e)) => Err(format!(
                    "the Job {name} succeeded but its log is unreadable: {e}"
                )),
                (false, Ok(lines)) => Err(format!("the Job {name} failed: {}", lines.join(" / "))),
                (false, Err(e)) => Err(format!(
                    "the Job {name} failed (its log is unreadable: {e})"
                )),
            }
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "the Job {name} did not end within {:?}",
            job.deadline + GRACE
        )),
    };
    // The result is read: the Job and its pod can go.
    if let Err(e) = jobs.delete(&name, &DeleteParams::background()).await {
        warn!(job = %name, error = %e, "cannot delete the finished Job (its TTL will)");
    }
    result
}

/// Wait for the Job to end: `true` when it succeeded.
async fn wait(jobs: &Api<Job>, name: &str) -> Result<bool, String> {
    loop {
        let job = jobs
            .get_opt(name)
            .await
            .map_err(|e| format!("cannot read the Job {name}: {e}"))?
            .ok_or_else(|| format!("the Job {name} was deleted before it ended"))?;
        if let Some(ended) = ended(&job) {
            return Ok(ended);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Some(succeeded)` once the Job has ended.
fn ended(job: &Job) -> Option<bool> {
    let status = job.status.as_ref()?;
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    if condition("Complete") {
        Some(true)
    } else if condition("Failed") {
        Some(false)
    } else {
        None
    }
}

/// The last lines of the output of the Job's pod (at most 3, non-empty).
async fn last_lines(
    client: &kube::Client,
    names: &ClusterNames,
    job: &str,
) -> Result<Vec<String>, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &names.namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .map_err(|e| format!("cannot list its pods: {e}"))?;
    let pod = list
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .next_back()
        .ok_or("it has no pod")?;
    let log = pods
        .logs(
            &pod,
            &LogParams {
                tail_lines: Some(20),
                limit_bytes: Some(LOG_LIMIT),
                ..LogParams::default()
            },
        )
        .await
        .map_err(|e| format!("cannot read the log of {pod}: {e}"))?;
    let lines: Vec<String> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let keep = lines.len().saturating_sub(3);
    Ok(lines[keep..].to_vec())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    use super::*;

    fn with(conditions: &[(&str, &str)]) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| JobCondition {
                            type_: (*t).to_owned(),
                            status: (*s).to_owned(),
                            ..JobCondition::default()
                        })
                        .collect(),
                ),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn a_job_has_ended_only_once_complete_or_failed_is_true() {
        assert_eq!(ended(&Job::default()), None);
        assert_eq!(ended(&with(&[("SuccessCriteriaMet", "True")])), None);
        assert_eq!(ended(&with(&[("Complete", "False")])), None);
        assert_eq!(
            ended(&with(&[
                ("SuccessCriteriaMet", "True"),
                ("Complete", "True")
            ])),
            Some(true)
        );
        assert_eq!(
            ended(&with(&[("FailureTarget", "True"), ("Failed", "True")])),
            Some(false)
        );
    }

    #[test]
    fn the_directory_defaults_to_the_clusters_namespace_and_name() {
        let names = ClusterNames::new("orders", "shop", "cluster.local");
        let mut volume = VolumeDestination {
            claim_name: "backups".into(),
            path: None,
        };
        assert_eq!(directory(&volume, &names), "shop/orders");
        volume.path = Some("/nightly/orders/".into());
        assert_eq!(directory(&volume, &names), "nightly/orders");
        assert_eq!(
            location(&volume, "nightly/orders"),
            "pvc://backups/nightly/orders"
        );
    }
}
