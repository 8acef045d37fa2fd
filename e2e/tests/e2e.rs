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

mod backup;
mod cert_manager;
mod plugin;
mod recovery;
mod stuck;
mod support;
mod upgrade;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use raft_crds::{MemberRole, OperationKind};
use support::{
    AssertRecover, WAIT, example_daemon, scenario, set_unschedulable, sidecar_image_next, wait_for,
};

#[tokio::test]
async fn a_three_node_raftcluster_becomes_available() {
    scenario("available", |env| async move {
        // A zone spread the pods must carry; ScheduleAnyway, so the one test node takes them.
        let mut spec = env.spec(3);
        spec.topology_spread_constraints = vec![
            serde_json::from_value(serde_json::json!({
                "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway"
            }))
            .unwrap(),
        ];
        env.create("c", spec).await.unwrap();
        let s = env.wait_settled("c", 3).await;
        // Failure domains by default: members preferably on different nodes.
        for pod in env.pods().list(&ListParams::default()).await.unwrap() {
            let spec = pod.spec.unwrap();
            let preferred = spec
                .affinity
                .and_then(|a| a.pod_anti_affinity)
                .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
                .unwrap_or_default();
            assert!(
                preferred
                    .iter()
                    .any(|t| t.pod_affinity_term.topology_key == "kubernetes.io/hostname"),
                "{} has no anti-affinity on hostname: {preferred:?}",
                pod.metadata.name.unwrap_or_default()
            );
            let spread = spec.topology_spread_constraints.unwrap_or_default();
            assert_eq!(spread.len(), 1, "{spread:?}");
            assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        }
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
async fn a_pod_whose_volume_was_lost_is_replaced_under_a_new_node_id_keeping_its_fresh_pod() {
    // The highest ordinal: once its old identity is out of the membership, the StatefulSet must
    // not shrink onto the membership (that would delete the fresh pod and its new claim).
    scenario("replace", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        let before = env.wait_settled("c", 3).await;
        let old_id = before
            .members
            .iter()
            .find(|m| m.name == "c-2")
            .unwrap()
            .node_id
            .clone();
        let uid = |meta: &kube::api::ObjectMeta| meta.uid.clone().unwrap_or_default();
        let original = uid(&env.pods().get("c-2").await.unwrap().metadata);
        // Delete the claim (protected until its pod is gone), then the pod.
        env.pvcs()
            .delete("data-c-2", &DeleteParams::default())
            .await
            .unwrap();
        env.pods()
            .delete("c-2", &DeleteParams::default())
            .await
            .unwrap();
        let (fresh_pod, fresh_claim) = wait_for("c-2 recreated with a new claim", WAIT, || async {
            let p = env.pods().get_opt("c-2").await.ok()??;
            let c = env.pvcs().get_opt("data-c-2").await.ok()??;
            let (p, c) = (uid(&p.metadata), uid(&c.metadata));
            (p != original && !c.is_empty()).then_some((p, c))
        })
        .await;
        let after = wait_for("c-2 back as a voter under a new node id", WAIT, || async {
            let s = env.status("c").await;
            let m = s.members.iter().find(|m| m.name == "c-2")?;
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
        assert_eq!(
            uid(&env.pods().get("c-2").await.unwrap().metadata),
            fresh_pod,
            "the fresh pod was deleted again during the replacement"
        );
        assert_eq!(
            uid(&env.pvcs().get("data-c-2").await.unwrap().metadata),
            fresh_claim,
            "the fresh claim was deleted again during the replacement"
        );
        env
    })
    .await;
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

/// The `AddMember` step of cluster `c`, once recorded in its status.
async fn add_member_recorded(env: &support::Env) -> raft_crds::OperationStatus {
    wait_for("an AddMember step recorded", WAIT, || async {
        env.status("c")
            .await
            .operation
            .filter(|op| op.kind == OperationKind::AddMember)
    })
    .await
}

/// The step in flight, if any, is `recorded` or a later one of the same kind: not started over.
async fn assert_resumed(env: &support::Env, recorded: &raft_crds::OperationStatus) {
    if let Some(op) = env.status("c").await.operation {
        assert_eq!(op.kind, OperationKind::AddMember);
        assert!(
            op.name >= recorded.name,
            "{op:?} started over instead of resuming {recorded:?}"
        );
    }
}

#[tokio::test]
async fn an_operator_restarted_mid_scale_resumes_the_recorded_step() {
    scenario("restart-op", |mut env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        env.wait_settled("c", 3).await;
        env.scale("c", 5).await.unwrap();
        let recorded = add_member_recorded(&env).await;
        let client = env.client.clone();
        env.operator.crash_and_restart(&client).await;
        // The step survives the crash in status.operation (unless it finished just before).
        assert_resumed(&env, &recorded).await;
        let s = env.wait_settled("c", 5).await;
        let names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c-0", "c-1", "c-2", "c-3", "c-4"]);
        env
    })
    .await;
}

#[tokio::test]
async fn a_standby_operator_takes_over_a_step_when_the_leader_is_killed_in_its_middle() {
    scenario("failover", |mut env| async move {
        // Two operator processes electing a leader (the chart's two replicas on kind).
        env.operator.start_elected(&["op-a", "op-b"]).await;
        env.create("c", env.spec(3)).await.unwrap();
        env.wait_settled("c", 3).await;
        // Killed in the middle of a step: the standby resumes it.
        env.scale("c", 5).await.unwrap();
        let recorded = add_member_recorded(&env).await;
        let client = env.client.clone();
        let killed = env.operator.kill_leader(&client).await;
        let killed_at = std::time::Instant::now();
        // The standby takes the Lease over once the dead leader's claim has expired (15 s by
        // the standby's clock, plus a retry period), and reconciles: the scale settles.
        let successor = wait_for("another operator holding the Lease", WAIT, || async {
            env.operator
                .leader(&env.client)
                .await
                .filter(|holder| *holder != killed)
        })
        .await;
        let took = killed_at.elapsed();
        assert!(
            took < Duration::from_secs(40),
            "{successor} took {took:?} to take over from {killed}"
        );
        // The step survives in status.operation (unless it finished before the kill).
        assert_resumed(&env, &recorded).await;
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
        let before = env.wait_settled("c", 3).await.term.unwrap_or(0);
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
                    let not_ready = pods.items.iter().filter(|p| !support::is_ready(p)).count();
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
        // Before evicting the leader the operator asked it to hand over (the sidecar also
        // does on SIGTERM, so the operator's log is what tells the two apart).
        if let Some(handed) = env.operator.logged("leadership handed over") {
            assert!(
                handed,
                "the operator handed leadership over before restarting the leader:\n{}",
                env.operator.log_tail()
            );
        }
        // No restarted follower deposed the leader (a restarted pod has a new address, which
        // the leader reaches only after its dial to the old one failed): the handoff is the
        // roll's only election.
        let after = env.wait_settled("c", 3).await.term.unwrap_or(0);
        assert!(
            after <= before + 1,
            "the term went from {before} to {after} in one rolling update"
        );
        env
    })
    .await;
}

#[tokio::test]
async fn example_daemons_in_every_pod_execute_the_same_operations_in_the_same_order() {
    scenario("daemons", |env| async move {
        let mut spec = env.spec(3);
        spec.daemon = Some(example_daemon(&["--operations", "40", "--rate", "20"]));
        env.create("c", spec).await.unwrap();
        env.wait_settled("c", 3).await;
        let digests = support::daemon_digests(&env, 120).await;
        assert_eq!(
            digests[0]["executed"], 120,
            "each operation executed once: {digests:?}"
        );
        env
    })
    .await;
}

#[tokio::test]
async fn an_object_the_cluster_does_not_own_is_left_alone_and_its_network_policy_follows_the_spec()
{
    use k8s_openapi::api::core::v1::{Event, Service};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::api::PostParams;

    scenario("owned", |env| async move {
        // Someone else's Service, named like the cluster's headless Service.
        let services: Api<Service> = Api::namespaced(env.client.clone(), &env.ns);
        let theirs: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "theirs"}}
        }))
        .unwrap();
        services
            .create(&PostParams::default(), &theirs)
            .await
            .unwrap();
        env.create("c", env.spec(1)).await.unwrap();

        let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
        wait_for("a NotOwned Event on raftcluster c", WAIT, || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("NotOwned")
                        && e.involved_object.name.as_deref() == Some("c")
                })
                .then_some(())
        })
        .await;
        let svc = services.get("c").await.unwrap();
        assert!(
            svc.metadata.owner_references.is_none(),
            "the operator took the Service over: {:?}",
            svc.metadata.owner_references
        );
        let selector = svc.spec.unwrap().selector.unwrap();
        assert_eq!(selector.get("app").map(String::as_str), Some("theirs"));

        // Once its owner removes it, the cluster comes up with its own Service and policy.
        services
            .delete("c", &DeleteParams::default())
            .await
            .unwrap();
        env.wait_settled("c", 1).await;
        let policies: Api<NetworkPolicy> = Api::namespaced(env.client.clone(), &env.ns);
        let spec = policies.get("c").await.unwrap().spec.unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        let rules = spec.ingress.unwrap();
        let opens = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule,
                     port: i32| {
            rule.ports.iter().flatten().any(|p| {
                use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                let Some(IntOrString::Int(first)) = p.port else {
                    return false;
                };
                p.protocol.as_deref() == Some("TCP")
                    && first <= port
                    && port <= p.end_port.unwrap_or(first)
            })
        };
        let peer: Vec<_> = rules.iter().filter(|r| opens(r, 7070)).collect();
        assert_eq!(peer.len(), 1, "one rule opens the peer port: {peer:?}");
        let from = peer[0]
            .from
            .as_ref()
            .expect("the peer port names its sources");
        let labels = from[0].pod_selector.as_ref().unwrap().match_labels.as_ref();
        assert_eq!(
            labels.and_then(|l| l.get("app.kubernetes.io/instance")),
            Some(&"c".to_owned())
        );
        for rule in rules.iter().filter(|r| opens(r, 7090)) {
            assert!(rule.from.is_some(), "the admin port is never open to all");
        }
        assert!(
            rules.iter().any(|r| opens(r, 8080) && r.from.is_none()),
            "the daemon's ports stay open"
        );

        // Switched off: the operator deletes its policy.
        env.patch_spec(
            "c",
            serde_json::json!({"networkPolicy": {"enabled": false}}),
        )
        .await;
        wait_for("the NetworkPolicy to be deleted", WAIT, || async {
            policies.get_opt("c").await.ok()?.is_none().then_some(())
        })
        .await;
        env
    })
    .await;
}

