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

const RC_UID: &str = "6c3b0e8e-0000-4000-8000-000000000001";

/// Answer to the metadata GET the operator makes before applying: an object it controls.
fn ours(name: &str) -> Response<Body> {
    ok(
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "namespace": "team-a", "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "consensus.unrdf.io/v1alpha1", "kind": "RaftCluster",
                "name": "prod", "uid": RC_UID, "controller": true}]}}),
    )
}

/// Expect the metadata GET of `path`, answer with `answer`, then expect its PATCH.
async fn expect_apply(
    mock: &mut Mock,
    path: &str,
    answer: Response<Body>,
) -> (Value, SendResponse<Response<Body>>) {
    let (_, send) = expect(mock, "GET", path).await;
    send.send_response(answer);
    expect(mock, "PATCH", path).await
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

/// Expect a LIST of `path` selecting only the cluster's objects by label.
async fn expect_list(mock: &mut Mock, path: &str) -> SendResponse<Response<Body>> {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), mock.next_request())
        .await
        .unwrap_or_else(|_| panic!("expected GET {path}, but no request came"))
        .unwrap_or_else(|| panic!("expected GET {path}, but the client went away"));
    assert_eq!(request.method().as_str(), "GET", "{}", request.uri());
    assert_eq!(request.uri().path(), path);
    let query = request.uri().query().unwrap_or_default();
    assert!(
        query.contains("labelSelector=app.kubernetes.io%2Finstance%3Dprod"),
        "{path} listed without the cluster's selector: {query:?}"
    );
    send
}

fn cluster() -> RaftCluster {
    let mut rc = RaftCluster::new("prod", RaftClusterSpec::default());
    rc.metadata.namespace = Some("team-a".into());
    rc.metadata.uid = Some(RC_UID.into());
    rc.metadata.generation = Some(1);
    rc
}

fn config() -> RunConfig {
    RunConfig {
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        namespaces: Vec::new(),
        pod_namespace: None,
        pod_selector: None,
        cluster_domain: "cluster.local".into(),
        sidecar_image: "raft-sidecar:test".into(),
        sidecar_timeout: Duration::from_secs(1),
        api_timeout: Duration::from_secs(30),
        requeue_active: Duration::from_secs(2),
        requeue_idle: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(2),
        leader_election: Default::default(),
    }
}

/// The reconcile's first read: the RaftCluster as the API server has it, here `rc`.
async fn serve_fresh_read(mock: &mut Mock, rc: &RaftCluster) {
    let (_, send) = expect(mock, "GET", RC_PATH).await;
    let mut body = serde_json::to_value(rc).unwrap();
    body["apiVersion"] = json!("consensus.unrdf.io/v1alpha1");
    body["kind"] = json!("RaftCluster");
    send.send_response(ok(body));
}

/// The reads of a new cluster's first reconcile: nothing exists yet.
async fn serve_reads_of_a_new_cluster(mock: &mut Mock) {
    serve_fresh_read(mock, &cluster()).await;
    let ns = "/api/v1/namespaces/team-a";
    for secret in ["prod-token", "prod-ca", "prod-tls"] {
        let (_, send) = expect(mock, "GET", &format!("{ns}/secrets/{secret}")).await;
        send.send_response(not_found());
    }
    let (_, send) = expect(
        mock,
        "GET",
        "/apis/apps/v1/namespaces/team-a/statefulsets/prod",
    )
    .await;
    send.send_response(not_found());
    let send = expect_list(mock, &format!("{ns}/pods")).await;
    send.send_response(ok(empty_list("PodList")));
    let send = expect_list(mock, &format!("{ns}/persistentvolumeclaims")).await;
    send.send_response(ok(empty_list("PersistentVolumeClaimList")));
}

