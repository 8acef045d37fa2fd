//! The reconciler against a mocked API server: every expected call (method, path, and the key
//! fields of its body) must arrive in order; a missing call times out and an unexpected one
//! fails. The first reconcile of a new RaftCluster creates its objects by server-side apply at
//! the spec's size and writes a status saying it waits for its pods.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use raft_crds::{RaftCluster, RaftClusterSpec};
use raft_operator::config::RunConfig;
use raft_operator::metrics::Metrics;
use raft_operator::reconcile::{Context, reconcile};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

type Mock = Handle<Request<Body>, Response<Body>>;

fn not_found() -> Response<Body> {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from(serde_json::to_vec(&status).unwrap()))
        .unwrap()
}

fn ok(body: Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn empty_list(kind: &str) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
}

/// Take the next request, check its method and path, hand back its body and the responder.
async fn expect(
    mock: &mut Mock,
    method: &str,
    path: &str,
) -> (Value, SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), mock.next_request())
        .await
        .unwrap_or_else(|_| panic!("expected {method} {path}, but no request came"))
        .unwrap_or_else(|| panic!("expected {method} {path}, but the client went away"));
    assert_eq!(request.method().as_str(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path, "{method}");
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

fn cluster() -> RaftCluster {
    let mut rc = RaftCluster::new("prod", RaftClusterSpec::default());
    rc.metadata.namespace = Some("team-a".into());
    rc.metadata.uid = Some("6c3b0e8e-0000-4000-8000-000000000001".into());
    rc.metadata.generation = Some(1);
    rc
}

fn config() -> RunConfig {
    RunConfig {
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        namespace: None,
        cluster_domain: "cluster.local".into(),
        sidecar_image: "raft-sidecar:test".into(),
        sidecar_timeout: Duration::from_secs(1),
        requeue_active: Duration::from_secs(2),
        requeue_idle: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn the_first_reconcile_applies_every_owned_object_at_the_spec_size_and_reports_waiting() {
    let (service, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: config(),
        metrics: Arc::new(Metrics::new()),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "raft-operator".into(),
                instance: None,
            },
        ),
    });

    let server = tokio::spawn(async move {
        let ns = "/api/v1/namespaces/team-a";
        let (_, send) = expect(&mut mock, "GET", &format!("{ns}/secrets/prod-token")).await;
        send.send_response(not_found());
        let (_, send) = expect(
            &mut mock,
            "GET",
            "/apis/apps/v1/namespaces/team-a/statefulsets/prod",
        )
        .await;
        send.send_response(not_found());
        let (_, send) = expect(&mut mock, "GET", &format!("{ns}/pods")).await;
        send.send_response(ok(empty_list("PodList")));
        let (_, send) = expect(&mut mock, "GET", &format!("{ns}/persistentvolumeclaims")).await;
        send.send_response(ok(empty_list("PersistentVolumeClaimList")));

        // Server-side apply of the owned objects, each owned by the RaftCluster.
        let (secret, send) = expect(&mut mock, "PATCH", &format!("{ns}/secrets/prod-token")).await;
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["kind"],
            "RaftCluster"
        );
        assert_eq!(secret["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(secret["data"]["token"].is_string() && secret["data"]["cluster-id"].is_string());
        send.send_response(ok(secret));
        let (svc, send) = expect(&mut mock, "PATCH", &format!("{ns}/services/prod")).await;
        assert_eq!(svc["spec"]["clusterIP"], "None");
        assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
        send.send_response(ok(svc));
        let (pdb, send) = expect(
            &mut mock,
            "PATCH",
            "/apis/policy/v1/namespaces/team-a/poddisruptionbudgets/prod",
        )
        .await;
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        send.send_response(ok(pdb));
        let (sts, send) = expect(
            &mut mock,
            "PATCH",
            "/apis/apps/v1/namespaces/team-a/statefulsets/prod",
        )
        .await;
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
        send.send_response(ok(sts));

        // Status through the status subresource: waiting for the pods, nothing recorded.
        let (status, send) = expect(
            &mut mock,
            "PATCH",
            "/apis/consensus.unrdf.io/v1alpha1/namespaces/team-a/raftclusters/prod/status",
        )
        .await;
        let s = &status["status"];
        assert_eq!(s["phase"], "Pending");
        assert!(s.get("operation").is_none() && s.get("clusterId").is_none());
        let progressing = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Progressing")
            .unwrap();
        assert_eq!(progressing["reason"], "WaitingForPods");
        send.send_response(ok(json!({"apiVersion": "consensus.unrdf.io/v1alpha1", "kind": "RaftCluster", "metadata": {"name": "prod", "namespace": "team-a"}, "spec": {"replicas": 3}})));
        mock
    });

    let requeue = reconcile(Arc::new(cluster()), ctx).await.unwrap();
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
    let mut mock = server.await.unwrap();
    // Nothing else was called (no Events for a plain wait): the client went away unused.
    if let Ok(Some((extra, _))) =
        tokio::time::timeout(Duration::from_millis(200), mock.next_request()).await
    {
        panic!(
            "unexpected extra request {} {}",
            extra.method(),
            extra.uri()
        );
    }
}
