//! Leader election against a fake API server that keeps one Lease the way the real one does:
//! every write bumps its resourceVersion, and a replace carrying another resourceVersion than the
//! current one is refused with 409 Conflict. The elector's tests pause the clock, so lease
//! durations of 15 s pass at once and exactly; the tests of `controller::run` (standby, leader,
//! lost Lease, release) use the real clock, short timings and the metrics port.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use raft_operator::config::{LeaderElectionArgs, RunConfig};
use raft_operator::leader::{Attempt, ElectionConfig, Elector, LeaderError};
use serde_json::{Value, json};
use tokio::time::Instant;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/raft-system/leases/raft-operator";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/raft-system/leases";

/// How the fake answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Serve,
    /// 500 to every call.
    Fail,
    /// Never answers.
    Hang,
    /// Lists `stuck_cluster()` as the only RaftCluster and serves the Lease; never answers
    /// anything else, so that the cluster's reconcile hangs at its first read.
    StuckReconcile,
}

type Interpose = Box<dyn FnOnce(&mut Fake) + Send>;

struct Fake {
    lease: Option<Value>,
    resource_version: u64,
    mode: Mode,
    /// Runs just before the next replace is judged: another contender's write landing between
    /// our read and our write.
    before_put: Option<Interpose>,
    writes: Vec<(Method, Value)>,
    /// Reads of the Lease: a contender's attempts.
    lease_reads: usize,
    /// Calls for anything but the Lease (the controllers' lists and watches): a list is empty,
    /// a watch never sends an event.
    others: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code.as_u16(), "message": reason});
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn ok(body: &Value) -> Response<Body> {
    Response::builder()
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

impl Fake {
    fn new(lease: Option<Value>) -> Shared {
        let mut fake = Fake {
            lease: None,
            resource_version: 0,
            mode: Mode::Serve,
            before_put: None,
            writes: Vec::new(),
            lease_reads: 0,
            others: Vec::new(),
        };
        if let Some(spec) = lease {
            fake.store(
                json!({"metadata": {"name": "raft-operator", "namespace": "raft-system"},
                "spec": spec}),
            );
        }
        Arc::new(Mutex::new(fake))
    }

    /// Keep `lease` as the current object, with the next resourceVersion.
    fn store(&mut self, mut lease: Value) -> Value {
        self.resource_version += 1;
        lease["apiVersion"] = json!("coordination.k8s.io/v1");
        lease["kind"] = json!("Lease");
        lease["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.lease = Some(lease.clone());
        lease
    }

    /// Another replica's write: `spec` merged over the current one.
    fn written_by_another(&mut self, spec: Value) {
        let mut lease = self.lease.clone().unwrap();
        for (k, v) in spec.as_object().unwrap() {
            lease["spec"][k] = v.clone();
        }
        self.store(lease);
    }

    fn answer(
        &mut self,
        method: &Method,
        path: &str,
        watch: bool,
        body: Value,
    ) -> Option<Response<Body>> {
        match self.mode {
            Mode::Hang => return None,
            // The Lease is served as usual.
            Mode::StuckReconcile if path == PATH || path == COLLECTION => {}
            Mode::StuckReconcile => {
                self.others.push(format!("{method} {path}"));
                if method == Method::GET && path.ends_with("/raftclusters") && !watch {
                    return Some(ok(&json!({"apiVersion": "consensus.unrdf.io/v1alpha1",
                        "kind": "RaftClusterList", "metadata": {"resourceVersion": "1"},
                        "items": [stuck_cluster()]})));
                }
                return None;
            }
            Mode::Fail => return Some(status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError")),
            Mode::Serve => {}
        }
        if (method.as_str(), path) == ("GET", PATH) {
            self.lease_reads += 1;
        }
        Some(match (method.as_str(), path) {
            ("GET", PATH) => match &self.lease {
                Some(lease) => ok(lease),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            ("POST", COLLECTION) => {
                if self.lease.is_some() {
                    return Some(status(StatusCode::CONFLICT, "AlreadyExists"));
                }
                self.writes.push((Method::POST, body.clone()));
                ok(&self.store(body))
            }
            ("PUT", PATH) => {
                if let Some(interpose) = self.before_put.take() {
                    interpose(self);
                }
                // As the API server does: a replace without a resourceVersion is unconditional.
                let current = self
                    .lease
                    .as_ref()
                    .map(|l| &l["metadata"]["resourceVersion"]);
                let wanted = &body["metadata"]["resourceVersion"];
                if !wanted.is_null() && current != Some(wanted) {
                    return Some(status(StatusCode::CONFLICT, "Conflict"));
                }
                self.writes.push((Method::PUT, body.clone()));
                ok(&self.store(body))
            }
            ("GET", _) if !watch => {
                self.others.push(format!("{method} {path}"));
                ok(&json!({"apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": "1"}, "items": []}))
            }
            ("GET", _) => {
                self.others.push(format!("{method} {path}?watch"));
                return None;
            }
            _ => panic!("unexpected {method} {path}"),
        })
    }

    fn holder(&self) -> Option<String> {
        let holder = &self.lease.as_ref()?["spec"]["holderIdentity"];
        holder.as_str().map(str::to_owned)
    }
}

/// A client whose every call the fake answers.
fn client(fake: &Shared) -> kube::Client {
    client_within(fake, Duration::MAX)
}

/// A client whose every call the fake answers, with the operator's deadline on each answer.
fn client_within(fake: &Shared, deadline: Duration) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = fake.clone();
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let watch = request
                .uri()
                .query()
                .is_some_and(|q| q.contains("watch=true"));
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let answer = fake.lock().unwrap().answer(&method, &path, watch, body);
            match answer {
                Some(response) => send.send_response(response),
                // Kept, not dropped: a dropped responder would fail the call instead of hanging.
                None => unanswered.push(send),
            }
        }
    });
    kube::Client::new(
        tower::Layer::layer(
            &raft_operator::api_client::call_deadline_layer(deadline),
            service,
        ),
        "default",
    )
}