fn mock_context() -> (Arc<Context>, Mock) {
    let (service, mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (context(kube::Client::new(service, "default")), mock)
}

#[tokio::test]
async fn a_service_of_the_same_name_that_the_cluster_does_not_control_is_never_applied_over() {
    let (ctx, mut mock) = mock_context();
    let server = tokio::spawn(async move {
        let ns = "/api/v1/namespaces/team-a";
        serve_reads_of_a_new_cluster(&mut mock).await;
        for secret in ["prod-token", "prod-ca", "prod-tls"] {
            let (body, send) =
                expect_apply(&mut mock, &format!("{ns}/secrets/{secret}"), not_found()).await;
            send.send_response(ok(body));
        }
        // Someone else's Service named like the cluster: no owner reference to it.
        let (_, send) = expect(&mut mock, "GET", &format!("{ns}/services/prod")).await;
        send.send_response(ok(
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "prod", "namespace": "team-a", "uid": "uid-theirs"}}),
        ));
        mock
    });
    let err = reconcile(Arc::new(cluster()), ctx).await.unwrap_err();
    assert_eq!(err.category(), "NotOwned", "{err}");
    assert!(err.to_string().contains("Service prod"), "{err}");
    let mut mock = server.await.unwrap();
    if let Ok(Some((extra, _))) =
        tokio::time::timeout(Duration::from_millis(200), mock.next_request()).await
    {
        panic!(
            "nothing may follow the refusal, got {} {}",
            extra.method(),
            extra.uri()
        );
    }
}

