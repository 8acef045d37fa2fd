//! Backup and restore without Kubernetes, through the binary as a user runs it: `ctl backup`
//! on a live cluster, `raft-sidecar restore` into a new data dir, a new cluster grown from it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestCluster, op, read_journal, wait_for};
use raft_api::admin::{MemberSpec, NodeRole, RestoreKind};
use raft_api::backup::BackupManifest;
use raft_testkit::local_cluster::{LocalCluster, Ports};
use raft_testkit::pki::LocalPki;
use raft_testkit::s3::S3Server;

const BIN: &str = env!("CARGO_BIN_EXE_raft-sidecar");

/// The binary with `args`, its command first shaped by `with` (environment).
fn sidecar_with(args: &[&str], with: impl FnOnce(Command) -> Command) -> (Option<i32>, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("HOSTNAME");
    let out = with(cmd).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `raft-sidecar ctl backup FILE` against node `i`'s admin API.
fn ctl_backup(c: &LocalCluster, root: &Path, i: usize, file: &Path) -> (Option<i32>, String) {
    ctl_backup_with(c, root, i, file.to_str().unwrap(), &[], |cmd| cmd)
}

fn ctl_backup_with(
    c: &LocalCluster,
    root: &Path,
    i: usize,
    target: &str,
    extra: &[&str],
    with: impl FnOnce(Command) -> Command,
) -> (Option<i32>, String) {
    let admin = c.nodes[i].admin.to_string();
    let token = c.token_file().to_string_lossy().into_owned();
    let mut args = vec![
        "ctl".to_owned(),
        "--admin".into(),
        admin,
        "--token-file".into(),
        token,
    ];
    args.extend(LocalPki::flags(&root.join("tls").join("raft-admin")));
    args.extend(["backup".into(), target.to_owned()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sidecar_with(&args, with)
}

/// `raft-sidecar restore` of `file` into node `i` of `c`, as that node will run.
fn restore_into(c: &LocalCluster, i: usize, file: &Path, extra: &[&str]) -> (Option<i32>, String) {
    restore_into_with(c, i, file.to_str().unwrap(), extra, |cmd| cmd)
}

fn restore_into_with(
    c: &LocalCluster,
    i: usize,
    from: &str,
    extra: &[&str],
    with: impl FnOnce(Command) -> Command,
) -> (Option<i32>, String) {
    let mut args = vec!["restore".to_owned(), "--from".into(), from.into()];
    args.extend(member_flags(c, i));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sidecar_with(&args, with)
}

/// `run`'s flags naming node `i` of `c` as a member (data dir, cluster id, name, addresses).
fn member_flags(c: &LocalCluster, i: usize) -> Vec<String> {
    let node = &c.nodes[i];
    vec![
        "--data-dir".into(),
        node.dir.to_string_lossy().into_owned(),
        "--cluster-id".into(),
        c.cluster_id.clone(),
        "--node-name".into(),
        node.name.clone(),
        "--advertise-peer".into(),
        node.peer.to_string(),
        "--advertise-admin".into(),
        node.admin.to_string(),
    ]
}

/// Add node `i` (running, empty) to the cluster led by `leader`: as a learner, then promoted
/// once it caught up (it receives the leader's snapshot).
async fn add_member(c: &LocalCluster, leader: usize, i: usize) {
    let joining = wait_for(
        &format!("node {i} to answer"),
        Duration::from_secs(20),
        || async { c.client(i).status().await.ok() },
    )
    .await;
    let node_id: u64 = joining.node_id.parse().unwrap();
    let spec = MemberSpec {
        node_id,
        name: c.nodes[i].name.clone(),
        address: c.nodes[i].peer.to_string(),
        admin_address: Some(c.nodes[i].admin.to_string()),
    };
    c.client(leader).add_learner(&spec).await.unwrap();
    wait_for(
        &format!("node {i} to be promoted"),
        Duration::from_secs(30),
        || async { c.client(leader).promote(node_id).await.ok() },
    )
    .await;
}

/// Wait until node `i` is the leader of its cluster (alone or not).
async fn wait_leading(c: &LocalCluster, i: usize) {
    wait_for(
        &format!("node {i} to lead"),
        Duration::from_secs(20),
        || async {
            let s = c.client(i).status().await.ok()?;
            (s.role == NodeRole::Leader).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_backup_has_the_same_journal_and_remembers_every_id() {
    let mut source = TestCluster::start(3, &["--snapshot-interval", "100"]).await;
    let leader = source.leader(Duration::from_secs(20)).await;
    let ids: Vec<String> = (0..250).map(|n| format!("before-backup-{n}")).collect();
    for id in &ids {
        source
            .submit_retrying(&[leader], &op(id), Duration::from_secs(20))
            .await;
    }
    let journal = source
        .journals_agree(&[0, 1, 2], 250, Duration::from_secs(20))
        .await;
    let last_index = journal.last().unwrap().0;

    let scratch = tempfile::tempdir().unwrap();
    let backup = scratch.path().join("backup.rsnp");
    let source_root = source.c.nodes[0].dir.parent().unwrap().to_path_buf();
    let (code, out) = ctl_backup(&source.c, &source_root, leader, &backup);
    assert_eq!(code, Some(0), "{out}");
    let manifest: BackupManifest =
        serde_json::from_slice(&std::fs::read(BackupManifest::path_beside(&backup)).unwrap())
            .unwrap();
    assert_eq!(manifest.cluster_id, source.c.cluster_id);
    assert_eq!(
        manifest.size_bytes,
        std::fs::metadata(&backup).unwrap().len()
    );
    assert_eq!(manifest.journal_last_index, last_index, "{manifest:?}");
    let source_term = source.client(leader).status().await.unwrap().term;

    // A new cluster: node 0 restored, nodes 1 and 2 empty, none bootstrapped.
    let root = scratch.path().join("restored");
    let mut restored = LocalCluster::new(Path::new(BIN), &root, 3, Ports::Free, &[]).unwrap();
    restored.cluster_id = "restored".into();
    for node in &mut restored.nodes {
        node.initial = false;
    }
    let (code, out) = restore_into(&restored, 0, &backup, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("250 records"), "{out}");
    // Run again (an init container at every pod start): nothing changes.
    let (code, out) = restore_into(&restored, 0, &backup, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing to do"), "{out}");

    let mut restored = DumpOnPanic(restored);
    restored.start_all().unwrap();
    // Nodes 1 and 2 are not members yet: only node 0 can say who leads. As the only voter,
    // it does not wait out a quiet start.
    wait_leading(&restored, 0).await;
    let log = restored.log_tail(0, 40);
    assert!(log.contains("this node is the only voter"), "{log}");
    let status = restored.client(0).status().await.unwrap();
    let from = status.restored_from.clone().unwrap();
    assert_eq!(
        (from.parent_cluster_id.as_deref(), from.sha256.as_str()),
        (Some(source.c.cluster_id.as_str()), manifest.sha256.as_str())
    );
    assert!(
        status.term > source_term,
        "the restored cluster's term {} must move past the backup's {source_term}",
        status.term
    );
    for i in [1, 2] {
        add_member(&restored, 0, i).await;
    }
    for i in 0..3 {
        let copy = wait_for(
            &format!("node {i} of the restored cluster to hold the backup's journal"),
            Duration::from_secs(30),
            || async {
                let j = read_journal(&restored.client(i)).await.ok()?;
                (j.len() == journal.len()).then_some(j)
            },
        )
        .await;
        assert_eq!(copy, journal, "node {i}");
        let role = restored.client(i).status().await.unwrap().role;
        assert!(
            matches!(role, NodeRole::Leader | NodeRole::Follower),
            "node {i} is {role:?}"
        );
    }

    // Exactly once across the restore: an id the old cluster committed is a duplicate at its
    // old index; a new one continues the journal.
    let again = restored.client(1).submit(&op(&ids[17])).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.log_index, journal[17].0);
    let next = restored
        .client(2)
        .submit(&op("after-restore"))
        .await
        .unwrap();
    assert!(!next.duplicate);
    assert_eq!(next.log_index, last_index + 1);

    // The restored node restarts from its own store like any other.
    restored
        .terminate(0, Duration::from_secs(10))
        .await
        .unwrap();
    restored.start(0).unwrap();
    restored
        .wait_for_leader(Duration::from_secs(20))
        .await
        .unwrap();
    let mut expected = journal.clone();
    expected.push((next.log_index, "after-restore".into()));
    for i in 0..3 {
        let j = wait_for(
            &format!("node {i} to hold every entry after the restart"),
            Duration::from_secs(20),
            || async {
                let j = read_journal(&restored.client(i)).await.ok()?;
                (j.len() == expected.len()).then_some(j)
            },
        )
        .await;
        assert_eq!(j, expected, "node {i}");
    }
    restored.stop_all(Duration::from_secs(5)).await;
}

/// The restored cluster, whose nodes' logs are printed when the test fails.
struct DumpOnPanic(LocalCluster);

impl std::ops::Deref for DumpOnPanic {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl std::ops::DerefMut for DumpOnPanic {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.0
    }
}

impl Drop for DumpOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for i in 0..self.0.nodes.len() {
                eprintln!("----- restored {i} -----\n{}", self.0.log_tail(i, 40));
            }
        }
    }
}

/// One node planned under `root` (not started): what a restore writes into.
fn one_node(root: &Path) -> LocalCluster {
    LocalCluster::new(Path::new(BIN), root, 1, Ports::Free, &[]).unwrap()
}

/// A backup written by hand from a snapshot image, for the refusals below.
fn damaged_copy(
    backup: &Path,
    at: &Path,
    damage: impl FnOnce(&mut Vec<u8>, &mut BackupManifest),
) -> PathBuf {
    let mut image = std::fs::read(backup).unwrap();
    let mut manifest: BackupManifest =
        serde_json::from_slice(&std::fs::read(BackupManifest::path_beside(backup)).unwrap())
            .unwrap();
    damage(&mut image, &mut manifest);
    std::fs::write(at, &image).unwrap();
    std::fs::write(
        BackupManifest::path_beside(at),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    at.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_mismatched_backup_is_refused_with_a_clear_error_and_leaves_no_store() {
    let mut source = TestCluster::start(1, &[]).await;
    let leader = source.leader(Duration::from_secs(20)).await;
    for n in 0..20 {
        source
            .submit_retrying(&[leader], &op(&format!("op-{n}")), Duration::from_secs(20))
            .await;
    }
    let scratch = tempfile::tempdir().unwrap();
    let backup = scratch.path().join("good.rsnp");
    let source_root = source.c.nodes[0].dir.parent().unwrap().to_path_buf();
    let (code, out) = ctl_backup(&source.c, &source_root, leader, &backup);
    assert_eq!(code, Some(0), "{out}");
    // A backup is never written over another.
    let before = std::fs::read(&backup).unwrap();
    let (code, out) = ctl_backup(&source.c, &source_root, leader, &backup);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("there already"), "{out}");
    assert_eq!(std::fs::read(&backup).unwrap(), before);
    let target = one_node(&scratch.path().join("target"));

    let flipped = damaged_copy(&backup, &scratch.path().join("flipped.rsnp"), |image, m| {
        let mid = image.len() / 2;
        image[mid] ^= 0x40;
        // The manifest describes the damaged bytes: only the image's own checksum can tell.
        use sha2::Digest;
        m.sha256 = raft_api::admin::hex(&sha2::Sha256::digest(&image[..]));
    });
    let cut = damaged_copy(&backup, &scratch.path().join("cut.rsnp"), |image, _| {
        image.truncate(image.len() - 9);
    });
    let other_hash = damaged_copy(&backup, &scratch.path().join("hash.rsnp"), |_, m| {
        m.sha256 = "0".repeat(64);
    });
    let other_index = damaged_copy(&backup, &scratch.path().join("index.rsnp"), |_, m| {
        m.last_log_index += 1;
    });
    let not_a_backup = scratch.path().join("notes.txt");
    std::fs::write(&not_a_backup, "not a snapshot image at all").unwrap();
    let cases: [(&Path, &[&str], &str); 6] = [
        (&flipped, &[], "damaged"),
        (&cut, &[], "damaged"),
        (&other_hash, &[], "SHA-256"),
        (&other_index, &[], "last log index"),
        (&not_a_backup, &["--no-manifest"], "RSNP"),
        (&not_a_backup, &[], "manifest"),
    ];
    for (file, extra, says) in cases {
        let (code, out) = restore_into(&target, 0, file, extra);
        assert_eq!(code, Some(64), "{}: {out}", file.display());
        assert!(
            out.contains(says),
            "{}: {out:?} lacks {says:?}",
            file.display()
        );
        assert_eq!(out.lines().count(), 1, "{out}");
        let dir = &target.nodes[0].dir;
        assert!(
            !dir.join("rocksdb").exists() && !dir.join(".restoring").exists(),
            "{} left a store behind",
            file.display()
        );
    }

    // A path that is not there is refused, and nothing is created on the way.
    let typo = scratch.path().join("no-such-dir").join("x.rsnp");
    let (code, out) = restore_into(&target, 0, &typo, &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("no such file or directory"), "{out}");
    assert!(!scratch.path().join("no-such-dir").exists());

    // A data dir that holds a store is never overwritten.
    let (code, out) = restore_into(&target, 0, &backup, &[]);
    assert_eq!(code, Some(0), "{out}");
    let other = damaged_copy(&backup, &scratch.path().join("other.rsnp"), |_, _| {});
    let busy = one_node(&scratch.path().join("busy"));
    std::fs::create_dir_all(&busy.nodes[0].dir).unwrap();
    raft_sidecar::store::Db::open(&busy.nodes[0].dir, "dev").unwrap();
    let (code, out) = restore_into(&busy, 0, &other, &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("already holds a store"), "{out}");
}

/// What `POST /admin/v1/restore` gets: the backup file and its manifest.
async fn post_restore(
    c: &LocalCluster,
    i: usize,
    image: &Path,
) -> Result<raft_api::admin::RestoreResult, raft_api::client::ClientError> {
    let manifest: BackupManifest =
        serde_json::from_slice(&std::fs::read(BackupManifest::path_beside(image)).unwrap())
            .unwrap();
    let body = tokio::fs::File::open(image).await.unwrap();
    c.client(i)
        .restore(&manifest, body, Duration::from_secs(60))
        .await
}

/// A one-node cluster holding `ops` operations, its leader, and its backup `good.rsnp` in
/// `scratch`.
async fn backed_up_source(ops: usize, scratch: &Path) -> (TestCluster, usize, PathBuf) {
    let mut source = TestCluster::start(1, &[]).await;
    let leader = source.leader(Duration::from_secs(20)).await;
    for n in 0..ops {
        source
            .submit_retrying(&[leader], &op(&format!("op-{n}")), Duration::from_secs(20))
            .await;
    }
    let backup = scratch.join("good.rsnp");
    let source_root = source.c.nodes[0].dir.parent().unwrap().to_path_buf();
    let (code, out) = ctl_backup(&source.c, &source_root, leader, &backup);
    assert_eq!(code, Some(0), "{out}");
    (source, leader, backup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_joined_restores_through_its_admin_api_and_restarts_onto_the_backup() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, _, backup) = backed_up_source(40, scratch.path()).await;
    let journal = source
        .journals_agree(&[0], 40, Duration::from_secs(20))
        .await;
    let flipped = damaged_copy(&backup, &scratch.path().join("flipped.rsnp"), |image, m| {
        let mid = image.len() / 2;
        image[mid] ^= 0x40;
        use sha2::Digest;
        m.sha256 = raft_api::admin::hex(&sha2::Sha256::digest(&image[..]));
    });

    let mut target = one_node(&scratch.path().join("target"));
    target.cluster_id = "restored".into();
    target.nodes[0].initial = false;
    let mut target = DumpOnPanic(target);
    target.start_all().unwrap();
    let blank = wait_for(
        "the new node to answer",
        Duration::from_secs(20),
        || async { target.client(0).status().await.ok() },
    )
    .await;
    assert_eq!(blank.role, NodeRole::Uninitialized);

    // A damaged backup is refused; nothing is staged and the node keeps running.
    let e = post_restore(&target, 0, &flipped).await.unwrap_err();
    assert_eq!(e.code(), Some(raft_api::ErrorCode::Refused), "{e}");
    assert!(e.to_string().contains("damaged"), "{e}");
    assert!(!target.nodes[0].dir.join(".restore-pending").exists());
    assert!(target.is_running(0));

    let done = post_restore(&target, 0, &backup).await.unwrap();
    assert!(done.restarting);
    assert_eq!(
        done.node_id.to_string(),
        blank.node_id,
        "the node keeps its id"
    );
    assert_eq!(done.journal_next_index, journal.last().unwrap().0 + 1);
    let code = target.wait_exit(0, Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        code,
        Some(0),
        "it stops on its own to start on the restored store"
    );

    target.start(0).unwrap();
    wait_leading(&target, 0).await;
    let status = target.client(0).status().await.unwrap();
    assert_eq!(status.node_id, blank.node_id);
    let from = status.restored_from.unwrap();
    assert_eq!(
        from.parent_cluster_id.as_deref(),
        Some(source.c.cluster_id.as_str())
    );
    let copy = read_journal(&target.client(0)).await.unwrap();
    assert_eq!(copy, journal);
    let dir = &target.nodes[0].dir;
    assert!(!dir.join(".restore-pending").exists());
    assert!(
        std::fs::read_dir(dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("pre-restore-")),
        "the blank store it replaced is kept"
    );

    // A member is never restored over.
    let e = post_restore(&target, 0, &backup).await.unwrap_err();
    assert_eq!(e.code(), Some(raft_api::ErrorCode::Refused), "{e}");
    assert!(e.to_string().contains("taken part in a cluster"), "{e}");
    assert!(target.is_running(0));
    target.stop_all(Duration::from_secs(5)).await;
}

/// Refusals answered to a client still sending a large image: the answer, not a reset
/// connection, whether the refusal comes before the first byte is read (a member) or part-way
/// through (an image damaged near its start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_restore_answers_a_client_still_uploading_a_large_image() {
    let scratch = tempfile::tempdir().unwrap();
    let (source, leader, backup) = backed_up_source(1, scratch.path()).await;
    // Far more than the socket buffers hold: the client is still writing when the refusal
    // is decided.
    let large = damaged_copy(&backup, &scratch.path().join("large.rsnp"), |image, m| {
        image[0] ^= 0xff;
        image.resize(image.len() + (48 << 20), 0);
        m.size_bytes = image.len() as u64;
    });

    for round in 0..3 {
        let e = post_restore(&source.c, leader, &large).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(raft_api::ErrorCode::Refused),
            "round {round}: {e}"
        );
        assert!(e.to_string().contains("taken part in a cluster"), "{e}");
    }

    let mut blank = one_node(&scratch.path().join("blank"));
    blank.nodes[0].initial = false;
    let mut blank = DumpOnPanic(blank);
    blank.start_all().unwrap();
    wait_for(
        "the new node to answer",
        Duration::from_secs(20),
        || async { blank.client(0).status().await.ok() },
    )
    .await;
    for round in 0..3 {
        let e = post_restore(&blank, 0, &large).await.unwrap_err();
        assert_eq!(
            e.code(),
            Some(raft_api::ErrorCode::Refused),
            "round {round}: {e}"
        );
    }
    assert!(!blank.nodes[0].dir.join(".restore-pending").exists());
    assert!(blank.is_running(0));
    blank.stop_all(Duration::from_secs(5)).await;
}

fn s3_server(root: &Path, bucket: &str) -> S3Server {
    let controlplane = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/controlplane");
    S3Server::start(&controlplane, root, bucket).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_in_an_s3_bucket_are_kept_by_count_and_the_newest_is_restored() {
    let mut source = TestCluster::start(1, &[]).await;
    let leader = source.leader(Duration::from_secs(20)).await;
    let scratch = tempfile::tempdir().unwrap();
    let s3 = s3_server(&scratch.path().join("s3"), "backups");
    let source_root = source.c.nodes[0].dir.parent().unwrap().to_path_buf();
    let with_s3 = |mut cmd: Command| {
        cmd.envs(s3.env());
        cmd
    };
    let mut written = 0;
    for round in 0..3 {
        for _ in 0..10 {
            source
                .submit_retrying(
                    &[leader],
                    &op(&format!("op-{written}")),
                    Duration::from_secs(20),
                )
                .await;
            written += 1;
        }
        let (code, out) = ctl_backup_with(
            &source.c,
            &source_root,
            leader,
            "s3://backups/prod",
            &["--keep", "2"],
            with_s3,
        );
        assert_eq!(code, Some(0), "backup {round}: {out}");
    }
    let mut kept: Vec<String> = std::fs::read_dir(scratch.path().join("s3/backups/prod"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 4, "two images and their manifests: {kept:?}");

    let target = one_node(&scratch.path().join("target"));
    let (code, out) = restore_into_with(&target, 0, "s3://backups/prod", &[], with_s3);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("({written} records)")), "{out}");
    // Run again with another backup (as an init container would once newer backups exist):
    // the restored store is left as it is.
    let older = format!("s3://backups/prod/{}", kept[0]);
    let (code, out) = restore_into_with(&target, 0, &older, &[], with_s3);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("nothing to do") && out.contains("not from"),
        "{out}"
    );
}

/// Write `n` operations through `leader`, each acknowledged, and wait until every member's
/// journal holds them all. A recovery keeps what its survivor holds, and a write is
/// acknowledged once the leader and one follower have it: without the wait, the survivor
/// chosen may not have received the last writes yet, and the test would lose them itself.
async fn write_acknowledged_everywhere(
    cluster: &TestCluster,
    leader: usize,
    n: usize,
) -> Vec<(u64, String)> {
    let mut acknowledged = Vec::new();
    for k in 0..n {
        let id = format!("acked-{k}");
        let r = cluster
            .submit_retrying(&[leader], &op(&id), Duration::from_secs(20))
            .await;
        acknowledged.push((r.log_index, id));
    }
    let everywhere = cluster
        .journals_agree(&[0, 1, 2], n, Duration::from_secs(30))
        .await;
    assert_eq!(everywhere, acknowledged);
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_majority_is_recovered_with_every_acknowledged_write() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let acknowledged = write_acknowledged_everywhere(&cluster, leader, 150).await;
    // The majority is lost for good: the leader and one follower, disks included.
    let survivor = (leader + 1) % 3;
    for i in [leader, (leader + 2) % 3] {
        cluster.c.kill9(i).await.unwrap();
        cluster.c.wipe(i).unwrap();
    }
    cluster
        .c
        .terminate(survivor, Duration::from_secs(20))
        .await
        .unwrap();

    let recover = |extra: &[&str]| {
        let mut args = vec!["recover".to_owned()];
        args.extend(member_flags(&cluster.c, survivor));
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sidecar_with(&args, |c| c)
    };
    let (code, out) = recover(&[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("--force"), "{out}");
    let (code, out) = recover(&["--force"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("the only member"), "{out}");

    cluster.c.start(survivor).unwrap();
    wait_leading(&cluster.c, survivor).await;
    let status = cluster.client(survivor).status().await.unwrap();
    let from = status.restored_from.unwrap();
    assert_eq!(from.kind, RestoreKind::Recovery);
    assert_eq!(
        from.parent_cluster_id.as_deref(),
        Some(cluster.c.cluster_id.as_str())
    );
    let journal = read_journal(&cluster.client(survivor)).await.unwrap();
    assert_eq!(journal, acknowledged, "every acknowledged write, in order");
    let next = cluster.client(survivor).submit(&op("after")).await.unwrap();
    assert_eq!(next.log_index, acknowledged.last().unwrap().0 + 1);

    // The lost members come back empty and join the recovered one.
    for i in [leader, (leader + 2) % 3] {
        cluster.c.nodes[i].initial = false;
        cluster.c.start(i).unwrap();
        add_member(&cluster.c, survivor, i).await;
    }
    cluster
        .journals_agree(&[0, 1, 2], acknowledged.len() + 1, Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_survivor_recovers_through_its_admin_api_only_once_the_quorum_is_gone() {
    let mut cluster = TestCluster::start(3, &[]).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let acknowledged = write_acknowledged_everywhere(&cluster, leader, 60).await;
    let survivor = (leader + 1) % 3;
    // With a quorum in reach, a recovery would fork the cluster: refused, nothing requested.
    let e = cluster.client(survivor).recover().await.unwrap_err();
    assert_eq!(e.code(), Some(raft_api::ErrorCode::Refused), "{e}");
    assert!(e.to_string().contains("not cut off from a quorum"), "{e}");
    assert!(
        !cluster.c.nodes[survivor]
            .dir
            .join(".recover-requested")
            .exists()
    );

    for i in [leader, (leader + 2) % 3] {
        cluster.c.kill9(i).await.unwrap();
        cluster.c.wipe(i).unwrap();
    }
    let before = cluster.client(survivor).status().await.unwrap();
    let done = wait_for(
        "the survivor to see the quorum gone and accept the recovery",
        Duration::from_secs(30),
        || async { cluster.client(survivor).recover().await.ok() },
    )
    .await;
    assert_eq!(done.node_id.to_string(), before.node_id);
    assert_eq!(done.last_log_index, before.last_log_index);
    let code = cluster
        .c
        .wait_exit(survivor, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        code,
        Some(0),
        "it stops on its own to recover at its next start"
    );

    cluster.c.start(survivor).unwrap();
    wait_leading(&cluster.c, survivor).await;
    let status = cluster.client(survivor).status().await.unwrap();
    assert_ne!(
        status.node_id, before.node_id,
        "a recovered node has a new id"
    );
    assert_eq!(status.restored_from.unwrap().kind, RestoreKind::Recovery);
    let journal = read_journal(&cluster.client(survivor)).await.unwrap();
    assert_eq!(journal, acknowledged, "every acknowledged write, in order");
    assert!(
        !cluster.c.nodes[survivor]
            .dir
            .join(".recover-requested")
            .exists()
    );
    let next = cluster.client(survivor).submit(&op("after")).await.unwrap();
    assert_eq!(next.log_index, acknowledged.last().unwrap().0 + 1);
}
