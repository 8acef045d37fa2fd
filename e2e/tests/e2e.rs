//! The Kubernetes end-to-end scenarios of docs/testing.md, against `$KUBECONFIG`.
//! Run serially (`--test-threads=1`): the quorum-loss scenario cordons nodes.
//!
//! `cargo test -p raft-e2e --test e2e -- --test-threads=1` (see e2e/README.md; `make e2e`
//! brings up the local control plane first).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use raft_crds::{MemberRole, OperationKind};
use support::{WAIT, daemon_image, scenario, sidecar_image_next, wait_for};

#[tokio::test]
async fn a_three_node_raftcluster_becomes_available() {
    scenario("available", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        let s = env.wait_settled("c", 3).await;
        assert!(s.cluster_id.is_some(), "clusterId recorded at bootstrap");
        assert!(s.leader.is_some());
        assert_eq!(s.ready_replicas, 3);
        let names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c-0", "c-1", "c-2"]);
        for t in ["LeaderElected", "QuorumAvailable"] {
            assert!(
                s.conditions
                    .iter()
                    .any(|c| c.type_ == t && c.status == "True"),
                "{t}"
            );
        }
        env
    })
    .await;
}

#[tokio::test]
async fn even_replica_counts_are_refused_by_the_api_server_including_the_scale_subresource() {
    scenario("even", |env| async move {
        let err = env
            .create("even", env.spec(4))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("odd"), "{err}");
        env.create("c", env.spec(3)).await.unwrap();
        let err = env.scale("c", 4).await.unwrap_err().to_string();
        assert!(
            err.contains("odd"),
            "kubectl scale must be refused too: {err}"
        );
        let err = env.scale("c", 11).await.unwrap_err().to_string();
        assert!(err.contains("between 1 and 9"), "{err}");
        env
    })
    .await;
}

#[tokio::test]
async fn scaling_3_to_5_to_3_changes_one_member_at_a_time_and_drops_removed_volumes() {
    scenario("scale", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        env.wait_settled("c", 3).await;

        // Watch the membership while it changes: never more than one member apart between
        // successive observations, and never a member outside ordinals 0..5.
        env.scale("c", 5).await.unwrap();
        let last: RefCell<BTreeSet<String>> =
            RefCell::new(["c-0", "c-1", "c-2"].map(String::from).into());
        let kinds = RefCell::new(BTreeSet::new());
        wait_for("5 voters, one added at a time", WAIT, || {
            let env = &env;
            let (last, kinds) = (&last, &kinds);
            async move {
                let s = env.status("c").await;
                let now: BTreeSet<String> = s.members.iter().map(|m| m.name.clone()).collect();
                let previous = last.replace(now.clone());
                assert!(
                    now.symmetric_difference(&previous).count() <= 1,
                    "membership jumped from {previous:?} to {now:?}"
                );
                if let Some(op) = &s.operation {
                    kinds
                        .borrow_mut()
                        .insert(format!("{:?} {}", op.kind, op.name));
                }
                let voters = s
                    .members
                    .iter()
                    .filter(|m| m.role == MemberRole::Voter)
                    .count();
                (voters == 5 && s.operation.is_none()).then_some(())
            }
        })
        .await;
        let kinds = kinds.into_inner();
        assert!(
            kinds.contains("AddMember c-3") || kinds.contains("AddMember c-4"),
            "{kinds:?}"
        );
        env.wait_settled("c", 5).await;

        env.scale("c", 3).await.unwrap();
        env.wait_settled("c", 3).await;
        let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
        wait_for(
            "StatefulSet at 3 and the removed ordinals' claims gone",
            WAIT,
            || async {
                let replicas = sts.get("c").await.ok()?.spec?.replicas?;
                let claims: BTreeSet<String> = env
                    .pvcs()
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .iter()
                    .filter(|c| c.metadata.deletion_timestamp.is_none())
                    .map(|c| c.name_any())
                    .collect();
                let want: BTreeSet<String> = ["data-c-0", "data-c-1", "data-c-2"]
                    .map(String::from)
                    .into();
                (replicas == 3 && claims == want).then_some(())
            },
        )
        .await;
        env
    })
    .await;
}

