//! Wiring: the kube-runtime Controller over RaftClusters (woken by changes to what they own and
//! to their pods), the metrics/health server, one shutdown signal for both, and — with leader
//! election — the Lease that decides whether this replica runs the controllers at all.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::join_all;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use raft_crds::RaftCluster;
use tokio::sync::{oneshot, watch};
use tokio::time::{Duration, Instant};
use tracing::{error, info, warn};
use warp::Filter;

use crate::config::RunConfig;
use crate::leader::{Elector, LeaderError};
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::resources::names::MANAGED_BY_US;

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run until `shutdown` resolves; in-flight reconciles finish first, within
/// `config.shutdown_grace` (then they are abandoned). With leader election the
/// controllers start only once this replica holds the Lease; losing it returns an error at once,
/// without waiting for in-flight reconciles (a standby may already be taking over), and the
/// caller exits non-zero so that the Deployment restarts the process as a fresh standby.
pub async fn run(
    client: kube::Client,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), LeaderError> {
    let metrics = Arc::new(Metrics::new());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "raft-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    // `validate` refused a bad selector before we got here.
    let operator_pods = config.operator_pods().ok().flatten();
    if operator_pods.is_none() {
        warn!(
            "--pod-namespace/--pod-selector unset: NetworkPolicies admit the admin port only from spec.networkPolicy.adminFrom"
        );
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: config.clone(),
        operator_pods,
        metrics: metrics.clone(),
        recorder,
        backups: Default::default(),
        restores: Default::default(),
    });

    // One signal fanned out to every controller, carrying the instant the grace ends; the
    // metrics server stops after them.
    let grace = config.shutdown_grace;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(None::<Instant>);
    tokio::spawn(async move {
        shutdown.await;
        // `validate` caps the grace, so the sum cannot overflow.
        let _ = shutdown_tx.send(Some(Instant::now() + grace));
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Served while a standby too: /healthz and /readyz answer ok and raft_operator_leader is 0.
    let server = tokio::spawn(serve(config.metrics_addr, metrics.clone(), stop_rx));

    let election = config.leader_election.election(client.default_namespace());
    let leadership = match election {
        None => None,
        Some(election) => {
            info!(namespace = %election.namespace, lease = %election.name,
                identity = %election.identity, "standby until this replica holds the leader Lease");
            let lost_silently = LeaderError::RenewDeadline {
                namespace: election.namespace.clone(),
                name: election.name.clone(),
                lease_duration: election.lease_duration,
            };
            let mut elector = Elector::new(client.clone(), election);
            let mut standby_shutdown = shutdown_rx.clone();
            tokio::select! {
                () = elector.acquire() => {}
                () = signalled(&mut standby_shutdown) => {
                    info!("shutdown while standby");
                    let _ = stop_tx.send(true);
                    stop_server(server, &shutdown_rx).await;
                    return Ok(());
                }
            }
            Some((hold(elector), lost_silently))
        }
    };
    metrics.set_leader(true);

    // kube-runtime watches one namespace or all: one controller per watched namespace.
    let scopes: Vec<Option<&str>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config
            .namespaces
            .iter()
            .map(|ns| Some(ns.as_str()))
            .collect()
    };
    info!(namespaces = ?config.namespaces, "watching RaftClusters (all namespaces if empty)");
    let controllers = join_all(scopes.into_iter().map(|ns| {
        let mut shutdown = shutdown_rx.clone();
        controller(&client, ns, ctx.clone(), async move {
            signalled(&mut shutdown).await;
        })
    }));
    let result = drain(controllers, leadership, &shutdown_rx, grace).await;
    metrics.set_leader(false);
    info!("controller stopped");
    let _ = stop_tx.send(true);
    if result.is_ok() {
        stop_server(server, &shutdown_rx).await;
    }
    result
}

/// How the controllers ended after the shutdown signal.
enum Drained {
    /// Every in-flight reconcile finished within the grace.
    Finished,
    /// The grace ended first; the reconciles were dropped.
    Abandoned,
}

/// Wait for the controllers to stop (they stop taking work at the signal and finish what is
/// in flight), for at most the grace. If this replica holds the Lease, it gives it up once they
/// finished, and leaves it to expire when the grace ended first. A lost Lease ends the wait at
/// once, with its error.
async fn drain(
    controllers: impl Future<Output = Vec<()>>,
    leadership: Option<(Leadership, LeaderError)>,
    shutdown: &watch::Receiver<Option<Instant>>,
    grace: Duration,
) -> Result<(), LeaderError> {
    let mut grace_rx = shutdown.clone();
    let past_grace = past_grace(&mut grace_rx);
    let Some((
        Leadership {
            lost,
            release,
            task,
        },
        lost_silently,
    )) = leadership
    else {
        tokio::select! {
            _ = controllers => {}
            () = past_grace => warn_abandoned(grace),
        }
        return Ok(());
    };
    let drained = tokio::select! {
        _ = controllers => Ok(Drained::Finished),
        () = past_grace => Ok(Drained::Abandoned),
        why = lost => Err(why),
    };
    match drained {
        Ok(Drained::Finished) => {
            // Held until here so that no standby starts while reconciles finish.
            let _ = release.send(());
            let left = remaining(shutdown).max(AFTER_GRACE_AT_LEAST);
            if tokio::time::timeout(left, task).await.is_err() {
                warn!(waited = ?left, "the leader Lease was not released in time; a standby takes over when it expires");
            }
            Ok(())
        }
        Ok(Drained::Abandoned) => {
            warn_abandoned(grace);
            // Not released: writes the dropped reconciles sent may still land, and the Lease
            // running out is what keeps a standby from acting beside them. The renewing task
            // is gone before `release` is dropped (its closing would read as "release").
            task.abort();
            let _ = task.await;
            drop(release);
            warn!("the leader Lease is left to expire; a standby takes over then");
            Ok(())
        }
        Err(why) => {
            // A renewing task gone without a word no longer renews: lost as well.
            let why = why.unwrap_or(lost_silently);
            error!(error = %why, "stopping the controllers");
            Err(why)
        }
    }
}