#[tokio::test]
async fn the_identity_outlives_its_raftcluster_and_is_never_made_anew_over_existing_data() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PostParams;

    scenario("identity", |env| async move {
        env.create("c", env.spec(1)).await.unwrap();
        let first = env.wait_settled("c", 1).await;
        let id = first.cluster_id.clone().expect("cluster id recorded");
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
        let saved = secrets.get("c-token").await.unwrap();
        assert!(
            saved.metadata.owner_references.is_none(),
            "the token Secret is not garbage-collected with the RaftCluster"
        );

        // The token Secret lost: reported, never made anew. A reconcile that read the Secret
        // just before it was deleted writes back what it read (the same token and cluster id,
        // so nothing is lost); delete it until the operator sees it missing.
        let s = wait_for(
            "Degraded=True after the token Secret was deleted",
            WAIT,
            || async {
                if secrets.get_opt("c-token").await.ok()?.is_some() {
                    secrets
                        .delete("c-token", &DeleteParams::default())
                        .await
                        .ok()?;
                }
                let s = env.status("c").await;
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Degraded" && c.status == "True")
                    .then_some(s)
            },
        )
        .await;
        let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
        assert_eq!(degraded.reason, "IdentityLost", "{degraded:?}");
        assert!(secrets.get_opt("c-token").await.unwrap().is_none());
        assert_eq!(s.cluster_id.as_deref(), Some(id.as_str()));

        // Restored (as docs/operator.md says): healthy again.
        let mut restored = saved.clone();
        restored.metadata = kube::api::ObjectMeta {
            name: saved.metadata.name.clone(),
            labels: saved.metadata.labels.clone(),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &restored)
            .await
            .unwrap();
        env.wait_condition("c", "Degraded", "False").await;

        // Deleted: the pods go, the identity and the volume stay ...
        env.clusters()
            .delete("c", &DeleteParams::default())
            .await
            .unwrap();
        wait_for(
            "the pod of the deleted cluster to be gone",
            WAIT,
            || async {
                env.pods()
                    .get_opt("c-0")
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            },
        )
        .await;
        assert!(secrets.get_opt("c-token").await.unwrap().is_some());
        assert!(env.pvcs().get_opt("data-c-0").await.unwrap().is_some());

        // ... and a RaftCluster re-created under the name adopts both: same cluster id, and its
        // member opens its old data (a member refuses data of another cluster id).
        env.create("c", env.spec(1)).await.unwrap();
        let again = env.wait_settled("c", 1).await;
        assert_eq!(again.cluster_id.as_deref(), Some(id.as_str()));
        env
    })
    .await;
}