#[tokio::test]
async fn deleting_the_leader_pod_elects_another_and_the_pod_rejoins() {
    scenario("leader", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        let before = env.wait_settled("c", 3).await;
        let old_leader = before.leader.clone().unwrap();
        let old_ids: BTreeMap<String, String> = before
            .members
            .iter()
            .map(|m| (m.name.clone(), m.node_id.clone()))
            .collect();
        // Keep the deleted pod away until the others have elected: the local agent recreates a
        // pod within a second, and a leader back that fast resumes its term (openraft restores
        // a committed leader vote on restart) without any election to observe.
        set_unschedulable(&env, true).await;
        let result = AssertRecover(async {
            env.pods()
                .delete(&old_leader, &DeleteParams::default())
                .await
                .unwrap();
            wait_for("another member elected leader", WAIT, || async {
                let s = env.status("c").await;
                s.leader.filter(|l| *l != old_leader).map(|_| ())
            })
            .await;
        })
        .run()
        .await;
        set_unschedulable(&env, false).await;
        result.unwrap_or_else(|p| std::panic::resume_unwind(p));
        let after = env.wait_settled("c", 3).await;
        let new_ids: BTreeMap<String, String> = after
            .members
            .iter()
            .map(|m| (m.name.clone(), m.node_id.clone()))
            .collect();
        assert_eq!(
            old_ids, new_ids,
            "the restarted pod rejoined under its node id"
        );
        env
    })
    .await;
}

#[tokio::test]
async fn a_pod_whose_volume_was_lost_is_replaced_under_a_new_node_id() {
    scenario("replace", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        let before = env.wait_settled("c", 3).await;
        let old_id = before
            .members
            .iter()
            .find(|m| m.name == "c-1")
            .unwrap()
            .node_id
            .clone();
        // Delete the claim (protected until its pod is gone), then the pod.
        env.pvcs()
            .delete("data-c-1", &DeleteParams::default())
            .await
            .unwrap();
        env.pods()
            .delete("c-1", &DeleteParams::default())
            .await
            .unwrap();
        let after = wait_for("c-1 back as a voter under a new node id", WAIT, || async {
            let s = env.status("c").await;
            let m = s.members.iter().find(|m| m.name == "c-1")?;
            let voters = s
                .members
                .iter()
                .filter(|m| m.role == MemberRole::Voter)
                .count();
            (m.node_id != old_id
                && m.role == MemberRole::Voter
                && voters == 3
                && s.operation.is_none())
            .then_some(s)
        })
        .await;
        assert_eq!(
            after.members.len(),
            3,
            "replacement never grows the cluster"
        );
        env.wait_settled("c", 3).await;
        env
    })
    .await;
}

async fn set_unschedulable(env: &support::Env, unschedulable: bool) {
    let nodes: Api<Node> = Api::all(env.client.clone());
    for n in nodes.list(&ListParams::default()).await.unwrap() {
        nodes
            .patch(
                &n.name_any(),
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"unschedulable": unschedulable}})),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn losing_two_of_three_pods_reports_quorum_lost_and_recovers_when_they_return() {
    scenario("quorum", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        let s = env.wait_settled("c", 3).await;
        let leader = s.leader.unwrap();
        let victims: Vec<String> = ["c-0", "c-1", "c-2"]
            .iter()
            .filter(|p| **p != leader)
            .map(|p| p.to_string())
            .collect();
        // Cordon so the deleted pods cannot come back until we allow it.
        set_unschedulable(&env, true).await;
        let result = AssertRecover(async {
            for v in &victims {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                };
                env.pods().delete(v, &dp).await.unwrap();
            }
            let s = env.wait_condition("c", "QuorumAvailable", "False").await;
            assert!(
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Available" && c.status == "False")
            );
        })
        .run()
        .await;
        set_unschedulable(&env, false).await;
        result.unwrap_or_else(|p| std::panic::resume_unwind(p));
        env.wait_condition("c", "QuorumAvailable", "True").await;
        env.wait_settled("c", 3).await;
        env
    })
    .await;
}

/// Run a future, catching a panic so cleanup (uncordon) happens before it is re-raised.
struct AssertRecover<F>(F);

impl<F: std::future::Future<Output = ()>> AssertRecover<F> {
    async fn run(self) -> Result<(), Box<dyn std::any::Any + Send>> {
        use futures_util::FutureExt;
        std::panic::AssertUnwindSafe(self.0).catch_unwind().await
    }
}

