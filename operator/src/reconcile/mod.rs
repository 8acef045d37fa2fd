//! The reconcile pipeline for one `RaftCluster`: observe → plan → apply → status.
//! `plan` and the condition logic in `status` are pure; `observe` and `apply` do the I/O;
//! [`reconcile`] runs the stages in order and announces what happened (Events, metrics).

pub mod apply;
pub mod events;
pub mod model;
pub mod observe;
pub mod plan;
pub mod sidecar_metrics;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::Recorder;
use kube::{Resource, ResourceExt};
use raft_crds::{RaftCluster, RaftClusterStatus, RestoredFromStatus};
use tracing::{info, warn};

use crate::backup::volume::JobParams;
use crate::config::RunConfig;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::resources::ca_rotation::{InUse, ROTATE_CA_ANNOTATION};
use crate::resources::cert_manager::{self, Certificate, Issued};
use crate::resources::names::{ClusterNames, FIELD_MANAGER};
use crate::resources::sidecar_image::{
    self, ImageSource, SidecarInputs, UPGRADE_SIDECAR_ANNOTATION,
};
use crate::resources::tls::ClusterPki;
use crate::resources::{ClusterSecret, OperatorPods, StatefulSetParams};
use observe::AdminAccess;
use plan::Step;

/// Shared by every reconcile.
pub struct Context {
    pub client: kube::Client,
    pub config: RunConfig,
    /// Admitted to the admin port by each cluster's NetworkPolicy (parsed from `config`).
    pub operator_pods: Option<OperatorPods>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Scheduled backups in flight.
    pub backups: crate::backup::Backups,
    /// Failed restores (`spec.bootstrap.fromBackup`), for the back-off between attempts.
    pub restores: crate::backup::restore::Attempts,
}

/// One pass of the pipeline for one cluster.
pub async fn reconcile(rc: Arc<RaftCluster>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = match fresh(&rc, &ctx.client).await {
        Ok(Some(rc)) => run_pipeline(&rc, &ctx).await,
        Ok(None) => Ok(Requeue::await_change()),
        Err(e) => Err(e),
    };
    ctx.metrics.reconciled(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::category),
    );
    result
}

/// The RaftCluster as the API server has it now; `None` once it is gone. The controller hands
/// over its cached copy, which can predate this operator's own last status write (a pod event
/// may wake the next reconcile before the watch delivers that write): a status built on it
/// would undo the write, since server-side apply drops what the patch leaves out. Seen as a
/// restored cluster's `restoredFrom.backup` overwritten with "(not recorded)".
async fn fresh(rc: &RaftCluster, client: &kube::Client) -> Result<Option<RaftCluster>, Error> {
    let namespace = rc
        .namespace()
        .ok_or(Error::InvalidObject("metadata.namespace"))?;
    let name = rc.name_any();
    Api::<RaftCluster>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("get raftcluster {name}")))
}