fn config(identity: &str) -> ElectionConfig {
    ElectionConfig {
        namespace: "raft-system".into(),
        name: "raft-operator".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        renew_period: Duration::from_secs(5),
        retry_period: Duration::from_secs(2),
    }
}

fn elector(fake: &Shared, identity: &str) -> Elector {
    Elector::new(client(fake), config(identity))
}

fn held_by(holder: &str) -> Value {
    json!({"holderIdentity": holder, "leaseDurationSeconds": 15,
        "renewTime": "2026-01-01T00:00:00.000000Z", "acquireTime": "2026-01-01T00:00:00.000000Z",
        "leaseTransitions": 3})
}

#[tokio::test(start_paused = true)]
async fn a_missing_lease_is_created_with_us_as_holder() {
    let fake = Fake::new(None);
    let mut a = elector(&fake, "a");
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leader);
    let f = fake.lock().unwrap();
    assert_eq!(f.holder().as_deref(), Some("a"));
    let (method, body) = &f.writes[0];
    assert_eq!(method, Method::POST);
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(body["spec"]["leaseTransitions"], 0);
    assert!(body["spec"]["renewTime"].is_string());
}

#[tokio::test(start_paused = true)]
async fn a_free_lease_is_acquired_with_the_resource_version_read() {
    let fake = Fake::new(Some(json!({"leaseTransitions": 3})));
    let mut a = elector(&fake, "a");
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leader);
    let f = fake.lock().unwrap();
    assert_eq!(f.holder().as_deref(), Some("a"));
    let (method, body) = &f.writes[0];
    assert_eq!(method, Method::PUT);
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert_eq!(body["spec"]["leaseTransitions"], 4);
}

#[tokio::test(start_paused = true)]
async fn a_lease_held_and_renewed_by_another_is_never_taken() {
    let fake = Fake::new(Some(held_by("b")));
    let mut a = elector(&fake, "a");
    // b renews every 5 s; a tries every 2 s for a minute.
    let start = Instant::now();
    let mut last_renewal = start;
    while start.elapsed() < Duration::from_secs(60) {
        if last_renewal.elapsed() >= Duration::from_secs(5) {
            fake.lock()
                .unwrap()
                .written_by_another(json!({"renewTime": "2026-01-01T00:00:05.000000Z"}));
            last_renewal = Instant::now();
        }
        assert_eq!(
            a.try_acquire_or_renew().await.unwrap(),
            Attempt::HeldBy(Some("b".into()))
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let f = fake.lock().unwrap();
    assert_eq!(f.holder().as_deref(), Some("b"));
    assert!(f.writes.is_empty(), "a wrote the Lease: {:?}", f.writes);
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_after_the_lease_duration_by_our_clock() {
    let fake = Fake::new(Some(held_by("b")));
    let mut a = elector(&fake, "a");
    // The renewTime is long past by the wall clock, but a has not yet watched the record stay
    // unchanged for the lease duration: clock skew must not let it take over early.
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy(Some("b".into()))
    );
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy(Some("b".into()))
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Leader);
    let f = fake.lock().unwrap();
    assert_eq!(f.holder().as_deref(), Some("a"));
    let (_, body) = &f.writes[0];
    assert_eq!(body["spec"]["leaseTransitions"], 4);
    assert_ne!(body["spec"]["acquireTime"], "2026-01-01T00:00:00.000000Z");
}

#[tokio::test(start_paused = true)]
async fn a_write_that_lost_the_race_on_the_resource_version_does_not_lead() {
    let fake = Fake::new(Some(json!({})));
    // b writes itself in between a's read and a's replace.
    fake.lock().unwrap().before_put = Some(Box::new(|f: &mut Fake| {
        f.written_by_another(held_by("b"));
    }));
    let mut a = elector(&fake, "a");
    assert_eq!(a.try_acquire_or_renew().await.unwrap(), Attempt::Conflict);
    assert_eq!(fake.lock().unwrap().holder().as_deref(), Some("b"));
    // Nor at the next try: b's claim is fresh.
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy(Some("b".into()))
    );
    // acquire() keeps waiting as a standby while b holds it.
    let waited = tokio::time::timeout(Duration::from_secs(10), a.acquire()).await;
    assert!(waited.is_err(), "acquired a Lease b holds");
}