#[tokio::test]
async fn an_operator_restarted_mid_scale_resumes_the_recorded_step() {
    scenario("restart-op", |mut env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        env.wait_settled("c", 3).await;
        env.scale("c", 5).await.unwrap();
        let recorded = wait_for("an AddMember step recorded", WAIT, || async {
            env.status("c")
                .await
                .operation
                .filter(|op| op.kind == OperationKind::AddMember)
        })
        .await;
        let client = env.client.clone();
        env.operator.crash_and_restart(&client).await;
        // The step survives the crash in status.operation (unless it finished just before).
        if let Some(op) = env.status("c").await.operation {
            assert_eq!(op.kind, OperationKind::AddMember);
            assert!(
                op.name >= recorded.name,
                "{op:?} started over instead of resuming {recorded:?}"
            );
        }
        let s = env.wait_settled("c", 5).await;
        let names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c-0", "c-1", "c-2", "c-3", "c-4"]);
        env
    })
    .await;
}

#[tokio::test]
async fn an_image_change_restarts_one_pod_at_a_time_and_the_leader_last() {
    scenario("rolling", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        env.wait_settled("c", 3).await;
        let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
        let initial = sts.get("c").await.unwrap().status.unwrap().update_revision;
        env.patch_spec(
            "c",
            serde_json::json!({"sidecar": {"image": sidecar_image_next()}}),
        )
        .await;
        wait_for(
            "the StatefulSet to get a new update revision",
            WAIT,
            || async {
                let now = sts.get("c").await.ok()?.status?.update_revision;
                (now.is_some() && now != initial).then_some(())
            },
        )
        .await;
        // Record each restart step and who led when it was recorded.
        let restarts: RefCell<Vec<(String, Option<String>)>> = RefCell::new(Vec::new());
        wait_for(
            "every pod on the new revision and the cluster settled",
            WAIT,
            || {
                let env = &env;
                let sts = &sts;
                let restarts = &restarts;
                async move {
                    let s = env.status("c").await;
                    if let Some(op) = s
                        .operation
                        .as_ref()
                        .filter(|o| o.kind == OperationKind::RestartMember)
                    {
                        let mut restarts = restarts.borrow_mut();
                        if restarts.last().map(|r| &r.0) != Some(&op.name) {
                            restarts.push((op.name.clone(), s.leader.clone()));
                        }
                    }
                    let pods = env.pods().list(&ListParams::default()).await.ok()?;
                    let not_ready = pods
                        .items
                        .iter()
                        .filter(|p| {
                            !p.status
                                .as_ref()
                                .and_then(|st| st.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                        })
                        .count();
                    assert!(
                        not_ready <= 1,
                        "{not_ready} pods down at once during a rolling update"
                    );
                    let target = sts.get("c").await.ok()?.status?.update_revision?;
                    let updated = pods
                        .items
                        .iter()
                        .filter(|p| p.labels().get("controller-revision-hash") == Some(&target))
                        .count();
                    (updated == 3 && s.operation.is_none()).then_some(())
                }
            },
        )
        .await;
        let restarts = restarts.into_inner();
        assert_eq!(restarts.len(), 3, "one restart per pod: {restarts:?}");
        for (i, (pod, leader)) in restarts.iter().enumerate() {
            if i + 1 < restarts.len() {
                assert_ne!(
                    Some(pod),
                    leader.as_ref(),
                    "the leader was restarted before the others: {restarts:?}"
                );
            }
        }
        env.wait_settled("c", 3).await;
        env
    })
    .await;
}

#[tokio::test]
async fn example_daemons_in_every_pod_execute_the_same_operations_in_the_same_order() {
    scenario("daemons", |env| async move {
        let mut spec = env.spec(3);
        spec.daemon = Some(raft_crds::DaemonSpec {
            image: daemon_image(),
            args: vec![
                "--operations".into(),
                "40".into(),
                "--rate".into(),
                "20".into(),
            ],
            env: vec![],
            resources: None,
            security_context: None,
        });
        env.create("c", spec).await.unwrap();
        env.wait_settled("c", 3).await;
        let http = reqwest::Client::new();
        let digests = wait_for("all three daemons applied all 120 operations", WAIT, || {
            let env = &env;
            let http = &http;
            async move {
                let mut out = Vec::new();
                for pod in ["c-0", "c-1", "c-2"] {
                    let ip = env.pod_ip(pod).await?;
                    let v: serde_json::Value = http
                        .get(format!("http://{ip}:8081/digest"))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .ok()?
                        .json()
                        .await
                        .ok()?;
                    if v["executed"].as_u64()? < 120 {
                        return None;
                    }
                    out.push(v);
                }
                let same = out.windows(2).all(|w| {
                    w[0]["appliedIndex"] == w[1]["appliedIndex"] && w[0]["digest"] == w[1]["digest"]
                });
                same.then_some(out)
            }
        })
        .await;
        assert_eq!(
            digests[0]["executed"], 120,
            "each operation executed once: {digests:?}"
        );
        env
    })
    .await;
}