async fn run_pipeline(rc: &RaftCluster, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = rc
        .namespace()
        .ok_or(Error::InvalidObject("metadata.namespace"))?;
    let names = ClusterNames::new(&rc.name_any(), &namespace, &ctx.config.cluster_domain);
    let timeout = ctx.config.sidecar_timeout;

    // observe
    let observation = observe::observe(&ctx.client, rc, &names, timeout).await?;
    let o = observation.observed;
    let secret = match observation.secret {
        Some(secret) => secret,
        None => match identity_evidence(&o) {
            // A new identity would lock the members out of their own data: say so and wait.
            Some(evidence) => return identity_lost(rc, ctx, &names, &o, &evidence).await,
            None => ClusterSecret::generate(),
        },
    };

    // plan
    let plan = plan::plan(&o);
    // Certificates for every pod that exists or may be made before the next reconcile.
    let members = plan
        .statefulset_replicas
        .max(o.desired_replicas)
        .max(o.statefulset.as_ref().map_or(0, |s| s.replicas))
        .saturating_add(1);
    let now = SystemTime::now();
    let in_use: InUse = o
        .pods
        .values()
        .map(|p| (p.name.clone(), p.status().and_then(|s| s.tls.clone())))
        .collect();
    let issuer = rc.spec.tls.as_ref().and_then(|t| t.issuer_ref.as_ref());
    let mut ca_changing = false;
    let (pki, rotation) = match (issuer, &observation.issued) {
        (Some(issuer), Some(issued)) => {
            apply::apply_certificates(&ctx.client, rc, &names, issuer, members).await?;
            // The spare pod's certificate is handed out when issued, not waited for.
            let needed = members.saturating_sub(1);
            let written = observation.pki.as_ref();
            match cert_manager::next(&names, written, issued, &in_use, needed, 1, now) {
                Ok(handout) => {
                    ca_changing = handout.ca_changing;
                    (handout.pki, None)
                }
                Err(pending) => {
                    return certificates_pending(rc, ctx, &names, &o, issuer, issued, &pending)
                        .await;
                }
            }
        }
        _ => {
            let (existing, rotation) = match observation.pki {
                Some(pki) => {
                    let request = rc
                        .annotations()
                        .get(ROTATE_CA_ANNOTATION)
                        .map(String::as_str);
                    let (pki, step) = pki.rotate(&names, request, &in_use, now)?;
                    (Some(pki), step)
                }
                None => (None, None),
            };
            (
                ClusterPki::ensure(existing, &names, members, now)?,
                rotation,
            )
        }
    };
    let access = AdminAccess {
        token: secret.token.clone(),
        tls: Some(pki.operator_tls()),
        names: names.clone(),
        timeout,
    };

    let previous = rc.status.clone().unwrap_or_default();
    let sidecar = choose_sidecar(rc, &o, &previous, &ctx.config.sidecar_image);
    let jobs = JobParams {
        image: sidecar.image.clone(),
        owner: rc.controller_owner_ref(&()),
    };

    // apply: owned objects at the planned size, then the step's action
    let sts = StatefulSetParams {
        replicas: i32::try_from(plan.statefulset_replicas).unwrap_or(i32::MAX),
        sidecar_image: sidecar.image.clone(),
        sidecar_upgrade_request: sidecar.acted_on.clone(),
        applied: o.statefulset.as_ref().map(|s| s.applied.clone()),
        spec_reconciled: o.generation.is_some() && o.generation == previous.observed_generation,
    };
    let owned = apply::OwnedObjects {
        secret: &secret,
        pki: &pki,
        statefulset: &sts,
        operator_pods: ctx.operator_pods.as_ref(),
    };
    apply::apply_owned(&ctx.client, rc, &names, &owned).await?;
    let mut cluster_id = previous.cluster_id.clone();
    let mut done = Done::default();
    let operation = match &plan.step {
        Step::Idle => None,
        Step::Wait { operation, .. } => operation.clone(),
        Step::Record(op) => Some(op.clone()),
        Step::Act { action, next } => act(ctx, &o, &access, &jobs, action, next, &mut done).await?,
        Step::Finish(outcome) => {
            match outcome {
                plan::Outcome::Initialized { cluster_id: id } => cluster_id = Some(id.clone()),
                plan::Outcome::Restored {
                    cluster_id: id,
                    from,
                } => {
                    cluster_id = Some(id.clone());
                    done.restored = from.clone().map(Restored::Reported);
                }
                _ => {}
            }
            None
        }
        Step::Adopt { cluster_id: id } => {
            cluster_id = Some(id.clone());
            None
        }
    };

    // status
    let mut new_status = status::build(&o, &plan, &previous, operation, cluster_id);
    if let Some(restored) = done.restored {
        restored.record(&mut new_status);
    }
    if let Some(waiting) = &done.restore_failure {
        status::restore_failed(&mut new_status, waiting);
    }
    if let Some(why) = &done.recovery_refused {
        status::recovery_refused(&mut new_status, why, o.now);
    }
    new_status.sidecar_image = Some(sidecar.image);
    new_status.sidecar_upgrade_request = sidecar.acted_on;
    let backup = backups(rc, ctx, &o, &access, &previous, &jobs);
    new_status.backup = backup.status;
    new_status.conditions.extend(backup.condition);
    write_status(&ctx.client, rc, &names, &new_status).await?;
    ctx.metrics
        .observe_cluster(&names.namespace, &names.name, rc.spec.replicas, &new_status);
    let reference = rc.object_ref(&());
    let rotated = rotation.map(|step| {
        info!(cluster = %names.name, ?step, "CA rotation");
        events::ca_rotation(step)
    });
    let announced = events::announce(&plan, Some(&names.namespace), &previous, &new_status);
    for event in rotated
        .into_iter()
        .chain(done.restore_event)
        .chain(announced)
    {
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(cluster = %names.name, error = %e, "failed to publish an Event");
        }
    }

    // A CA rotation, or a change of the issuer's CA, moves on when members have reloaded
    // files, which wakes no watch.
    let busy = new_status.operation.is_some()
        || !matches!(plan.step, Step::Idle)
        || pki.rotating()
        || ca_changing;
    let requeue = if busy {
        ctx.config.requeue_active
    } else {
        ctx.config.requeue_idle
    };
    Ok(Requeue::requeue(
        backup.wake.map_or(requeue, |w| w.min(requeue)),
    ))
}