#[tokio::test(start_paused = true)]
async fn of_two_contenders_for_a_free_lease_exactly_one_leads() {
    for _ in 0..20 {
        let fake = Fake::new(Some(json!({})));
        let (mut a, mut b) = (elector(&fake, "a"), elector(&fake, "b"));
        let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
        let leaders = [ra.unwrap(), rb.unwrap()]
            .iter()
            .filter(|r| **r == Attempt::Leader)
            .count();
        assert_eq!(leaders, 1);
    }
}

#[tokio::test(start_paused = true)]
async fn the_leader_renews_every_renew_period_and_keeps_the_lease() {
    let fake = Fake::new(None);
    let mut a = elector(&fake, "a");
    a.acquire().await;
    let held = tokio::time::timeout(Duration::from_secs(61), a.hold()).await;
    assert!(held.is_err(), "stepped down: {held:?}");
    let f = fake.lock().unwrap();
    assert_eq!(f.holder().as_deref(), Some("a"));
    // The create, then a renewal at 5, 10, … 60 s.
    assert_eq!(f.writes.len(), 13, "{:?}", f.writes);
    assert!(
        f.writes[1..]
            .iter()
            .all(|(m, body)| m == Method::PUT && body["spec"]["leaseTransitions"] == 0)
    );
}

#[tokio::test(start_paused = true)]
async fn the_leader_steps_down_when_renewals_fail_for_the_lease_duration() {
    for mode in [Mode::Fail, Mode::Hang] {
        let fake = Fake::new(None);
        let mut a = elector(&fake, "a");
        a.acquire().await;
        let acquired = Instant::now();
        fake.lock().unwrap().mode = mode;
        let why = a.hold().await;
        assert!(
            matches!(why, LeaderError::RenewDeadline { .. }),
            "{mode:?}: {why}"
        );
        // Not a moment later than the lease duration after the last renewal: a standby may
        // take over from then on.
        assert_eq!(acquired.elapsed(), Duration::from_secs(15), "{mode:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_leader_survives_renewals_that_fail_for_less_than_the_lease_duration() {
    let fake = Fake::new(None);
    let mut a = elector(&fake, "a");
    a.acquire().await;
    fake.lock().unwrap().mode = Mode::Fail;
    let outage = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(12)).await;
        outage.lock().unwrap().mode = Mode::Serve;
    });
    let held = tokio::time::timeout(Duration::from_secs(40), a.hold()).await;
    assert!(held.is_err(), "stepped down: {held:?}");
}

