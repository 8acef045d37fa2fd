//! Recovery from a permanent quorum loss: two of three pods lost with their volumes, the
//! survivor named with `kubectl raft recover`, the cluster rebuilt from it one member at a
//! time, and the daemons' journal unchanged. A request while a quorum answers is refused.

use std::path::PathBuf;
use std::process::Command;

use kube::api::DeleteParams;
use raft_crds::{RecoveryState, RecoveryStatus};

use crate::support::{
    Env, WAIT, daemon_digests, event_reasons, example_daemon, scenario, target_dir, wait_for,
};

/// `kubectl raft recover c --from POD`; returns the annotation value it set.
fn ask_for_recovery(env: &Env, from: &str) -> String {
    let plugin = std::env::var("KUBECTL_RAFT_BIN")
        .map_or_else(|_| target_dir().join("debug/kubectl-raft"), PathBuf::from);
    let out = Command::new(&plugin)
        .args(["-n", &env.ns, "recover", "c", "--from", from])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl raft recover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split("recover-from=")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no annotation value in {text:?}"))
        .to_owned()
}

/// The operator's answer to the request `value`.
async fn answer(env: &Env, value: &str) -> RecoveryStatus {
    wait_for(
        &format!("an answer to the recovery request {value}"),
        WAIT,
        || async {
            env.status("c")
                .await
                .recovery
                .filter(|r| r.request == value)
        },
    )
    .await
}

#[tokio::test]
async fn a_lost_majority_is_rebuilt_from_the_named_survivor_keeping_the_journal() {
    scenario("recovery", |env| async move {
        let mut spec = env.spec(3);
        spec.daemon = Some(example_daemon(&["--operations", "40", "--rate", "20"]));
        env.create("c", spec).await.unwrap();
        let before = env.wait_settled("c", 3).await;
        let digests = daemon_digests(&env, 120).await;

        // While a quorum answers, a recovery is refused (and answered once).
        let refused = answer(&env, &ask_for_recovery(&env, "c-1")).await;
        assert_eq!(refused.state, RecoveryState::Refused, "{refused:?}");
        assert!(
            refused.message.contains("quorum may be reachable"),
            "{refused:?}"
        );
        assert!(
            event_reasons(&env)
                .await
                .iter()
                .any(|r| r == "RecoveryRefused")
        );

        // The majority is lost for good: c-1 and c-2 with their volumes. They come back empty.
        for pod in ["c-1", "c-2"] {
            env.pvcs()
                .delete(&format!("data-{pod}"), &DeleteParams::default())
                .await
                .unwrap();
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            };
            env.pods().delete(pod, &dp).await.unwrap();
        }
        env.wait_condition("c", "QuorumAvailable", "False").await;
        // The survivor notices within a detection window; until then it is refused, and asked
        // again (a new annotation value is a new request).
        let accepted = wait_for("the recovery from c-0 to be accepted", WAIT, || async {
            let r = answer(&env, &ask_for_recovery(&env, "c-0")).await;
            (r.state != RecoveryState::Refused).then_some(r)
        })
        .await;
        assert_eq!(accepted.member, "c-0");
        let completed = wait_for("the recovery to complete", WAIT, || async {
            env.status("c")
                .await
                .recovery
                .filter(|r| r.state == RecoveryState::Completed)
        })
        .await;
        assert!(
            completed.message.contains("held every entry committed"),
            "{completed:?}"
        );

        // c-1 and c-2 join the recovered member one at a time; c-0 has a new node id.
        let after = env.wait_settled("c", 3).await;
        assert_eq!(after.cluster_id, before.cluster_id);
        let id = |s: &raft_crds::RaftClusterStatus, pod: &str| {
            s.members
                .iter()
                .find(|m| m.name == pod)
                .map(|m| m.node_id.clone())
        };
        assert_ne!(id(&after, "c-0"), id(&before, "c-0"));
        let reasons = event_reasons(&env).await;
        assert!(
            reasons.iter().any(|r| r == "ClusterRecovered"),
            "{reasons:?}"
        );

        // Every daemon executes the same 120 operations as before: the survivor kept them all,
        // and the new members' daemons, resubmitting their ids, got duplicates.
        let now = daemon_digests(&env, 120).await;
        for d in &now {
            assert_eq!(
                (&d["digest"], &d["appliedIndex"]),
                (&digests[0]["digest"], &digests[0]["appliedIndex"]),
                "{now:?} vs {digests:?}"
            );
        }
        env
    })
    .await;
}
