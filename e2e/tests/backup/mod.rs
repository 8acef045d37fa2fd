//! Scheduled backups to a real S3-compatible server (versitygw, built from its Go module like
//! the control plane); a new RaftCluster started from one (`spec.bootstrap.fromBackup`) whose
//! daemons execute exactly the journal the old cluster's daemons executed; a damaged backup
//! refused; and a restore outside Kubernetes. Backups to a PersistentVolumeClaim, and a restore
//! from one, are in [`volume`].

mod volume;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use raft_backup::{BackupStore, S3Config};
use raft_crds::{BackupSpec, S3Destination};
use raft_example_daemon::digest::ApplyState;
use raft_testkit::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use tokio::io::AsyncReadExt;

use crate::support::{
    Env, WAIT, daemon_digests, daemon_digests_of, example_daemon, scenario, target_dir, wait_for,
};

const BUCKET: &str = "backups";

/// versitygw on loopback, serving the bucket from a temporary directory. The operator runs as
/// a process on this machine in the local suite, so it reaches loopback.
fn s3_server(root: &Path) -> S3Server {
    assert!(
        std::env::var("E2E_OPERATOR").as_deref() != Ok("deployment"),
        "the backup scenario serves S3 on this machine's loopback, which an operator \
         Deployment cannot reach: run it with the operator as a process (the local suite)"
    );
    let controlplane = Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane");
    S3Server::start(&controlplane, root, BUCKET).unwrap()
}

