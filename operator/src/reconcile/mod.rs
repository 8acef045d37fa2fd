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
use raft_crds::{RaftCluster, RaftClusterStatus};
use tracing::{info, warn};

use crate::config::RunConfig;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::resources::names::{ClusterNames, FIELD_MANAGER};
use crate::resources::tls::ClusterPki;
use crate::resources::{ClusterSecret, StatefulSetParams};
use observe::AdminAccess;
use plan::Step;

/// Shared by every reconcile.
pub struct Context {
    pub client: kube::Client,
    pub config: RunConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

/// One pass of the pipeline for one cluster.
pub async fn reconcile(rc: Arc<RaftCluster>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = run_pipeline(&rc, &ctx).await;
    ctx.metrics.reconciled(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::category),
    );
    result
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
    let secret = observation.secret.unwrap_or_else(ClusterSecret::generate);

    // plan
    let plan = plan::plan(&o);
    // Certificates for every pod that exists or may be made before the next reconcile.
    let members = plan
        .statefulset_replicas
        .max(o.desired_replicas)
        .max(o.statefulset.as_ref().map_or(0, |s| s.replicas))
        .saturating_add(1);
    let pki = ClusterPki::ensure(observation.pki, &names, members, SystemTime::now())?;
    let access = AdminAccess {
        token: secret.token.clone(),
        tls: Some(pki.operator_tls()),
        names: names.clone(),
        timeout,
    };

    // apply: owned objects at the planned size, then the step's action
    let sts = StatefulSetParams {
        replicas: i32::try_from(plan.statefulset_replicas).unwrap_or(i32::MAX),
        default_sidecar_image: ctx.config.sidecar_image.clone(),
    };
    apply::apply_owned(&ctx.client, rc, &names, &secret, &pki, &sts).await?;
    let previous = rc.status.clone().unwrap_or_default();
    let mut cluster_id = previous.cluster_id.clone();
    let operation = match &plan.step {
        Step::Idle => None,
        Step::Wait { operation, .. } => operation.clone(),
        Step::Record(op) => Some(op.clone()),
        Step::Act { action, next } => {
            info!(cluster = %names.name, ?action, "acting on the recorded step");
            apply::act(&ctx.client, &o, action, &access).await?;
            Some(next.clone())
        }
        Step::Finish(outcome) => {
            if let plan::Outcome::Initialized { cluster_id: id } = outcome {
                cluster_id = Some(id.clone());
            }
            None
        }
        Step::Adopt { cluster_id: id } => {
            cluster_id = Some(id.clone());
            None
        }
    };

    // status
    let new_status = status::build(&o, &plan, &previous, operation, cluster_id);
    write_status(&ctx.client, rc, &names, &new_status).await?;
    ctx.metrics
        .observe_cluster(&names.namespace, &names.name, rc.spec.replicas, &new_status);
    let reference = rc.object_ref(&());
    for event in events::announce(&plan, Some(&names.namespace), &previous, &new_status) {
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(cluster = %names.name, error = %e, "failed to publish an Event");
        }
    }

    let busy = new_status.operation.is_some() || !matches!(plan.step, Step::Idle);
    Ok(Requeue::requeue(if busy {
        ctx.config.requeue_active
    } else {
        ctx.config.requeue_idle
    }))
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
