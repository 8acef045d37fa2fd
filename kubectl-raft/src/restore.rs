//! `kubectl raft restore NEW --from OLD`: a new RaftCluster made from an existing one's spec,
//! started from one of its backups (`spec.bootstrap.fromBackup`). Pure: the old cluster in, the
//! new one out; `cli` creates it.

use raft_crds::{BootstrapSpec, FromBackupSpec, RaftCluster};

/// Why a restore cannot be made from `from`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "raftcluster {0:?} has no spec.backup: there are no backups of it to restore (write \
         spec.bootstrap.fromBackup by hand to restore from another bucket or volume)"
    )]
    NoBackups(String),
    #[error("raftcluster {0:?} has no namespace")]
    NoNamespace(String),
}

/// RaftCluster `name` with the spec of `from` (replicas, daemon, sidecar, storage, Raft
/// settings, backups), started from its backup `backup` (`latest` or a name). Its own backups
/// go under its own default prefix, never into `from`'s.
pub fn new_cluster(
    from: &RaftCluster,
    name: &str,
    backup: &str,
) -> Result<RaftCluster, RestoreError> {
    let old = from.metadata.name.clone().unwrap_or_default();
    let namespace = from
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| RestoreError::NoNamespace(old.clone()))?;
    let source = from
        .spec
        .backup
        .as_ref()
        .ok_or_else(|| RestoreError::NoBackups(old.clone()))?;
    // Where `from`'s backups are, spelled out: its default directory names it, not the new one.
    let default_dir = || Some(format!("{namespace}/{old}"));
    let s3 = source.s3.clone().map(|mut s3| {
        s3.prefix = s3.prefix.or_else(default_dir);
        s3
    });
    let persistent_volume_claim = source.persistent_volume_claim.clone().map(|mut v| {
        v.path = v.path.or_else(default_dir);
        v
    });
    let mut spec = from.spec.clone();
    spec.paused = false;
    if let Some(b) = &mut spec.backup {
        if let Some(s3) = &mut b.s3 {
            s3.prefix = None;
        }
        if let Some(volume) = &mut b.persistent_volume_claim {
            volume.path = None;
        }
    }
    spec.bootstrap = Some(BootstrapSpec {
        from_backup: Some(FromBackupSpec {
            s3,
            persistent_volume_claim,
            backup: backup.to_owned(),
        }),
    });
    let mut rc = RaftCluster::new(name, spec);
    rc.metadata.namespace = Some(namespace);
    Ok(rc)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use raft_crds::{BackupSpec, RaftClusterSpec, S3Destination, VolumeDestination};

    use super::*;

    fn orders(prefix: Option<&str>) -> RaftCluster {
        let mut rc = RaftCluster::new(
            "orders",
            RaftClusterSpec {
                replicas: 5,
                paused: true,
                backup: Some(BackupSpec {
                    schedule: "0 * * * *".into(),
                    retention: 3,
                    s3: Some(S3Destination {
                        bucket: "backups".into(),
                        prefix: prefix.map(str::to_owned),
                        endpoint: Some("https://s3.example.com".into()),
                        region: None,
                        credentials_secret: "s3".into(),
                    }),
                    persistent_volume_claim: None,
                }),
                ..RaftClusterSpec::default()
            },
        );
        rc.metadata.namespace = Some("shop".into());
        rc
    }

    #[test]
    fn the_new_cluster_restores_the_old_ones_backups_and_keeps_its_own_apart() {
        let rc = new_cluster(&orders(None), "orders-restored", "latest").unwrap();
        assert_eq!(rc.metadata.name.as_deref(), Some("orders-restored"));
        assert_eq!(rc.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!((rc.spec.replicas, rc.spec.paused), (5, false));
        let from = rc.spec.bootstrap.unwrap().from_backup.unwrap();
        let s3 = from.s3.unwrap();
        assert_eq!(s3.prefix.as_deref(), Some("shop/orders"));
        assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example.com"));
        assert_eq!(from.backup, "latest");
        assert_eq!(rc.spec.backup.unwrap().s3.unwrap().prefix, None);

        let named = new_cluster(&orders(Some("prod/orders")), "b", "x.rsnp").unwrap();
        let from = named.spec.bootstrap.unwrap().from_backup.unwrap();
        assert_eq!(
            (from.s3.unwrap().prefix.as_deref(), from.backup.as_str()),
            (Some("prod/orders"), "x.rsnp")
        );
    }

    #[test]
    fn backups_on_a_volume_are_restored_from_the_old_clusters_directory_of_it() {
        let mut old = orders(None);
        let backup = old.spec.backup.as_mut().unwrap();
        backup.s3 = None;
        backup.persistent_volume_claim = Some(VolumeDestination {
            claim_name: "backups".into(),
            path: None,
        });
        let rc = new_cluster(&old, "orders-restored", "latest").unwrap();
        let from = rc.spec.bootstrap.unwrap().from_backup.unwrap();
        assert_eq!(from.s3, None);
        let volume = from.persistent_volume_claim.unwrap();
        assert_eq!(
            (volume.claim_name.as_str(), volume.path.as_deref()),
            ("backups", Some("shop/orders"))
        );
        let own = rc.spec.backup.unwrap().persistent_volume_claim.unwrap();
        assert_eq!(own.path, None, "its own backups go to its own directory");
    }

    #[test]
    fn a_cluster_without_backups_cannot_be_restored() {
        let mut rc = orders(None);
        rc.spec.backup = None;
        assert_eq!(
            new_cluster(&rc, "b", "latest").unwrap_err(),
            RestoreError::NoBackups("orders".into())
        );
    }
}