/// What acting on a step left for the status and the Events, besides the step's progress.
#[derive(Default)]
struct Done {
    restored: Option<Restored>,
    /// A failed restore waiting for its next attempt.
    restore_failure: Option<crate::backup::restore::Waiting>,
    restore_event: Option<kube::runtime::events::Event>,
    /// Why the survivor refused a recovery.
    recovery_refused: Option<String>,
}

/// Carry out the plan's action; the step's progress to record. A restore that fails is tried
/// again after a back-off (the step stays as it was); a recovery the survivor refuses ends the
/// step; any other failure fails the reconcile.
async fn act(
    ctx: &Context,
    o: &model::Observed,
    access: &AdminAccess,
    jobs: &JobParams,
    action: &plan::Action,
    next: &raft_crds::OperationStatus,
    done: &mut Done,
) -> Result<Option<raft_crds::OperationStatus>, Error> {
    let names = &o.names;
    let key = format!("{}/{}", names.namespace, names.name);
    if matches!(action, plan::Action::RestoreFromBackup { .. })
        && let Some(waiting) = ctx.restores.waiting(&key, Instant::now())
    {
        done.restore_failure = Some(waiting);
        return Ok(o.operation.clone());
    }
    info!(cluster = %names.name, ?action, "acting on the recorded step");
    match (
        action,
        apply::act(&ctx.client, o, action, access, jobs).await,
    ) {
        (_, Ok(acted)) => {
            if let plan::Action::RestoreFromBackup { .. } = action {
                ctx.restores.succeeded(&key);
            }
            if let apply::Acted::Restored(Some(staged)) = acted {
                done.restored = Some(Restored::Staged(staged));
            }
            Ok(Some(next.clone()))
        }
        (plan::Action::RestoreFromBackup { .. }, Err(e)) => {
            let message = e.to_string();
            warn!(cluster = %names.name, error = %message, "restoring the backup failed");
            let retry_in = ctx.restores.failed(&key, message.clone(), Instant::now());
            done.restore_failure = ctx.restores.waiting(&key, Instant::now());
            done.restore_event = Some(events::restore_failed(&message, retry_in));
            Ok(o.operation.clone())
        }
        // The survivor's own check said no: the step ends, the request is answered.
        (plan::Action::Recover { .. }, Err(Error::Sidecar { source, .. }))
            if source.code() == Some(raft_api::ErrorCode::Refused) =>
        {
            warn!(cluster = %names.name, error = %source, "the survivor refused the recovery");
            done.recovery_refused = Some(source.to_string());
            Ok(None)
        }
        (_, Err(e)) => Err(e),
    }
}

/// What this reconcile learned of a restore (`spec.bootstrap.fromBackup`).
enum Restored {
    /// The backup this reconcile staged in the first member.
    Staged(crate::backup::restore::Staged),
    /// What the restored member reports once it leads; fills in what a lost status write did
    /// not record (the backup's name is then unknown).
    Reported(raft_api::admin::RestoredFrom),
}