#[tokio::test]
async fn certificates_renewed_and_the_ca_rotated_under_load_cost_no_restart_and_no_failed_write() {
    use k8s_openapi::api::core::v1::Secret;

    const PODS: [&str; 3] = ["c-0", "c-1", "c-2"];
    // 3 × 1500 writes at up to 20/s each: 75 s or more of writing, so the renewal and the CA
    // rotation after it happen mid-stream.
    const OPERATIONS: u64 = 1500;
    const LOADED: &str = "consensus_tls_reloads_total{reason=\"loaded\"}";
    const REFUSED: &str = "consensus_tls_reloads_total{reason=\"refused\"}";
    const EXPIRY: &str = "consensus_tls_certificate_expiry_timestamp_seconds";

    scenario("rotation", |env| async move {
        let mut spec = env.spec(3);
        spec.daemon = Some(example_daemon(&[
            "--operations",
            &OPERATIONS.to_string(),
            "--rate",
            "20",
        ]));
        env.create("c", spec).await.unwrap();
        env.wait_settled("c", 3).await;
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);

        // Who each pod is now: a restart or a recreation changes one of these.
let identity = || support::pod_identities(&env, &PODS);
        let before = identity().await;

        // The admin port's /metrics: HTTPS with the cluster CA, no client certificate; the
        // member certificates name the pods' stable DNS names, which resolve to the pod IPs.
        let ca = secrets.get("c-ca").await.unwrap().data.unwrap()["ca.crt"]
            .0
            .clone();
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(2));
        let mut urls = BTreeMap::new();
        let mut resolved = BTreeMap::new();
        for pod in PODS {
            let ip: std::net::IpAddr = env.pod_ip(pod).await.unwrap().parse().unwrap();
            let host = format!("{pod}.c.{}.svc.cluster.local", env.ns);
            builder = builder.resolve(&host, std::net::SocketAddr::new(ip, 7090));
            urls.insert(pod, format!("https://{host}:7090/metrics"));
            resolved.insert(pod, ip);
        }
        let admin = builder.build().unwrap();
        let metrics = |pod: &'static str| {
            let (admin, url) = (&admin, &urls[pod]);
            async move {
                let text = admin.get(url).send().await.ok()?.text().await.ok()?;
                Some((
                    support::metric(&text, LOADED).unwrap_or(0.0),
                    support::metric(&text, REFUSED).unwrap_or(0.0),
                    support::metric(&text, EXPIRY)?,
                ))
            }
        };
        let daemons = reqwest::Client::new();
        let digests = || async {
            let mut out = Vec::new();
            for pod in PODS {
                out.push(support::daemon_digest(&daemons, &env, pod).await?);
            }
            Some(out)
        };
        let acknowledged = |ds: &[serde_json::Value]| -> u64 {
            ds.iter().map(|d| d["acknowledged"].as_u64().unwrap_or(0)).sum()
        };

        let mut old_metrics = BTreeMap::new();
        for pod in PODS {
            let m = wait_for(&format!("{pod}'s /metrics over TLS"), WAIT, || metrics(pod)).await;
            old_metrics.insert(pod, m);
        }
        let writing = wait_for("every daemon to have written 20 operations", WAIT, || async {
            let ds = digests().await?;
            ds.iter()
                .all(|d| d["acknowledged"].as_u64().is_some_and(|a| a >= 20))
                .then_some(ds)
        })
        .await;
        let old_tls = secrets.get("c-tls").await.unwrap().data.unwrap();

        // The operator renews the member certificates from the same CA into a new Secret.
        secrets
            .delete("c-tls", &DeleteParams::default())
            .await
            .unwrap();
        let new_tls = wait_for("c-tls with new member certificates", WAIT, || async {
            let data = secrets.get_opt("c-tls").await.ok()??.data?;
            PODS.iter()
                .all(|pod| {
                    let key = format!("{pod}.crt");
                    data.contains_key(&key) && data.get(&key) != old_tls.get(&key)
                })
                .then_some(data)
        })
        .await;
        assert_eq!(new_tls["ca.crt"], old_tls["ca.crt"], "the same CA");

        let mut new_metrics = BTreeMap::new();
        for pod in PODS {
            let (loaded, _, expiry) = old_metrics[pod];
            let m = wait_for(
                &format!("{pod}'s sidecar to load its new certificate"),
                WAIT,
                || async {
                    let m = metrics(pod).await?;
                    (m.0 > loaded && m.2 > expiry).then_some(m)
                },
            )
            .await;
            new_metrics.insert(pod, m);
        }
        let reloaded = digests().await.unwrap();
        let during = acknowledged(&reloaded).saturating_sub(acknowledged(&writing));

        // The CA rotated on request, the daemons still writing.
        let ca_before = secrets.get("c-ca").await.unwrap().data.unwrap();
        let identity_of = |data: &BTreeMap<String, k8s_openapi::ByteString>| {
            let pem = [&data["operator.crt"].0[..], b"\n", &data["operator.key"].0[..]].concat();
            reqwest::Identity::from_pem(&pem).unwrap()
        };
        let old_operator = identity_of(&ca_before);
        env.clusters()
            .patch(
                "c",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                    "consensus.unrdf.io/rotate-ca": "e2e"}}})),
            )
            .await
            .unwrap();
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(env.client.clone(), &env.ns);
        let rotation_started = std::time::Instant::now();
        wait_for("the CaRotationFinished Event", WAIT, || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("CaRotationFinished"))
                .then_some(())
        })
        .await;
        let rotation_took = rotation_started.elapsed();
        let ca_after = secrets.get("c-ca").await.unwrap().data.unwrap();
        assert_ne!(ca_after["ca.crt"], ca_before["ca.crt"], "a new CA");
        let tls_after = secrets.get("c-tls").await.unwrap().data.unwrap();
        assert_eq!(
            tls_after["ca.crt"], ca_after["ca.crt"],
            "members trust the new CA alone"
        );
        let rotated = digests().await.unwrap();
        assert!(
            rotated
                .iter()
                .any(|d| d["acknowledged"].as_u64() < Some(OPERATIONS)),
            "the daemons were still writing when the rotation finished: {rotated:?}"
        );
        // Afterwards the old CA's certificates are refused and the new ones accepted, on every
        // member's admin API (the client certificate is checked at the handshake).
        let token = String::from_utf8(
            secrets.get("c-token").await.unwrap().data.unwrap()["token"]
                .0
                .clone(),
        )
        .unwrap();
        let admin_as = |identity: reqwest::Identity| {
            let mut b = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&ca_after["ca.crt"].0).unwrap())
                .identity(identity)
                .timeout(Duration::from_secs(2));
            for pod in PODS {
                let host = format!("{pod}.c.{}.svc.cluster.local", env.ns);
                b = b.resolve(&host, std::net::SocketAddr::new(resolved[pod], 7090));
            }
            b.build().unwrap()
        };
        let (with_old, with_new) = (admin_as(old_operator), admin_as(identity_of(&ca_after)));
        for pod in PODS {
            let status = urls[pod].replace("/metrics", "/admin/v1/status");
            let how = wait_for(
                &format!("{pod} to refuse the old CA's certificate"),
                WAIT,
                || async {
                    // Refused at the handshake, or (if the client withheld a certificate the
                    // server's CA hints do not name) answered as a caller without one.
                    match with_old.get(&status).bearer_auth(&token).send().await {
                        Err(e) => Some(format!("refused: {e}")),
                        Ok(answer) if matches!(answer.status().as_u16(), 401 | 403) => {
                            Some(format!("answered {}", answer.status()))
                        }
                        Ok(_) => None,
                    }
                },
            )
            .await;
            eprintln!("{pod} with the old CA's certificate: {how}");
            let answer = with_new
                .get(&status)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{pod} accepts the new CA's certificate");
        }
        assert!(
            reloaded
                .iter()
                .any(|d| d["acknowledged"].as_u64() < Some(OPERATIONS)),
            "the daemons were still writing when every sidecar had the new certificates: {reloaded:?}"
        );

        let total = OPERATIONS * 3;
        let done = support::daemon_digests(&env, total).await;
        for d in &done {
            assert_eq!(d["executed"], total, "each operation executed once: {done:?}");
            assert_eq!(d["failed"], 0, "no write given up on: {done:?}");
            assert_eq!(d["acknowledged"], OPERATIONS, "every write acknowledged: {done:?}");
        }
        assert_eq!(identity().await, before, "no pod restarted or was recreated");

        // What the rotation cost, for the record (not asserted: retries are allowed).
        let pods = env.pods();
        let mut retries = 0;
        for pod in PODS {
            let lp = kube::api::LogParams {
                container: Some("daemon".into()),
                ..kube::api::LogParams::default()
            };
            let log = pods.logs(pod, &lp).await.unwrap_or_default();
            retries += log.matches("submit failed, retrying").count();
        }
        eprintln!(
            "renewal: {during} writes acknowledged from just before the Secret's deletion until \
             the last sidecar's reload ({} before, {total} in all); (loaded, refused, expiry) \
             per sidecar before {old_metrics:?}, after {new_metrics:?}; CA rotation: {:.1} s \
             from the request to CaRotationFinished, {} writes acknowledged meanwhile; {retries} \
             submit retries in the daemon logs; 0 failed writes, 0 restarts",
            acknowledged(&writing),
            rotation_took.as_secs_f64(),
            acknowledged(&rotated).saturating_sub(acknowledged(&reloaded)),
        );
        env
    })
    .await;
}

