//! Backups to a PersistentVolumeClaim: the operator mounts no volumes, so a Job of the
//! cluster's sidecar image writes each one to the volume (checked on the volume itself: image,
//! manifest, checksum) and is deleted once its result is read; a new RaftCluster restored from
//! that volume (again through a Job) executes exactly the journal the old one's daemon executed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, PostParams};
use raft_api::backup::{BackupManifest, MANIFEST_SUFFIX};
use raft_crds::{BackupSpec, BootstrapSpec, FromBackupSpec, LATEST_BACKUP, VolumeDestination};

use super::{ask_for_backup, follower_daemon, sha256, wait_backup};
use crate::support::{Env, WAIT, daemon_digests_of_members, example_daemon, scenario, wait_for};

const CLAIM: &str = "backups";

/// A 1 GiB ReadWriteOnce claim named [`CLAIM`], provisioned as the test node provisions all.
async fn create_claim(env: &Env) {
    let claim = PersistentVolumeClaim {
        metadata: kube::api::ObjectMeta {
            name: Some(CLAIM.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("1Gi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    };
    env.pvcs()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
}

/// The directory on this machine that backs the claim (the test node's volumes are
/// `hostPath` directories).
async fn claim_dir(env: &Env) -> PathBuf {
    let volume = wait_for("the backup claim to be bound", WAIT, || async {
        env.pvcs().get(CLAIM).await.ok()?.spec?.volume_name
    })
    .await;
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    let path = pvs
        .get(&volume)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.host_path)
        .map(|h| PathBuf::from(h.path))
        .expect("the test node provisions hostPath volumes");
    assert!(
        path.is_dir(),
        "the volume {volume} is not on this machine ({}): run this scenario on the local \
         control plane",
        path.display()
    );
    path
}

#[tokio::test]
async fn backups_to_a_volume_are_written_by_a_job_and_a_new_cluster_restores_from_it() {
    scenario("backup-pvc", |env| async move {
        create_claim(&env).await;
        let mut spec = env.spec(1);
        spec.daemon = Some(example_daemon(&["--operations", "40", "--rate", "20"]));
        // Once a year: backups run when asked for.
        spec.backup = Some(BackupSpec {
            schedule: "0 0 1 1 *".into(),
            retention: 2,
            s3: None,
            persistent_volume_claim: Some(VolumeDestination {
                claim_name: CLAIM.into(),
                path: None,
            }),
        });
        env.create("v", spec).await.unwrap();
        let settled = env.wait_settled("v", 1).await;
        let cluster_id = settled.cluster_id.clone().unwrap();
        let digests = daemon_digests_of_members(&env, "v", 1, 40).await;

        ask_for_backup(&env, "v", "1").await;
        let record = wait_backup(&env, "v", None).await;
        assert_eq!(record.location, format!("pvc://{CLAIM}/{}/v", env.ns));

        // On the volume, under the cluster's default directory: the image and its manifest.
        let dir = claim_dir(&env).await.join(&env.ns).join("v");
        let manifest: BackupManifest = serde_json::from_slice(
            &std::fs::read(dir.join(format!("{}{MANIFEST_SUFFIX}", record.name))).unwrap(),
        )
        .unwrap();
        let image = std::fs::read(dir.join(&record.name)).unwrap();
        assert_eq!(manifest.cluster_id, cluster_id);
        assert_eq!(
            (manifest.size_bytes, manifest.sha256.as_str()),
            (image.len() as u64, record.sha256.as_str())
        );
        assert_eq!(raft_api::admin::hex(&sha256(&image)), manifest.sha256);
        assert!(manifest.journal_last_index >= 40, "{manifest:?}");

        // The Job (and its pod) are gone once the operator read the result.
        let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
        let of_v = ListParams::default().labels("app.kubernetes.io/instance=v");
        wait_for("the backup Job to be deleted", WAIT, || async {
            jobs.list(&of_v).await.ok()?.items.is_empty().then_some(())
        })
        .await;

        // A new cluster from that volume: its daemon executes what v's daemon executed.
        let mut r = env.spec(1);
        r.daemon = Some(follower_daemon());
        r.bootstrap = Some(BootstrapSpec {
            from_backup: Some(FromBackupSpec {
                s3: None,
                persistent_volume_claim: Some(VolumeDestination {
                    claim_name: CLAIM.into(),
                    path: Some(format!("{}/v", env.ns)),
                }),
                backup: LATEST_BACKUP.into(),
            }),
        });
        env.create("w", r).await.unwrap();
        let restored = env.wait_settled("w", 1).await;
        assert_eq!(
            restored.parent_cluster_id.as_deref(),
            Some(cluster_id.as_str())
        );
        let from = restored.restored_from.clone().unwrap();
        assert_eq!(
            from.backup,
            format!("pvc://{CLAIM}/{}/v/{}", env.ns, record.name)
        );
        assert_eq!(
            (from.sha256.as_str(), from.last_log_index),
            (record.sha256.as_str(), record.last_log_index)
        );
        let executed = digests[0]["executed"].as_u64().unwrap();
        let theirs = daemon_digests_of_members(&env, "w", 1, executed).await;
        assert_eq!(
            (&theirs[0]["digest"], &theirs[0]["appliedIndex"]),
            (&digests[0]["digest"], &digests[0]["appliedIndex"]),
            "the restored cluster's daemon executed another journal"
        );
        env
    })
    .await;
}