impl Restored {
    fn record(self, status: &mut RaftClusterStatus) {
        match self {
            Restored::Staged(staged) => {
                status.parent_cluster_id = Some(staged.parent_cluster_id);
                status.restored_from = Some(staged.from);
            }
            Restored::Reported(from) => {
                if status.parent_cluster_id.is_none() {
                    status.parent_cluster_id = from.parent_cluster_id;
                }
                status
                    .restored_from
                    .get_or_insert_with(|| RestoredFromStatus {
                        backup: "(not recorded)".into(),
                        snapshot_id: from.snapshot_id,
                        last_log_index: i64::try_from(from.last_log_index).unwrap_or(i64::MAX),
                        last_log_term: i64::try_from(from.last_log_term).unwrap_or(i64::MAX),
                        sha256: from.sha256,
                    });
            }
        }
    }
}

/// This reconcile's part of the scheduled backups ([`crate::backup`]); nothing without
/// `spec.backup`.
fn backups(
    rc: &RaftCluster,
    ctx: &Context,
    o: &model::Observed,
    access: &AdminAccess,
    previous: &RaftClusterStatus,
    jobs: &JobParams,
) -> crate::backup::Tick {
    let Some(spec) = &rc.spec.backup else {
        return crate::backup::Tick::default();
    };
    let created = rc
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(o.now, |t| t.0);
    let cluster = crate::backup::ClusterBackup {
        spec,
        jobs,
        previous: previous.backup.as_ref(),
        request: rc
            .annotations()
            .get(crate::backup::BACKUP_NOW_ANNOTATION)
            .map(String::as_str),
        created,
        generation: o.generation,
        previous_condition: previous
            .conditions
            .iter()
            .find(|c| c.type_ == crate::backup::BACKUP_READY),
    };
    ctx.backups.tick(&ctx.client, o, access, &cluster)
}

/// The sidecar image this reconcile applies and records ([`sidecar_image::choose`]).
fn choose_sidecar(
    rc: &RaftCluster,
    o: &model::Observed,
    previous: &RaftClusterStatus,
    default: &str,
) -> sidecar_image::SidecarChoice {
    let choice = sidecar_image::choose(&SidecarInputs {
        spec: rc.spec.sidecar.image.as_deref(),
        request: rc
            .annotations()
            .get(UPGRADE_SIDECAR_ANNOTATION)
            .map(String::as_str),
        recorded: previous.sidecar_image.as_deref(),
        acted_on: previous.sidecar_upgrade_request.as_deref(),
        running: o.statefulset.as_ref().and_then(|s| s.sidecar_image()),
        default,
    });
    if choice.source == ImageSource::UpgradeRequested {
        info!(cluster = %o.names.name, image = %choice.image, "sidecar upgrade requested");
    }
    choice
}

/// Why the cluster has an identity already, if it has one: what a token Secret that is missing
/// must not be regenerated over. (Pods cannot be asked: without the token there is no call.)
fn identity_evidence(o: &model::Observed) -> Option<String> {
    match &o.cluster_id {
        Some(id) => Some(format!("status.clusterId is {id}")),
        None if !o.pvcs.is_empty() => Some(format!(
            "{} data volume(s) of this cluster exist",
            o.pvcs.len()
        )),
        None => None,
    }
}

/// The token Secret is gone but the identity is not: report `Degraded`/`IdentityLost` with an
/// Event, change nothing else, and look again soon.
async fn identity_lost(
    rc: &RaftCluster,
    ctx: &Context,
    names: &ClusterNames,
    o: &model::Observed,
    evidence: &str,
) -> Result<Requeue, Error> {
    let message = format!(
        "Secret {secret} is missing but {evidence}: a new token and cluster id would lock the \
         members out of their data, so none is made. Restore {secret} (keys token and \
         cluster-id; see docs/operator.md, \"Identity lost\"), or delete the volumes to start \
         a new cluster",
        secret = names.secret()
    );
    warn!(cluster = %names.name, %message, "cluster identity lost");
    blocked(rc, ctx, names, o, status::IDENTITY_LOST, message).await
}

