//! Operator upgrades: clusters that name no sidecar image keep the one they run when the
//! operator's default changes, and move onto the new default only when asked, one cluster at a
//! time.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::support::{
    self, Env, WAIT, pod_uids, scenario, sidecar_image, sidecar_image_next, update_revision,
    wait_for,
};

/// The annotation asking a cluster to move onto the operator's default sidecar image.
const UPGRADE: &str = "consensus.unrdf.io/upgrade-sidecar";

/// The image of a pod's sidecar container.
fn pod_sidecar_image(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "raft-sidecar")?
        .image
        .clone()
}

/// The image of the sidecar container in the StatefulSet's pod template.
async fn template_sidecar_image(env: &Env) -> Option<String> {
    let sts: Api<StatefulSet> = Api::namespaced(env.client.clone(), &env.ns);
    sts.get("c")
        .await
        .ok()?
        .spec?
        .template
        .spec?
        .containers
        .into_iter()
        .find(|c| c.name == "raft-sidecar")?
        .image
}

#[tokio::test]
async fn an_operator_upgrade_restarts_no_pod_until_the_cluster_asks_for_the_new_sidecar() {
    scenario("upgrade", |mut env| async move {
        let client = env.client.clone();
        env.operator
            .restart_with_sidecar_image(&client, &sidecar_image())
            .await;
        let mut spec = env.spec(3);
        spec.sidecar.image = None;
        env.create("c", spec).await.unwrap();
        env.wait_settled("c", 3).await;
        assert_eq!(template_sidecar_image(&env).await, Some(sidecar_image()));
        let revision = update_revision(&env).await;
        let uids = pod_uids(&env).await;

        // The operator upgraded: its default sidecar is another image.
        env.operator
            .restart_with_sidecar_image(&client, &sidecar_image_next())
            .await;
        // A spec change that touches no pod, so that the new operator's reconcile is seen
        // (observedGeneration): it applies the StatefulSet before it writes the status.
        env.patch_spec(
            "c",
            serde_json::json!({"networkPolicy": {"adminFrom": [
                {"podSelector": {"matchLabels": {"app": "toolbox"}}}
            ]}}),
        )
        .await;
        let generation = env.clusters().get("c").await.unwrap().metadata.generation;
        wait_for(
            "the upgraded operator to reconcile the new generation",
            WAIT,
            || async { (env.status("c").await.observed_generation >= generation).then_some(()) },
        )
        .await;
        assert_eq!(
            template_sidecar_image(&env).await,
            Some(sidecar_image()),
            "the upgraded operator changed the sidecar of a running cluster"
        );
        assert_eq!(update_revision(&env).await, revision);
        assert_eq!(pod_uids(&env).await, uids, "pods were restarted");
        let pods = env.pods().list(&ListParams::default()).await.unwrap();
        assert!(pods.items.iter().all(support::is_ready));
        let s = env.status("c").await;
        assert_eq!(s.sidecar_image, Some(sidecar_image()));

        // Asked for: the cluster moves onto the operator's image, one member at a time.
        env.clusters()
            .patch(
                "c",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                    UPGRADE: "2026-12-05T20:00:00Z"
                }}})),
            )
            .await
            .unwrap();
        wait_for(
            "every pod running the operator's new sidecar image, the cluster settled",
            WAIT,
            || async {
                let s = env.status("c").await;
                let pods = env.pods().list(&ListParams::default()).await.ok()?;
                let down = pods.items.iter().filter(|p| !support::is_ready(p)).count();
                assert!(down <= 1, "{down} members down at once during the upgrade");
                let upgraded = pods
                    .items
                    .iter()
                    .filter(|p| {
                        support::is_ready(p) && pod_sidecar_image(p) == Some(sidecar_image_next())
                    })
                    .count();
                (upgraded == 3 && s.operation.is_none()).then_some(())
            },
        )
        .await;
        let s = env.wait_settled("c", 3).await;
        assert_eq!(s.sidecar_image, Some(sidecar_image_next()));
        assert_eq!(
            s.sidecar_upgrade_request.as_deref(),
            Some("2026-12-05T20:00:00Z")
        );
        assert_ne!(update_revision(&env).await, revision);

        // Leave a Deployment-run operator (shared by the suite) as it was.
        env.operator
            .restart_with_sidecar_image(&client, &sidecar_image())
            .await;
        env
    })
    .await;
}