/// What the Lease release and the metrics server's drain each get even when the reconciles used
/// up the grace (one short API call; closing idle connections).
const AFTER_GRACE_AT_LEAST: Duration = Duration::from_secs(1);

/// Resolves once the shutdown signal came (never if its sender is gone without one).
async fn signalled(shutdown: &mut watch::Receiver<Option<Instant>>) {
    if shutdown.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once the grace that followed the shutdown signal is over.
async fn past_grace(shutdown: &mut watch::Receiver<Option<Instant>>) {
    signalled(shutdown).await;
    let end = *shutdown.borrow();
    if let Some(end) = end {
        tokio::time::sleep_until(end).await;
    }
}

/// Time left of the grace (all of it before the signal came).
fn remaining(shutdown: &watch::Receiver<Option<Instant>>) -> Duration {
    let end = *shutdown.borrow();
    end.map_or(Duration::MAX, |end| {
        end.saturating_duration_since(Instant::now())
    })
}

/// Log that the grace ended with reconciles still in flight.
fn warn_abandoned(grace: Duration) {
    warn!(
        ?grace,
        "in-flight reconciles did not finish within the shutdown grace; abandoned (the next leader resumes them)"
    );
}

/// The metrics server closes its connections; a client that keeps one open is not waited for
/// past the grace.
async fn stop_server(
    server: tokio::task::JoinHandle<()>,
    shutdown: &watch::Receiver<Option<Instant>>,
) {
    let left = remaining(shutdown).max(AFTER_GRACE_AT_LEAST);
    if tokio::time::timeout(left, server).await.is_err() {
        warn!("the metrics server did not stop in time; exiting anyway");
    }
}

/// The renewing side of an acquired Lease: `lost` says why it was lost; a message on `release`
/// stops renewing and gives the Lease up.
struct Leadership {
    lost: oneshot::Receiver<LeaderError>,
    release: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn hold(mut elector: Elector) -> Leadership {
    let (lost_tx, lost) = oneshot::channel();
    let (release, release_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tokio::select! {
            why = elector.hold() => {
                let _ = lost_tx.send(why);
            }
            _ = release_rx => {
                if let Err(e) = elector.release().await {
                    warn!(error = %e, "could not release the leader Lease; a standby takes over when it expires");
                }
            }
        }
    });
    Leadership {
        lost,
        release,
        task,
    }
}

/// The controller of one namespace (or all). It caches only objects the operator labels as
/// its own (`app.kubernetes.io/managed-by`), never every Secret of the namespace.
async fn controller(
    client: &kube::Client,
    ns: Option<&str>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let owned = || watcher::Config::default().labels(MANAGED_BY_US);
    let pods_of_clusters = watcher::Config::default().labels("app.kubernetes.io/name=raft-cluster");
    Controller::new(api::<RaftCluster>(client, ns), watcher::Config::default())
        .owns(api::<StatefulSet>(client, ns), owned())
        .owns(api::<Service>(client, ns), owned())
        // By label, not owner: the token Secret has no owner reference (it outlives its
        // RaftCluster), and its deletion must wake the cluster at once.
        .watches(api::<Secret>(client, ns), owned(), cluster_of::<Secret>)
        .owns(api::<PodDisruptionBudget>(client, ns), owned())
        .owns(api::<NetworkPolicy>(client, ns), owned())
        .watches(api::<Pod>(client, ns), pods_of_clusters, cluster_of::<Pod>)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => warn!(error = %e, "controller error"),
            }
        })
        .await;
}

/// The RaftCluster an object belongs to, by its `app.kubernetes.io/instance` label.
fn cluster_of<K: ResourceExt>(object: K) -> Option<ObjectRef<RaftCluster>> {
    let instance = object.labels().get("app.kubernetes.io/instance")?;
    Some(ObjectRef::new(instance).within(&object.namespace()?))
}

/// `/metrics` (OpenMetrics), `/healthz` and `/readyz`.
async fn serve(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let metrics_route =
        warp::path!("metrics")
            .and(warp::get())
            .map(move || match metrics.encode() {
                Ok(text) => warp::http::Response::builder()
                    .header(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(text),
                Err(_) => warp::http::Response::builder()
                    .status(500)
                    .body("failed to encode metrics".to_owned()),
            });
    let health = warp::path!("healthz")
        .or(warp::path!("readyz"))
        .map(|_| "ok".to_owned());
    let routes = metrics_route.or(health);
    let server = warp::serve(routes).bind(addr).await;
    info!(%addr, "serving /metrics, /healthz, /readyz");
    server
        .graceful(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run()
        .await;
}