#[tokio::test(start_paused = true)]
async fn the_leader_steps_down_at_once_when_another_holds_the_lease() {
    let fake = Fake::new(None);
    let mut a = elector(&fake, "a");
    a.acquire().await;
    let acquired = Instant::now();
    fake.lock().unwrap().written_by_another(held_by("b"));
    let why = a.hold().await;
    assert!(
        matches!(&why, LeaderError::TakenOver { holder: Some(h), .. } if h == "b"),
        "{why}"
    );
    assert_eq!(acquired.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_released_lease_is_taken_by_the_standby_at_its_next_try() {
    let fake = Fake::new(None);
    let (mut a, mut b) = (elector(&fake, "a"), elector(&fake, "b"));
    a.acquire().await;
    assert_eq!(
        b.try_acquire_or_renew().await.unwrap(),
        Attempt::HeldBy(Some("a".into()))
    );
    a.release().await.unwrap();
    assert_eq!(fake.lock().unwrap().holder(), None);
    let start = Instant::now();
    b.acquire().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(fake.lock().unwrap().holder().as_deref(), Some("b"));
    // Releasing a Lease one no longer holds leaves it alone.
    a.release().await.unwrap();
    assert_eq!(fake.lock().unwrap().holder().as_deref(), Some("b"));
}

// The wiring in `controller::run`, on the real clock with short timings.

fn run_config(metrics_addr: std::net::SocketAddr, identity: &str) -> RunConfig {
    let mut c = RunConfig {
        metrics_addr,
        namespaces: vec!["team-a".into()],
        pod_namespace: None,
        pod_selector: None,
        cluster_domain: "cluster.local".into(),
        sidecar_image: "raft-sidecar:test".into(),
        sidecar_timeout: Duration::from_secs(1),
        api_timeout: Duration::from_secs(30),
        requeue_active: Duration::from_secs(2),
        requeue_idle: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(2),
        leader_election: LeaderElectionArgs::default(),
    };
    c.leader_election = LeaderElectionArgs {
        enabled: true,
        namespace: Some("raft-system".into()),
        identity: Some(identity.into()),
        lease_duration: Duration::from_secs(1),
        renew_period: Duration::from_millis(300),
        retry_period: Duration::from_millis(100),
        ..LeaderElectionArgs::default()
    };
    c
}

fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The body of `GET path`, or `None` while nothing listens.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
    Some(response)
}

/// Poll `path` until its body contains `wanted`.
async fn wait_for_text(addr: std::net::SocketAddr, path: &str, wanted: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(body) = http_get(addr, path).await
                && body.contains(wanted)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "{path} never said {wanted:?}");
}

type Run = tokio::task::JoinHandle<Result<(), LeaderError>>;

/// `controller::run` on `fake`, and the sender of its shutdown signal.
fn started(fake: &Shared, config: RunConfig) -> (tokio::sync::oneshot::Sender<()>, Run) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(raft_operator::controller::run(
        client(fake),
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, run)
}

async fn stops_cleanly_within(limit: Duration, run: Run) {
    let result = tokio::time::timeout(limit, run).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "still running {limit:?} after the shutdown signal: {result:?}"
    );
}