#[tokio::test]
async fn the_first_reconcile_applies_every_owned_object_at_the_spec_size_and_reports_waiting() {
    let (service, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = Arc::new(Context {
        client: client.clone(),
        config: config(),
        operator_pods: None,
        metrics: Arc::new(Metrics::new()),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "raft-operator".into(),
                instance: None,
            },
        ),
        backups: Default::default(),
        restores: Default::default(),
    });

    let server = tokio::spawn(async move {
        let ns = "/api/v1/namespaces/team-a";
        serve_reads_of_a_new_cluster(&mut mock).await;

        // Server-side apply of the owned objects, each owned by the RaftCluster.
        let (secret, send) =
            expect_apply(&mut mock, &format!("{ns}/secrets/prod-token"), not_found()).await;
        // The identity outlives the RaftCluster, as its volumes do: no owner reference.
        assert!(
            secret["metadata"].get("ownerReferences").is_none(),
            "{secret}"
        );
        assert!(secret["data"]["token"].is_string() && secret["data"]["cluster-id"].is_string());
        send.send_response(ok(secret));
        // A new CA (never mounted) and a certificate per pod, one spare for the next step.
        let (ca, send) =
            expect_apply(&mut mock, &format!("{ns}/secrets/prod-ca"), not_found()).await;
        assert_eq!(ca["metadata"]["ownerReferences"][0]["kind"], "RaftCluster");
        assert_eq!(ca["metadata"]["ownerReferences"][0]["controller"], true);
        for key in ["ca.crt", "ca.key", "operator.crt", "operator.key"] {
            assert!(ca["data"][key].is_string(), "prod-ca has no {key}");
        }
        send.send_response(ok(ca));
        let (tls, send) =
            expect_apply(&mut mock, &format!("{ns}/secrets/prod-tls"), not_found()).await;
        let keys: Vec<&String> = tls["data"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "ca.crt",
                "prod-0.crt",
                "prod-0.key",
                "prod-1.crt",
                "prod-1.key",
                "prod-2.crt",
                "prod-2.key",
                "prod-3.crt",
                "prod-3.key"
            ]
        );
        send.send_response(ok(tls));
        let (svc, send) =
            expect_apply(&mut mock, &format!("{ns}/services/prod"), not_found()).await;
        assert_eq!(svc["spec"]["clusterIP"], "None");
        assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
        send.send_response(ok(svc));
        let (pdb, send) = expect_apply(
            &mut mock,
            "/apis/policy/v1/namespaces/team-a/poddisruptionbudgets/prod",
            not_found(),
        )
        .await;
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        send.send_response(ok(pdb));
        let (np, send) = expect_apply(
            &mut mock,
            "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/prod",
            not_found(),
        )
        .await;
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(np["spec"]["ingress"][0]["ports"][0]["port"], 7070);
        send.send_response(ok(np));
        let (sts, send) = expect_apply(
            &mut mock,
            "/apis/apps/v1/namespaces/team-a/statefulsets/prod",
            not_found(),
        )
        .await;
        assert_eq!(sts["spec"]["replicas"], 3);
        assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");
        assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
        let sidecar = &sts["spec"]["template"]["spec"]["containers"][0];
        let env: Vec<(&str, &str)> = sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
            .collect();
        assert!(
            env.contains(&("RAFT_TLS_CERT", "/etc/raft-tls/$(POD_NAME).crt")),
            "{env:?}"
        );
        assert!(!env.iter().any(|(k, _)| *k == "RAFT_INSECURE_PLAINTEXT"));
        assert_eq!(sidecar["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
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

// ---------------------------------------------------------------------------------------------
// With scripted sidecars: three fake admin servers answer as uninitialized nodes, over mutual
// TLS with the cluster's certificates (the operator dials 127.0.0.1 and checks that each
// presents a certificate for its pod's stable DNS name).

use std::sync::Mutex;

use raft_operator::resources::names::ClusterNames;
use raft_operator::resources::pod_template::{
    TEMPLATE_INPUTS_ANNOTATION, TEMPLATE_RENDERED_ANNOTATION, TemplateInputs,
};
use raft_operator::resources::tls::ClusterPki;
use warp::Filter;

struct FakeSidecar {
    port: u16,
    initialize_calls: Arc<Mutex<Vec<Value>>>,
}

async fn fake_sidecar(ordinal: u32, pki: &ClusterPki) -> FakeSidecar {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let status = warp::path!("admin" / "v1" / "status").map(move || {
        warp::reply::json(&json!({
            "nodeId": (100 + ordinal).to_string(), "name": format!("prod-{ordinal}"),
            "clusterId": "rc-test", "initialized": false, "role": "uninitialized", "term": 0,
            "leaderId": null, "leaderNodeId": null, "lastLogIndex": 0, "lastAppliedIndex": 0,
            "partitionState": "leaderless",
            "peerAddress": format!("prod-{ordinal}.prod.team-a.svc.cluster.local:7070"),
            "adminAddress": format!("prod-{ordinal}.prod.team-a.svc.cluster.local:7090"),
        }))
    });
    let recorded = calls.clone();
    let initialize = warp::path!("admin" / "v1" / "initialize")
        .and(warp::post())
        .and(warp::body::json())
        .map(move |body: Value| {
            recorded.lock().unwrap().push(body);
            warp::reply::json(&json!({"initialized": true}))
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tls_acceptor(pki, &format!("prod-{ordinal}"));
    let routes = status.or(initialize);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, routes) = (acceptor.clone(), routes.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(warp::service(routes));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    FakeSidecar {
        port,
        initialize_calls: calls,
    }
}

/// A member's TLS server: its certificate from `pki`, and a client certificate of the cluster
/// CA required (the operator's).
async fn three_sidecars(pki: &ClusterPki) -> Vec<FakeSidecar> {
    vec![
        fake_sidecar(0, pki).await,
        fake_sidecar(1, pki).await,
        fake_sidecar(2, pki).await,
    ]
}

fn tls_acceptor(pki: &ClusterPki, pod: &str) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cert = pki.member(pod).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn names() -> ClusterNames {
    ClusterNames::new("prod", "team-a", "cluster.local")
}

fn pki() -> ClusterPki {
    ClusterPki::ensure(None, &names(), 4, std::time::SystemTime::now()).unwrap()
}

fn pod_json(ordinal: u32, admin_port: u16) -> Value {
    json!({
        "metadata": {"name": format!("prod-{ordinal}"), "namespace": "team-a", "uid": format!("uid-{ordinal}"),
                     "labels": {"controller-revision-hash": "prod-rev1"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "prod",
                                          "uid": "uid-prod", "controller": true}]},
        "spec": {"containers": [{"name": "raft-sidecar", "ports": [{"name": "admin", "containerPort": admin_port}]}]},
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

/// The reads of one reconcile (Secrets and StatefulSet exist, three pods), then the seven
/// applies of objects the cluster controls; the certificate Secrets are applied back unchanged.
/// The cluster's StatefulSet as the API server returns it, its sidecar running `running_image`
/// (no containers if `None`), with `annotations`.
fn statefulset_json(running_image: Option<&str>, annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "prod", "namespace": "team-a", "uid": "uid-prod", "annotations": annotations},
        "spec": {"replicas": 3, "serviceName": "prod", "selector": {}, "template": {
            "metadata": {"annotations": {"rendered-by": "an older operator"}},
            "spec": {
                "containers": running_image.map(|image| vec![json!({"name": "raft-sidecar", "image": image})])
            }
        }},
        "status": {"replicas": 3, "updateRevision": "prod-rev1"}})
}

/// Serve a reconcile's reads (the StatefulSet being `statefulset`) and accept its applies;
/// returns the StatefulSet it applied.
async fn serve_reads_and_applies(
    mock: &mut Mock,
    rc: &RaftCluster,
    sidecars: &[FakeSidecar],
    pki: &ClusterPki,
    statefulset: &Value,
) -> Value {
    serve_fresh_read(mock, rc).await;
    let ns = "/api/v1/namespaces/team-a";
    let (_, send) = expect(mock, "GET", &format!("{ns}/secrets/prod-token")).await;
    send.send_response(ok(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "prod-token", "namespace": "team-a"},
        "data": {"token": "c2VjcmV0", "cluster-id": "cmMtdGVzdA=="}})));
    let rc = cluster();
    let ca = serde_json::to_value(pki.ca_secret(&rc, &names())).unwrap();
    let members = serde_json::to_value(pki.members_secret(&rc, &names())).unwrap();
    for (name, secret) in [("prod-ca", &ca), ("prod-tls", &members)] {
        let (_, send) = expect(mock, "GET", &format!("{ns}/secrets/{name}")).await;
        let mut secret = secret.clone();
        secret["apiVersion"] = json!("v1");
        secret["kind"] = json!("Secret");
        send.send_response(ok(secret));
    }
    let (_, send) = expect(
        mock,
        "GET",
        "/apis/apps/v1/namespaces/team-a/statefulsets/prod",
    )
    .await;
    send.send_response(ok(statefulset.clone()));
    let send = expect_list(mock, &format!("{ns}/pods")).await;
    let items: Vec<Value> = sidecars
        .iter()
        .enumerate()
        .map(|(i, s)| pod_json(i as u32, s.port))
        .collect();
    send.send_response(ok(
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}),
    ));
    let send = expect_list(mock, &format!("{ns}/persistentvolumeclaims")).await;
    send.send_response(ok(empty_list("PersistentVolumeClaimList")));
    let mut applied = Value::Null;
    for path in [
        format!("{ns}/secrets/prod-token"),
        format!("{ns}/secrets/prod-ca"),
        format!("{ns}/secrets/prod-tls"),
        format!("{ns}/services/prod"),
        "/apis/policy/v1/namespaces/team-a/poddisruptionbudgets/prod".to_owned(),
        "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/prod".to_owned(),
        "/apis/apps/v1/namespaces/team-a/statefulsets/prod".to_owned(),
    ] {
        let name = path.rsplit('/').next().unwrap().to_owned();
        let (body, send) = expect_apply(mock, &path, ours(&name)).await;
        if path.ends_with("statefulsets/prod") {
            assert_eq!(body["spec"]["replicas"], 3, "bootstrap keeps the spec size");
            applied = body.clone();
        }
        if path.ends_with("prod-ca") {
            assert_eq!(
                body["data"], ca["data"],
                "the CA Secret is applied unchanged"
            );
        }
        if path.ends_with("prod-tls") {
            assert_eq!(body["data"], members["data"], "good certificates are kept");
        }
        send.send_response(ok(body));
    }
    applied
}

