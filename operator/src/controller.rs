//! Wiring: the kube-runtime Controller over RaftClusters (woken by changes to what they own and
//! to their pods), the metrics/health server, and one shutdown signal for both.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use raft_crds::RaftCluster;
use tracing::{info, warn};
use warp::Filter;

use crate::config::RunConfig;
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Run until `shutdown` resolves; in-flight reconciles finish first.
pub async fn run(
    client: kube::Client,
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let metrics = Arc::new(Metrics::new());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "raft-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ns = config.namespace.clone();
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
        recorder,
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = serve(config.metrics_addr, metrics, stop_rx);

    let pods_of_clusters = watcher::Config::default().labels("app.kubernetes.io/name=raft-cluster");
    let controller = Controller::new(
        api::<RaftCluster>(&client, ns.as_deref()),
        watcher::Config::default(),
    )
    .owns(
        api::<StatefulSet>(&client, ns.as_deref()),
        watcher::Config::default(),
    )
    .owns(
        api::<Service>(&client, ns.as_deref()),
        watcher::Config::default(),
    )
    .owns(
        api::<Secret>(&client, ns.as_deref()),
        watcher::Config::default(),
    )
    .owns(
        api::<PodDisruptionBudget>(&client, ns.as_deref()),
        watcher::Config::default(),
    )
    .watches(
        api::<Pod>(&client, ns.as_deref()),
        pods_of_clusters,
        |pod: Pod| {
            let instance = pod.labels().get("app.kubernetes.io/instance")?.clone();
            Some(ObjectRef::<RaftCluster>::new(&instance).within(&pod.namespace()?))
        },
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
            Err(e) => warn!(error = %e, "controller error"),
        }
    });
    let server = tokio::spawn(server);
    controller.await;
    info!("controller stopped");
    let _ = stop_tx.send(true);
    let _ = server.await;
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