#[tokio::test]
async fn a_standby_serves_health_and_metrics_and_starts_no_controller() {
    let fake = Fake::new(Some(held_by("b")));
    // b keeps renewing.
    let renewer = {
        let fake = fake.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                fake.lock()
                    .unwrap()
                    .written_by_another(json!({"renewTime": "2026-01-01T00:00:01.000000Z"}));
            }
        })
    };
    let addr = free_port();
    let (stop, run) = started(&fake, run_config(addr, "a"));
    wait_for_text(addr, "/metrics", "raft_operator_leader 0").await;
    // Three lease durations as a standby: 30 more attempts at the 100 ms retry period.
    let reads = fake.lock().unwrap().lease_reads;
    tokio::time::timeout(Duration::from_secs(30), async {
        while fake.lock().unwrap().lease_reads < reads + 30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the standby kept trying for the Lease");
    assert!(http_get(addr, "/healthz").await.unwrap().ends_with("ok"));
    assert!(http_get(addr, "/readyz").await.unwrap().ends_with("ok"));
    assert!(
        http_get(addr, "/metrics")
            .await
            .unwrap()
            .contains("raft_operator_leader 0")
    );
    {
        let f = fake.lock().unwrap();
        assert_eq!(f.holder().as_deref(), Some("b"));
        assert!(f.others.is_empty(), "a standby watched: {:?}", f.others);
    }
    stop.send(()).unwrap();
    stops_cleanly_within(Duration::from_secs(5), run).await;
    renewer.abort();
}

#[tokio::test]
async fn the_leader_runs_the_controllers_and_stops_with_an_error_when_it_loses_the_lease() {
    let fake = Fake::new(None);
    let addr = free_port();
    let run = tokio::spawn(raft_operator::controller::run(
        client(&fake),
        run_config(addr, "a"),
        std::future::pending(),
    ));
    wait_for_text(addr, "/metrics", "raft_operator_leader 1").await;
    let watching = tokio::time::timeout(Duration::from_secs(5), async {
        while fake.lock().unwrap().others.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(watching.is_ok(), "the leader started no controller");
    fake.lock().unwrap().written_by_another(held_by("b"));
    // Renewed every 300 ms: it learns at its next renewal, and stops at once.
    let result = tokio::time::timeout(Duration::from_secs(2), run).await;
    match result {
        Ok(Ok(Err(LeaderError::TakenOver { holder, .. }))) => {
            assert_eq!(holder.as_deref(), Some("b"));
        }
        other => panic!("expected a lost Lease, got {other:?}"),
    }
}

#[tokio::test]
async fn a_leader_shut_down_cleanly_releases_the_lease() {
    let fake = Fake::new(None);
    let addr = free_port();
    let (stop, run) = started(&fake, run_config(addr, "a"));
    wait_for_text(addr, "/metrics", "raft_operator_leader 1").await;
    assert_eq!(fake.lock().unwrap().holder().as_deref(), Some("a"));
    stop.send(()).unwrap();
    stops_cleanly_within(Duration::from_secs(60), run).await;
    assert_eq!(fake.lock().unwrap().holder(), None, "not released");
}

#[tokio::test]
async fn a_leader_whose_api_server_stops_answering_still_stops_within_its_grace() {
    let fake = Fake::new(None);
    let addr = free_port();
    let (stop, run) = started(&fake, run_config(addr, "a"));
    wait_for_text(addr, "/metrics", "raft_operator_leader 1").await;
    fake.lock().unwrap().mode = Mode::Hang;
    stop.send(()).unwrap();
    // The grace is 2 s (run_config); releasing the Lease can never finish here.
    stops_cleanly_within(Duration::from_secs(10), run).await;
    assert_eq!(fake.lock().unwrap().holder().as_deref(), Some("a"));
}

/// The first call of the stuck cluster's reconcile.
const STUCK_READ: &str =
    "GET /apis/consensus.unrdf.io/v1alpha1/namespaces/team-a/raftclusters/stuck";

/// A fake in [`Mode::StuckReconcile`].
fn stuck_fake() -> Shared {
    let fake = Fake::new(None);
    fake.lock().unwrap().mode = Mode::StuckReconcile;
    fake
}

/// Wait (up to 10 s) until the stuck cluster's reconcile has begun `times` times: each try
/// begins with a read of the cluster, after the watchers' lists.
async fn stuck_reads_reach(fake: &Shared, times: usize) {
    let count = || {
        let f = fake.lock().unwrap();
        f.others.iter().filter(|c| *c == STUCK_READ).count()
    };
    let reached = tokio::time::timeout(Duration::from_secs(10), async {
        while count() < times {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let asked = fake.lock().unwrap().others.clone();
    assert!(
        reached.is_ok(),
        "the stuck reconcile began {} times, not {times}: {asked:?}",
        count()
    );
}

fn stuck_cluster() -> Value {
    json!({"apiVersion": "consensus.unrdf.io/v1alpha1", "kind": "RaftCluster",
        "metadata": {"name": "stuck", "namespace": "team-a", "uid": "u-1", "generation": 1,
            "resourceVersion": "1"},
        "spec": {"replicas": 3}})
}

#[tokio::test]
async fn a_reconcile_stuck_on_the_api_server_is_abandoned_when_the_grace_ends() {
    let fake = stuck_fake();
    let addr = free_port();
    let mut config = run_config(addr, "a");
    config.leader_election = Default::default();
    let (stop, run) = started(&fake, config);
    // The reconcile has started once it reads its cluster (the watchers' lists come first).
    stuck_reads_reach(&fake, 1).await;
    let signalled = Instant::now();
    stop.send(()).unwrap();
    // The grace is 2 s (run_config).
    stops_cleanly_within(Duration::from_secs(10), run).await;
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "stopped after {:?}: the reconcile was not given its grace",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn a_reconcile_whose_api_call_gets_no_answer_fails_at_the_deadline_and_is_tried_again() {
    let fake = stuck_fake();
    let addr = free_port();
    let mut config = run_config(addr, "a");
    config.leader_election = Default::default();
    let run = tokio::spawn(raft_operator::controller::run(
        client_within(&fake, Duration::from_millis(500)),
        config,
        std::future::pending(),
    ));
    // Each try begins with a read of the cluster; the retry follows the failure after the
    // requeue (2 s in run_config).
    stuck_reads_reach(&fake, 2).await;
    run.abort();
}

#[tokio::test]
async fn a_leader_that_abandons_a_reconcile_leaves_its_lease_to_expire_as_a_fence() {
    let fake = stuck_fake();
    let addr = free_port();
    let (stop, run) = started(&fake, run_config(addr, "a"));
    stuck_reads_reach(&fake, 1).await;
    stop.send(()).unwrap();
    stops_cleanly_within(Duration::from_secs(10), run).await;
    // Not released: a standby waits out the lease, so the dropped reconcile's writes cannot
    // land beside its own.
    assert_eq!(fake.lock().unwrap().holder().as_deref(), Some("a"));
}