const RC_PATH: &str = "/apis/consensus.unrdf.io/v1alpha1/namespaces/team-a/raftclusters/prod";
const STATUS_PATH: &str =
    "/apis/consensus.unrdf.io/v1alpha1/namespaces/team-a/raftclusters/prod/status";

fn context(client: kube::Client) -> Arc<Context> {
    Arc::new(Context {
        client: client.clone(),
        config: config(),
        operator_pods: None,
        metrics: Arc::new(Metrics::new()),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "raft-operator".into(),
                instance: None,
            },
        ),
        backups: Default::default(),
        restores: Default::default(),
    })
}

#[tokio::test]
async fn pods_answering_uninitialized_get_initialize_recorded_first_then_called_once_on_ordinal_0()
{
    let pki = pki();
    let sidecars = three_sidecars(&pki).await;
    let ports: Vec<u16> = sidecars.iter().map(|s| s.port).collect();

    // Reconcile 1: the step is recorded, nothing is called on the sidecars.
    let (service, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(kube::Client::new(service, "default"));
    let sc = &sidecars;
    let recorded = async {
        let sts = statefulset_json(None, json!({}));
        serve_reads_and_applies(&mut mock, &cluster(), sc, &pki, &sts).await;
        let (status, send) = expect(&mut mock, "PATCH", STATUS_PATH).await;
        let op = status["status"]["operation"].clone();
        assert_eq!(op["kind"], "Initialize");
        assert_eq!(op["name"], "prod-0");
        assert_eq!(op["phase"], "Recorded");
        send.send_response(ok(json!({"apiVersion": "consensus.unrdf.io/v1alpha1", "kind": "RaftCluster", "metadata": {"name": "prod", "namespace": "team-a"}, "spec": {}})));
        let (event, send) = expect(
            &mut mock,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/team-a/events",
        )
        .await;
        assert_eq!(event["reason"], "Bootstrapping");
        send.send_response(ok(event));
        op
    };
    let (result, op) = tokio::join!(reconcile(Arc::new(cluster()), ctx), recorded);
    result.unwrap();
    assert!(
        sidecars
            .iter()
            .all(|s| s.initialize_calls.lock().unwrap().is_empty())
    );

    // Reconcile 2 (the status now holds the step): initialize on ordinal 0 with all three.
    let (service, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(kube::Client::new(service, "default"));
    let mut rc = cluster();
    rc.status = Some(serde_json::from_value(json!({"operation": op})).unwrap());
    let as_stored = rc.clone();
    let acted = async {
        let sts = statefulset_json(None, json!({}));
        serve_reads_and_applies(&mut mock, &as_stored, sc, &pki, &sts).await;
        let (status, send) = expect(&mut mock, "PATCH", STATUS_PATH).await;
        assert_eq!(status["status"]["operation"]["phase"], "AwaitingCommit");
        send.send_response(ok(json!({"apiVersion": "consensus.unrdf.io/v1alpha1", "kind": "RaftCluster", "metadata": {"name": "prod", "namespace": "team-a"}, "spec": {}})));
    };
    let (result, ()) = tokio::join!(reconcile(Arc::new(rc), ctx), acted);
    result.unwrap();
    let calls = sidecars[0].initialize_calls.lock().unwrap().clone();
    assert_eq!(
        calls.len(),
        1,
        "initialize called once, on ordinal 0 (ports {ports:?})"
    );
    let ids: Vec<&str> = calls[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["nodeId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["100", "101", "102"]);
    assert!(
        sidecars[1..]
            .iter()
            .all(|s| s.initialize_calls.lock().unwrap().is_empty())
    );
}

/// One reconcile of `rc` against the fake sidecars and `statefulset`: the StatefulSet it
/// applied, the status it wrote, the reasons of its Events.
async fn reconcile_once(
    rc: RaftCluster,
    sidecars: &[FakeSidecar],
    pki: &ClusterPki,
    statefulset: Value,
) -> (Value, Value, Vec<String>) {
    let (service, mut mock) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(kube::Client::new(service, "default"));
    let as_stored = rc.clone();
    let served = async {
        let sts = serve_reads_and_applies(&mut mock, &as_stored, sidecars, pki, &statefulset).await;
        let (status, send) = expect(&mut mock, "PATCH", STATUS_PATH).await;
        send.send_response(ok(json!({"apiVersion": "consensus.unrdf.io/v1alpha1", "kind": "RaftCluster", "metadata": {"name": "prod", "namespace": "team-a"}, "spec": {}})));
        let mut reasons = Vec::new();
        // Events until the reconcile is over and its client gone.
        while let Ok(Some((request, send))) =
            tokio::time::timeout(Duration::from_secs(5), mock.next_request()).await
        {
            assert_eq!(request.method(), "POST", "{}", request.uri());
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let event: Value = serde_json::from_slice(&bytes).unwrap();
            reasons.push(event["reason"].as_str().unwrap().to_owned());
            send.send_response(ok(event));
        }
        (sts, status["status"].clone(), reasons)
    };
    let (result, out) = tokio::join!(reconcile(Arc::new(rc), ctx), served);
    result.unwrap();
    out
}

fn sidecar_image_of(sts: &Value) -> &str {
    sts["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "raft-sidecar")
        .unwrap()["image"]
        .as_str()
        .unwrap()
}

/// A StatefulSet whose sidecar runs `image`, with no digests (as an older operator left it).
fn running(image: &str) -> Value {
    statefulset_json(Some(image), json!({}))
}

#[tokio::test]
async fn an_upgraded_operator_keeps_each_clusters_sidecar_image_until_the_annotation_asks() {
    let pki = pki();
    let sidecars = three_sidecars(&pki).await;
    // The operator's default is `raft-sidecar:test`; a cluster made by an older operator, which
    // recorded nothing, runs 0.1.0: it keeps it, and it is recorded.
    let (sts, status, _) =
        reconcile_once(cluster(), &sidecars, &pki, running("raft-sidecar:0.1.0")).await;
    assert_eq!(sidecar_image_of(&sts), "raft-sidecar:0.1.0");
    assert_eq!(status["sidecarImage"], "raft-sidecar:0.1.0");

    // Recorded, it is kept even where the StatefulSet says otherwise (edited by hand).
    let mut rc = cluster();
    rc.status =
        Some(serde_json::from_value(json!({"sidecarImage": "raft-sidecar:0.1.0"})).unwrap());
    let (sts, _, reasons) =
        reconcile_once(rc.clone(), &sidecars, &pki, running("raft-sidecar:edited")).await;
    assert_eq!(sidecar_image_of(&sts), "raft-sidecar:0.1.0");
    assert!(
        !reasons.contains(&"SidecarImageChanged".to_owned()),
        "{reasons:?}"
    );

    // Asked for: the operator's default, the request recorded, an Event.
    rc.metadata.annotations = Some(
        [(
            "consensus.unrdf.io/upgrade-sidecar".to_owned(),
            "1".to_owned(),
        )]
        .into(),
    );
    let (sts, status, reasons) =
        reconcile_once(rc, &sidecars, &pki, running("raft-sidecar:0.1.0")).await;
    assert_eq!(sidecar_image_of(&sts), "raft-sidecar:test");
    assert_eq!(status["sidecarImage"], "raft-sidecar:test");
    assert_eq!(status["sidecarUpgradeRequest"], "1");
    assert!(
        reasons.contains(&"SidecarImageChanged".to_owned()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_pod_template_an_older_operator_rendered_is_kept_while_the_clusters_inputs_are_the_same()
{
    let pki = pki();
    let sidecars = three_sidecars(&pki).await;
    let mut rc = cluster();
    rc.status =
        Some(serde_json::from_value(json!({"sidecarImage": "raft-sidecar:0.1.0"})).unwrap());
    let inputs = TemplateInputs {
        spec: &rc.spec,
        sidecar_image: "raft-sidecar:0.1.0",
        upgrade_request: None,
        cluster_domain: "cluster.local",
    }
    .digest();
    let older = statefulset_json(
        Some("raft-sidecar:0.1.0"),
        json!({TEMPLATE_INPUTS_ANNOTATION: inputs, TEMPLATE_RENDERED_ANNOTATION: "older"}),
    );
    let (sts, _, _) = reconcile_once(rc.clone(), &sidecars, &pki, older.clone()).await;
    assert_eq!(sts["spec"]["template"], older["spec"]["template"]);
    assert_eq!(
        sts["metadata"]["annotations"],
        older["metadata"]["annotations"]
    );

    // Asked to upgrade: the operator's own rendering, with its default image.
    rc.metadata.annotations = Some(
        [(
            "consensus.unrdf.io/upgrade-sidecar".to_owned(),
            "1".to_owned(),
        )]
        .into(),
    );
    let (sts, _, _) = reconcile_once(rc, &sidecars, &pki, older.clone()).await;
    assert_eq!(sidecar_image_of(&sts), "raft-sidecar:test");
    assert!(
        sts["spec"]["template"]["metadata"]["annotations"]
            .get("rendered-by")
            .is_none()
    );
    assert_ne!(
        sts["metadata"]["annotations"][TEMPLATE_INPUTS_ANNOTATION],
        json!(inputs)
    );
}
