//! Ways out of stuck states, without `kubectl delete pod` or a status edit: a bad rollout heals
//! when the spec is reverted, and a recorded step the spec no longer wants is given up before
//! it does anything irreversible.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;
use raft_crds::OperationKind;

use crate::support::{
    self, AssertRecover, Env, WAIT, pod_uids, scenario, set_unschedulable, sidecar_image,
    update_revision, wait_for,
};

/// The restart the operator recorded for the bad revision, once its pod is on that revision and
/// `broken` says it does not work.
async fn restart_stuck_on_bad_revision(env: &Env, broken: fn(&Pod) -> bool) -> String {
    wait_for(
        "a restarted pod stuck on the bad revision",
        WAIT,
        || async {
            let s = env.status("c").await;
            let op = s
                .operation
                .filter(|o| o.kind == OperationKind::RestartMember)?;
            let pod = env.pods().get_opt(&op.name).await.ok()??;
            let bad = update_revision(env).await?;
            (pod.labels().get("controller-revision-hash") == Some(&bad) && broken(&pod))
                .then_some(op.name)
        },
    )
    .await
}

/// Settled with three voters, every pod Ready on the StatefulSet's update revision.
async fn wait_healed(env: &Env) {
    wait_for("every pod Ready on the update revision", WAIT, || async {
        let target = update_revision(env).await?;
        let pods = env.pods().list(&ListParams::default()).await.ok()?;
        let good = pods.items.iter().filter(|p| {
            support::is_ready(p) && p.labels().get("controller-revision-hash") == Some(&target)
        });
        (good.count() == 3).then_some(())
    })
    .await;
    env.wait_settled("c", 3).await;
}

fn image_does_not_start(pod: &Pod) -> bool {
    let waiting = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
    waiting.into_iter().any(|r| r == "ErrImagePull")
}

fn unschedulable(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
}

/// Break the pod template with `bad`, wait until the rolling update's first pod is stuck on it,
/// revert with `good`: the stuck pod is replaced and no other pod is restarted.
async fn rollback(
    env: &Env,
    bad: serde_json::Value,
    good: serde_json::Value,
    broken: fn(&Pod) -> bool,
) {
    let before = pod_uids(env).await;
    env.patch_spec("c", bad).await;
    let stuck = restart_stuck_on_bad_revision(env, broken).await;
    env.patch_spec("c", good).await;
    wait_healed(env).await;
    let after = pod_uids(env).await;
    for (name, uid) in &before {
        if *name == stuck {
            assert_ne!(after.get(name), Some(uid), "{name} was replaced");
        } else {
            assert_eq!(after.get(name), Some(uid), "{name} was never restarted");
        }
    }
}

#[tokio::test]
async fn a_bad_rollout_heals_when_the_spec_is_reverted() {
    scenario("rollback", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        env.wait_settled("c", 3).await;

        // An image that cannot start (no such image: it cannot be pulled).
        rollback(
            &env,
            serde_json::json!({"sidecar": {"image": "raft-sidecar-missing:1"}}),
            serde_json::json!({"sidecar": {"image": sidecar_image()}}),
            image_does_not_start,
        )
        .await;

        // A node selector no node matches: the restarted pod stays Pending.
        rollback(
            &env,
            serde_json::json!({"podTemplate": {"nodeSelector": {"e2e.unrdf.io/nowhere": "true"}}}),
            serde_json::json!({"podTemplate": {"nodeSelector": null}}),
            unschedulable,
        )
        .await;
        env
    })
    .await;
}

#[tokio::test]
async fn scaling_3_to_5_and_back_before_the_new_member_joins_adds_and_removes_no_one() {
    scenario("abandon", |env| async move {
        env.create("c", env.spec(3)).await.unwrap();
        let before = env.wait_settled("c", 3).await;
        let ids = |s: &raft_crds::RaftClusterStatus| -> Vec<String> {
            s.members.iter().map(|m| m.node_id.clone()).collect()
        };

        // The node cordoned: the new member's pod stays Pending while the spec changes back.
        set_unschedulable(&env, true).await;
        let result = AssertRecover(async {
            env.patch_spec("c", serde_json::json!({"replicas": 5}))
                .await;
            wait_for("the add of c-3 recorded and its pod made", WAIT, || async {
                let s = env.status("c").await;
                let op = s.operation.filter(|o| o.kind == OperationKind::AddMember)?;
                assert_eq!(op.name, "c-3");
                env.pods().get_opt("c-3").await.ok()?.map(|_| ())
            })
            .await;
            env.patch_spec("c", serde_json::json!({"replicas": 3}))
                .await;
            wait_for("the add given up and c-3 gone", WAIT, || async {
                let s = env.status("c").await;
                assert!(s.members.len() <= 3, "a member was added: {:?}", s.members);
                let gone = env.pods().get_opt("c-3").await.ok()?.is_none();
                (s.operation.is_none() && gone).then_some(())
            })
            .await;
        })
        .run()
        .await;
        set_unschedulable(&env, false).await;
        result.unwrap_or_else(|p| std::panic::resume_unwind(p));

        let after = env.wait_settled("c", 3).await;
        assert_eq!(ids(&before), ids(&after), "the same three members");
        let reasons = support::event_reasons(&env).await;
        assert!(reasons.iter().any(|r| r == "StepAbandoned"), "{reasons:?}");
        for never in ["MemberAdded", "MemberRemoved"] {
            assert!(!reasons.iter().any(|r| r == never), "{never}: {reasons:?}");
        }
        env
    })
    .await;
}

#[tokio::test]
async fn a_voter_that_is_down_does_not_block_a_scale_down() {
    scenario("down-voter", |env| async move {
        env.create("c", env.spec(5)).await.unwrap();
        let before = env.wait_settled("c", 5).await;
        let old_id = |s: &raft_crds::RaftClusterStatus, name: &str| {
            s.members
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.node_id.clone())
        };

        // c-1 down (deleted with the node cordoned, so it stays Pending), then 5 → 3.
        set_unschedulable(&env, true).await;
        let result = AssertRecover(async {
            env.pods()
                .delete("c-1", &kube::api::DeleteParams::default())
                .await
                .unwrap();
            // Down before the scale-down starts (else the highest goes first, legitimately).
            wait_for("c-1 reported unhealthy", WAIT, || async {
                let s = env.status("c").await;
                let c1 = s.members.iter().find(|m| m.name == "c-1")?;
                (!c1.healthy).then_some(())
            })
            .await;
            env.patch_spec("c", serde_json::json!({"replicas": 3}))
                .await;
            wait_for(
                "c-1 removed from the membership while down",
                WAIT,
                || async {
                    let s = env.status("c").await;
                    (old_id(&s, "c-1").is_none()).then_some(())
                },
            )
            .await;
        })
        .run()
        .await;
        set_unschedulable(&env, false).await;
        result.unwrap_or_else(|p| std::panic::resume_unwind(p));

        // c-1 comes back and is added again, and the highest ordinals go (three
        // voters c-0, c-2, c-3 on the way are not the end).
        wait_for("the voters to be c-0, c-1 and c-2", WAIT, || async {
            let s = env.status("c").await;
            let mut names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
            names.sort_unstable();
            (names == ["c-0", "c-1", "c-2"] && s.operation.is_none()).then_some(())
        })
        .await;
        // c-1 rejoins under its old identity (its data was intact) or a fresh one (once it has
        // learnt it was removed): either is safe; the members that stayed keep theirs.
        let after = env.wait_settled("c", 3).await;
        for kept in ["c-0", "c-2"] {
            assert_eq!(old_id(&after, kept), old_id(&before, kept));
        }
        env
    })
    .await;
}