#[tokio::test]
async fn a_node_drain_during_a_rolling_update_never_takes_two_members_down() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use k8s_openapi::api::core::v1::Pod;
    use kube::api::EvictParams;

    const PODS: [&str; 3] = ["c-0", "c-1", "c-2"];

    /// Members not Ready (missing pods included), as a drain or a restart leaves them.
    async fn down(pods: &Api<Pod>) -> Option<usize> {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|p| PODS.contains(&p.name_any().as_str()))
            .filter(|p| support::is_ready(p))
            .count();
        Some(PODS.len() - ready)
    }

    scenario("drain", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        env.wait_settled("c", 3).await;
        let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
        let initial = sts.get("c").await.unwrap().status.unwrap().update_revision;

        // Watch how many members are down, every 200 ms, for the whole scenario.
        let (most_down, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let sampler = {
            let (pods, most_down, stop) = (env.pods(), most_down.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(n) = down(&pods).await {
                        most_down.fetch_max(n, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };

        // A rolling update and a drain of the (only) node at once.
        env.patch_spec(
            "c",
            serde_json::json!({"sidecar": {"image": sidecar_image_next()}}),
        )
        .await;
        set_unschedulable(&env, true).await;
        let pods = env.pods();
        let mut evicted = Vec::new();
        // Uncordoned whatever happens, so a failure here does not fail every later scenario.
        let drained = AssertRecover(async {
            for pod in PODS {
                // As `kubectl drain` does: evict, and ask again while the budget refuses.
                wait_for(&format!("the drain to evict {pod}"), WAIT, || async {
                    match pods.evict(pod, &EvictParams::default()).await {
                        Ok(_) => Some(()),
                        Err(kube::Error::Api(s)) if s.code == 404 => Some(()),
                        Err(kube::Error::Api(s)) if s.code == 429 => None,
                        Err(e) => panic!("evicting {pod}: {e}"),
                    }
                })
                .await;
                evicted.push(pod);
                if evicted.len() == 1 {
                    // The evicted member cannot come back while the node is cordoned: whatever
                    // else wants a member down (the operator's restart, the rest of the drain)
                    // must wait for the budget.
                    wait_for(
                        &format!("{pod}'s replacement to be Pending"),
                        WAIT,
                        || async {
                            let p = pods.get_opt(pod).await.ok()??;
                            (p.status?.phase.as_deref() == Some("Pending")).then_some(())
                        },
                    )
                    .await;
                    // Hold until the operator has seen the member down and holds its own change:
                    // a rolling update waits on the unhealthy member, or on the restarted one, or
                    // (the drained member being down, it goes first) restarts the drained one.
                    wait_for("the operator to hold its rolling update", WAIT, || async {
                        let s = env.status("c").await;
                        let waits = s.conditions.iter().any(|c| {
                            c.type_ == "Progressing"
                                && matches!(c.reason.as_str(), "MemberUnhealthy" | "AwaitingRejoin")
                        });
                        let restarts_drained = s.operation.as_ref().is_some_and(|op| {
                            op.kind == OperationKind::RestartMember && op.name == *pod
                        });
                        (waits || restarts_drained).then_some(())
                    })
                    .await;
                    assert!(
                        most_down.load(Ordering::Relaxed) <= 1,
                        "a second member went down while one was drained"
                    );
                    set_unschedulable(&env, false).await;
                }
            }
        })
        .run()
        .await;
        set_unschedulable(&env, false).await;
        drained.unwrap_or_else(|p| std::panic::resume_unwind(p));

        wait_for(
            "every pod on the new revision and the cluster settled",
            WAIT,
            || async {
                let target = sts.get("c").await.ok()?.status?.update_revision?;
                if Some(&target) == initial.as_ref() {
                    return None;
                }
                let list = pods.list(&ListParams::default()).await.ok()?;
                let updated = list
                    .items
                    .iter()
                    .filter(|p| p.labels().get("controller-revision-hash") == Some(&target))
                    .count();
                let s = env.status("c").await;
                (updated == 3 && s.operation.is_none()).then_some(())
            },
        )
        .await;
        env.wait_settled("c", 3).await;
        stop.store(true, Ordering::Relaxed);
        sampler.await.unwrap();
        assert_eq!(
            most_down.load(Ordering::Relaxed),
            1,
            "one member down at a time, never two (and the drain did take one down)"
        );
        env
    })
    .await;
}