fn bucket(s3: &S3Server, prefix: &str) -> BackupStore {
    BackupStore::s3(&S3Config {
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        endpoint: Some(s3.endpoint.clone()),
        region: None,
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    })
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Set `consensus.unrdf.io/backup-now` on `cluster` (what `kubectl raft backup now` does).
pub(super) async fn ask_for_backup(env: &Env, cluster: &str, value: &str) {
    let patch = serde_json::json!({
        "metadata": {"annotations": {"consensus.unrdf.io/backup-now": value}}
    });
    env.clusters()
        .patch(cluster, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The newest successful backup of `cluster` once its name differs from `not`.
pub(super) async fn wait_backup(
    env: &Env,
    cluster: &str,
    not: Option<&str>,
) -> raft_crds::BackupRecord {
    wait_for("a backup to complete", WAIT, || async {
        let s = env.status(cluster).await;
        let backup = s.backup?;
        if let Some(f) = &backup.last_failure {
            panic!("the backup failed: {}", f.message);
        }
        let last = backup.last_successful?;
        let ready = s
            .conditions
            .iter()
            .any(|c| c.type_ == "BackupReady" && c.status == "True");
        (ready && Some(last.name.as_str()) != not).then_some(last)
    })
    .await
}

#[tokio::test]
async fn scheduled_backups_land_in_the_bucket_and_restore_the_journal_the_daemons_executed() {
    scenario("backup", |env| async move {
        let scratch = std::env::temp_dir().join(format!("e2e-backup-{}", env.ns));
        let s3 = s3_server(&scratch.join("s3"));
        let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
        let mut secret = Secret::default();
        secret.metadata.name = Some("s3-credentials".into());
        secret.string_data = Some(
            [
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();

        let mut spec = env.spec(3);
        spec.daemon = Some(example_daemon(&["--operations", "40", "--rate", "20"]));
        // Once a year: in this scenario, backups run when asked for.
        spec.backup = Some(BackupSpec {
            schedule: "0 0 1 1 *".into(),
            retention: 1,
            s3: Some(S3Destination {
                bucket: BUCKET.into(),
                prefix: None,
                endpoint: Some(s3.endpoint.clone()),
                region: None,
                credentials_secret: "s3-credentials".into(),
            }),
            persistent_volume_claim: None,
        });
        env.create("c", spec).await.unwrap();
        let settled = env.wait_settled("c", 3).await;
        let digests = daemon_digests(&env, 120).await;
        let cluster_id = settled.cluster_id.clone().unwrap();
        let before = env.status("c").await;
        let waiting = before.conditions.iter().find(|c| c.type_ == "BackupReady");
        assert_eq!(
            waiting.map(|c| (c.status.as_str(), c.reason.as_str())),
            Some(("Unknown", "NoBackupYet")),
            "{:?}",
            before.conditions
        );
        assert!(before.backup.and_then(|b| b.next_scheduled_at).is_some());

        ask_for_backup(&env, "c", "1").await;
        let first = wait_backup(&env, "c", None).await;
        let store = bucket(&s3, &format!("{}/c", env.ns));
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let manifest = &listed[0].manifest;
        assert_eq!(listed[0].name, first.name);
        assert_eq!(manifest.cluster_id, cluster_id);
        assert_eq!(manifest.sha256, first.sha256);
        assert_eq!(manifest.last_log_index, first.last_log_index as u64);
        assert!(manifest.journal_last_index >= 120, "{manifest:?}");
        let mut image = Vec::new();
        store
            .open_image(&first.name)
            .await
            .unwrap()
            .read_to_end(&mut image)
            .await
            .unwrap();
        assert_eq!(image.len() as u64, manifest.size_bytes);
        assert_eq!(raft_api::admin::hex(&sha256(&image)), manifest.sha256);

        // Another one, asked for with the plugin: retention 1 keeps only the newest.
        let plugin = std::env::var("KUBECTL_RAFT_BIN")
            .map_or_else(|_| target_dir().join("debug/kubectl-raft"), PathBuf::from);
        let out = Command::new(&plugin)
            .args(["-n", &env.ns, "backup", "now", "c"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl raft backup now: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let second = wait_backup(&env, "c", Some(&first.name)).await;
        let names: Vec<String> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, vec![second.name.clone()]);

        restore_into_a_new_cluster(&env, &plugin, &cluster_id, &second, &digests).await;
        a_damaged_backup_is_refused(&env, &s3, &scratch.join("s3"), &second).await;

        // Restored outside Kubernetes, the backup holds the journal the daemons executed.
        let digest = restored_digest(&s3, &format!("s3://{BUCKET}/{}/c", env.ns), &scratch).await;
        assert_eq!(
            digest, digests[0]["digest"],
            "the restored journal is the one every daemon executed: {digests:?}"
        );
        let _ = std::fs::remove_dir_all(&scratch);
        env
    })
    .await;
}

/// A daemon that submits nothing and executes the whole journal (to compare what it executed).
pub(super) fn follower_daemon() -> raft_crds::DaemonSpec {
    example_daemon(&["--operations", "0"])
}

fn from_backup(s3: &S3Server, prefix: &str, backup: &str) -> raft_crds::BootstrapSpec {
    raft_crds::BootstrapSpec {
        from_backup: Some(raft_crds::FromBackupSpec {
            s3: Some(S3Destination {
                bucket: BUCKET.into(),
                prefix: Some(prefix.into()),
                endpoint: Some(s3.endpoint.clone()),
                region: None,
                credentials_secret: "s3-credentials".into(),
            }),
            persistent_volume_claim: None,
            backup: backup.into(),
        }),
    }
}

/// RaftCluster `r` from the newest backup of `c`, as `kubectl raft restore r --from c` writes
/// it (with daemons that only follow the journal): three members, the parent recorded, and
/// each of its daemons executes the journal every daemon of `c` executed, entry for entry.
async fn restore_into_a_new_cluster(
    env: &Env,
    plugin: &Path,
    parent: &str,
    backup: &raft_crds::BackupRecord,
    digests: &[serde_json::Value],
) {
    let out = Command::new(plugin)
        .args(["-n", &env.ns, "restore", "r", "--from", "c", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl raft restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r: raft_crds::RaftCluster = serde_json::from_slice(&out.stdout).unwrap();
    let from = r
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.from_backup.as_ref());
    assert_eq!(
        from.and_then(|f| f.s3.as_ref()?.prefix.clone()),
        Some(format!("{}/c", env.ns))
    );
    r.spec.daemon = Some(follower_daemon());
    env.clusters()
        .create(&PostParams::default(), &r)
        .await
        .unwrap();
    let settled = env.wait_settled("r", 3).await;
    assert_ne!(settled.cluster_id.as_deref(), Some(parent));
    assert_eq!(settled.parent_cluster_id.as_deref(), Some(parent));
    let from = settled.restored_from.clone().unwrap();
    assert!(from.backup.ends_with(&backup.name), "{from:?}");
    assert_eq!(
        (from.sha256.as_str(), from.last_log_index),
        (backup.sha256.as_str(), backup.last_log_index)
    );
    let executed = digests[0]["executed"].as_u64().unwrap();
    let restored = daemon_digests_of(env, "r", executed).await;
    for d in &restored {
        assert_eq!(
            (&d["digest"], &d["appliedIndex"]),
            (&digests[0]["digest"], &digests[0]["appliedIndex"]),
            "a daemon of the restored cluster executed another journal: {restored:?} vs {digests:?}"
        );
    }
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let restored_event = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("ClusterRestored")
                && e.involved_object.name.as_deref() == Some("r")
        });
    assert!(restored_event, "no ClusterRestored Event for r");
}

/// RaftCluster `bad` from a backup whose image was damaged in the bucket: the first member
/// refuses it, the operator says so (Event, `Progressing`) and backs off; nothing starts.
async fn a_damaged_backup_is_refused(
    env: &Env,
    s3: &S3Server,
    s3_root: &Path,
    backup: &raft_crds::BackupRecord,
) {
    let good = s3_root.join(BUCKET).join(&env.ns).join("c");
    let damaged = s3_root.join(BUCKET).join("damaged");
    std::fs::create_dir_all(&damaged).unwrap();
    let mut image = std::fs::read(good.join(&backup.name)).unwrap();
    let mid = image.len() / 2;
    image[mid] ^= 0x40;
    std::fs::write(damaged.join(&backup.name), &image).unwrap();
    let manifest = format!("{}{}", backup.name, raft_api::backup::MANIFEST_SUFFIX);
    std::fs::copy(good.join(&manifest), damaged.join(&manifest)).unwrap();

    let mut spec = env.spec(1);
    spec.bootstrap = Some(from_backup(s3, "damaged", &backup.name));
    env.create("bad", spec).await.unwrap();
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let note = wait_for("a RestoreFailed Event for bad", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("RestoreFailed")
                    && e.involved_object.name.as_deref() == Some("bad")
            })
            .and_then(|e| e.message)
    })
    .await;
    assert!(note.contains("backup image"), "{note}");
    let status = env.status("bad").await;
    assert_eq!(status.cluster_id, None, "{status:?}");
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason, "RestoreFailed", "{progressing:?}");
}

pub(super) fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// `raft-sidecar restore --from FROM` into a new data dir, `raft-sidecar run` on it, and the
/// example daemon's digest of the journal it serves.
async fn restored_digest(s3: &S3Server, from: &str, scratch: &Path) -> serde_json::Value {
    let bin = std::env::var("RAFT_SIDECAR_BIN")
        .map_or_else(|_| target_dir().join("debug/raft-sidecar"), PathBuf::from);
    let data = scratch.join("restored");
    let (api, peer, admin) = (free_port(), free_port(), free_port());
    let member = [
        "--data-dir".to_owned(),
        data.to_string_lossy().into_owned(),
        "--cluster-id".into(),
        "restored".into(),
        "--node-name".into(),
        "restored-0".into(),
        "--peer-addr".into(),
        format!("127.0.0.1:{peer}"),
        "--admin-addr".into(),
        format!("127.0.0.1:{admin}"),
        "--advertise-peer".into(),
        format!("127.0.0.1:{peer}"),
        "--advertise-admin".into(),
        format!("127.0.0.1:{admin}"),
    ];
    let out = Command::new(&bin)
        .arg("restore")
        .args(["--from", from])
        .args(&member)
        .envs(s3.env())
        .env_remove("HOSTNAME")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut node = KillOnDrop(
        Command::new(&bin)
            .arg("run")
            .args(&member)
            .args(["--api-addr", &format!("127.0.0.1:{api}")])
            .args(["--insecure", "--insecure-plaintext"])
            .env_remove("HOSTNAME")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = raft_api::client::SidecarClient::new(
        Some(&format!("127.0.0.1:{api}")),
        None,
        None,
        Duration::from_secs(5),
    );
    let entries = wait_for("the restored node to serve its journal", WAIT, || async {
        let mut entries = Vec::new();
        let mut from = None;
        loop {
            let page = client.journal(from, Some(1000)).await.ok()?;
            if page.entries.is_empty() {
                return (!entries.is_empty()).then_some(entries);
            }
            from = Some(page.next_index);
            entries.extend(page.entries);
        }
    })
    .await;
    let mut state = ApplyState::default();
    for entry in &entries {
        state.execute(entry);
    }
    node.0.kill().ok();
    serde_json::Value::String(state.digest_hex())
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