/// With `spec.tls.issuerRef`: certificates the cluster needs are not issued yet. Say which,
/// with cert-manager's word on each, and wait (a Secret cert-manager writes wakes the
/// controller).
async fn certificates_pending(
    rc: &RaftCluster,
    ctx: &Context,
    names: &ClusterNames,
    o: &model::Observed,
    issuer: &raft_crds::IssuerRef,
    issued: &Issued,
    pending: &cert_manager::Pending,
) -> Result<Requeue, Error> {
    let certificates: Api<Certificate> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut why = Vec::new();
    for name in &pending.missing {
        let word = match issued.unfit(name) {
            Some(unfit) => format!("its Secret is unusable: {unfit}"),
            None => match certificates.get_opt(name).await {
                Ok(Some(c)) => c.not_ready().unwrap_or_else(|| "not issued yet".to_owned()),
                Ok(None) => "no Certificate".to_owned(),
                Err(e) => format!("cannot read the Certificate: {e}"),
            },
        };
        why.push(format!("{name} ({word})"));
    }
    let message = format!(
        "waiting for cert-manager to issue certificates from {} {}/{}: {}",
        issuer.kind,
        issuer.group,
        issuer.name,
        why.join("; ")
    );
    info!(cluster = %names.name, %message, "certificates pending");
    blocked(rc, ctx, names, o, status::CERTIFICATES_PENDING, message).await
}

/// The reconcile cannot go on: `Degraded` with `reason` in the status, an Event when the
/// reason is new, and a requeue.
async fn blocked(
    rc: &RaftCluster,
    ctx: &Context,
    names: &ClusterNames,
    o: &model::Observed,
    reason: &'static str,
    message: String,
) -> Result<Requeue, Error> {
    let previous = rc.status.clone().unwrap_or_default();
    let status = status::blocked(&previous, o.generation, o.now, reason, message.clone());
    write_status(&ctx.client, rc, names, &status).await?;
    ctx.metrics
        .observe_cluster(&names.namespace, &names.name, rc.spec.replicas, &status);
    if previous.conditions.iter().all(|c| c.reason != reason) {
        let event = events::blocked(reason, message);
        if let Err(e) = ctx.recorder.publish(&event, &rc.object_ref(&())).await {
            warn!(cluster = %names.name, error = %e, "failed to publish an Event");
        }
    }
    Ok(Requeue::requeue(ctx.config.requeue_active))
}

async fn write_status(
    client: &kube::Client,
    rc: &RaftCluster,
    names: &ClusterNames,
    status: &RaftClusterStatus,
) -> Result<(), Error> {
    let api: Api<RaftCluster> = Api::namespaced(client.clone(), &names.namespace);
    let patch = serde_json::json!({
        "apiVersion": RaftCluster::api_version(&()),
        "kind": RaftCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &rc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!(
        "write status of raftcluster {}",
        names.name
    )))?;
    Ok(())
}

/// After a failed reconcile: retry soon, and say why in an Event.
pub fn error_policy(rc: Arc<RaftCluster>, error: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(cluster = %rc.name_any(), category = error.category(), %error, "reconcile failed");
    let event = events::failure(error);
    let reference = rc.object_ref(&());
    let recorder = ctx.recorder.clone();
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(error = %e, "failed to publish an Event");
        }
    });
    Requeue::requeue(ctx.config.requeue_active.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::fixtures::healthy;

    #[test]
    fn a_missing_token_secret_is_made_anew_only_for_a_cluster_without_an_identity() {
        let mut o = healthy(3);
        let recorded = identity_evidence(&o).unwrap();
        assert!(recorded.contains("rc-cafe"), "{recorded}");
        o.cluster_id = None;
        o.pvcs = [0, 2].into();
        let volumes = identity_evidence(&o).unwrap();
        assert!(volumes.contains("2 data volume"), "{volumes}");
        o.pvcs.clear();
        assert_eq!(
            identity_evidence(&o),
            None,
            "a new cluster gets a new identity"
        );
    }
}
