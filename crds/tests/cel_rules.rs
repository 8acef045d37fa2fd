//! The CEL rules of the CRD, evaluated offline with kube's client-side validator: the same rules
//! the API server applies to every create, update and `/scale` write.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::cel::{ErrorKind, ValidationErrors, validate_cel, validate_cel_update};
use raft_crds::{MAX_NAME_LENGTH, RaftCluster, RaftClusterSpec};

fn cluster(name: &str, replicas: i32) -> RaftCluster {
    RaftCluster::new(
        name,
        RaftClusterSpec {
            replicas,
            ..RaftClusterSpec::default()
        },
    )
}

/// Rules that evaluated to false; any other kind of failure (a rule that does not compile or
/// cannot be evaluated) fails the test, since the API server would reject the CRD or the object
/// for a different reason than the one under test.
fn refused_rules(result: Result<(), ValidationErrors>) -> Vec<String> {
    let Err(errors) = result else {
        return Vec::new();
    };
    for error in &errors {
        assert_eq!(error.kind, ErrorKind::ValidationFailure, "{error:?}");
    }
    errors.iter().map(|e| e.rule.clone()).collect()
}

fn assert_accepted(result: Result<(), ValidationErrors>) {
    assert_eq!(refused_rules(result), Vec::<String>::new());
}

fn assert_refused_by(result: Result<(), ValidationErrors>, rule: &str) {
    let refused = refused_rules(result);
    assert!(
        refused.iter().any(|r| r == rule),
        "expected rule `{rule}` to refuse, refused: {refused:?}"
    );
}

#[test]
fn three_replicas_with_default_settings_are_accepted() {
    assert_accepted(validate_cel(&cluster("prod-cluster", 3)));
}

#[test]
fn one_and_nine_replicas_are_accepted() {
    for replicas in [1, 9] {
        assert_accepted(validate_cel(&cluster("dev", replicas)));
    }
}

#[test]
fn even_replica_counts_are_refused() {
    for replicas in [2, 4, 8] {
        assert_refused_by(
            validate_cel(&cluster("prod-cluster", replicas)),
            "self % 2 == 1",
        );
    }
}

#[test]
fn replica_counts_outside_one_to_nine_are_refused() {
    for replicas in [-1, 0, 11] {
        assert_refused_by(
            validate_cel(&cluster("prod-cluster", replicas)),
            "self >= 1 && self <= 9",
        );
    }
}

#[test]
fn scaling_three_to_five_is_accepted() {
    let old = cluster("prod-cluster", 3);
    let new = cluster("prod-cluster", 5);
    assert_accepted(validate_cel_update(&new, &old));
}

#[test]
fn scaling_three_to_four_is_refused_as_kubectl_scale_would_be() {
    // `/scale` writes spec.replicas and the API server validates the whole object again.
    let old = cluster("prod-cluster", 3);
    let new = cluster("prod-cluster", 4);
    assert_refused_by(validate_cel_update(&new, &old), "self % 2 == 1");
}

#[test]
fn changing_the_storage_size_is_refused() {
    let old = cluster("prod-cluster", 3);
    let mut new = old.clone();
    new.spec.storage.size = Quantity("2Gi".to_owned());
    let errors = validate_cel_update(&new, &old).expect_err("size change must be refused");
    assert!(
        errors.iter().any(|e| e.rule == "self == oldSelf"
            && e.field_path.contains("storage.size")
            && e.reason.as_deref() == Some("FieldValueForbidden")),
        "{errors:?}"
    );
}

#[test]
fn changing_the_storage_class_is_refused() {
    let mut old = cluster("prod-cluster", 3);
    old.spec.storage.storage_class_name = Some("fast".to_owned());
    let mut new = old.clone();
    new.spec.storage.storage_class_name = Some("slow".to_owned());
    assert_refused_by(validate_cel_update(&new, &old), "self == oldSelf");
}

#[test]
fn storage_size_that_is_not_a_positive_quantity_is_refused() {
    for size in ["banana", "0", "-1Gi"] {
        let mut rc = cluster("prod-cluster", 3);
        rc.spec.storage.size = Quantity(size.to_owned());
        assert_refused_by(
            validate_cel(&rc),
            "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",
        );
    }
}

#[test]
fn other_spec_changes_are_accepted_with_the_storage_unchanged() {
    let old = cluster("prod-cluster", 3);
    let mut new = old.clone();
    new.spec.paused = true;
    new.spec.raft.heartbeat_ms = 100;
    new.spec.raft.election_timeout_min_ms = 500;
    new.spec.raft.election_timeout_max_ms = 1000;
    assert_accepted(validate_cel_update(&new, &old));
}

#[test]
fn election_timeout_min_not_below_max_is_refused() {
    for (min, max) in [(400, 400), (500, 400)] {
        let mut rc = cluster("prod-cluster", 3);
        rc.spec.raft.election_timeout_min_ms = min;
        rc.spec.raft.election_timeout_max_ms = max;
        assert_refused_by(
            validate_cel(&rc),
            "self.electionTimeoutMinMs < self.electionTimeoutMaxMs",
        );
    }
}

#[test]
fn heartbeat_not_below_election_timeout_min_is_refused() {
    let mut rc = cluster("prod-cluster", 3);
    rc.spec.raft.heartbeat_ms = 200;
    assert_refused_by(
        validate_cel(&rc),
        "self.heartbeatMs < self.electionTimeoutMinMs",
    );
}

#[test]
fn max_log_size_below_the_compaction_threshold_is_refused() {
    let mut rc = cluster("prod-cluster", 3);
    rc.spec.raft.max_log_size = 1000;
    assert_refused_by(
        validate_cel(&rc),
        "self.logCompactionThreshold <= self.maxLogSize",
    );
}

#[test]
fn names_up_to_the_limit_are_accepted_and_longer_ones_refused() {
    let longest = "a".repeat(MAX_NAME_LENGTH);
    assert_accepted(validate_cel(&cluster(&longest, 3)));

    let too_long = "a".repeat(MAX_NAME_LENGTH + 1);
    assert_refused_by(
        validate_cel(&cluster(&too_long, 3)),
        &format!("self.metadata.name.size() <= {MAX_NAME_LENGTH}"),
    );
}

#[test]
fn longest_name_leaves_room_for_ordinal_and_revision_hash_label() {
    // `<name>-<ordinal>-<hash>`: one digit of ordinal (replicas ≤ 9), up to 10 of hash, and
    // label values are at most 63 characters.
    assert!(MAX_NAME_LENGTH + "-8".len() + "-".len() + 10 <= 63);
}

#[test]
fn names_that_cannot_name_a_service_are_refused() {
    for name in ["1cluster", "prod.cluster", "prod-"] {
        assert_refused_by(
            validate_cel(&cluster(name, 3)),
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        );
    }
}

fn with_backup_schedule(schedule: &str) -> RaftCluster {
    let mut rc = cluster("prod-cluster", 3);
    rc.spec.backup = Some(raft_crds::BackupSpec {
        schedule: schedule.into(),
        retention: raft_crds::DEFAULT_BACKUP_RETENTION,
        s3: Some(raft_crds::S3Destination {
            bucket: "backups".into(),
            prefix: None,
            endpoint: None,
            region: None,
            credentials_secret: "s3-credentials".into(),
        }),
        persistent_volume_claim: None,
    });
    rc
}

#[test]
fn a_backup_schedule_must_have_five_cron_fields() {
    for good in ["0 */6 * * *", "*/5 * * * 1-5", " 30 2 1 * * "] {
        assert_accepted(validate_cel(&with_backup_schedule(good)));
    }
    for bad in ["@daily", "0 */6 * *", "0 0 */6 * * *", ""] {
        let refused = refused_rules(validate_cel(&with_backup_schedule(bad)));
        assert!(
            refused.iter().any(|r| r.contains("self.matches")),
            "{bad:?} was not refused: {refused:?}"
        );
    }
}

fn volume(path: Option<&str>) -> raft_crds::VolumeDestination {
    raft_crds::VolumeDestination {
        claim_name: "backups".into(),
        path: path.map(str::to_owned),
    }
}

const ONE_DESTINATION: &str = "has(self.s3) != has(self.persistentVolumeClaim)";

#[test]
fn a_backup_goes_to_exactly_one_destination() {
    let mut rc = with_backup_schedule("0 * * * *");
    let backup = rc.spec.backup.as_mut().unwrap();
    backup.persistent_volume_claim = Some(volume(None));
    assert_refused_by(validate_cel(&rc), ONE_DESTINATION);
    let backup = rc.spec.backup.as_mut().unwrap();
    backup.s3 = None;
    assert_accepted(validate_cel(&rc));
    rc.spec.backup.as_mut().unwrap().persistent_volume_claim = None;
    assert_refused_by(validate_cel(&rc), ONE_DESTINATION);
}

#[test]
fn a_volume_path_must_stay_inside_the_volume() {
    for good in ["nightly/orders", "orders", "a..b/c"] {
        let mut rc = with_backup_schedule("0 * * * *");
        let backup = rc.spec.backup.as_mut().unwrap();
        backup.s3 = None;
        backup.persistent_volume_claim = Some(volume(Some(good)));
        assert_accepted(validate_cel(&rc));
    }
    for bad in ["/etc", "../other", "a/../../b", "a/.."] {
        let mut rc = with_backup_schedule("0 * * * *");
        let backup = rc.spec.backup.as_mut().unwrap();
        backup.s3 = None;
        backup.persistent_volume_claim = Some(volume(Some(bad)));
        let refused = refused_rules(validate_cel(&rc));
        assert!(
            refused.iter().any(|r| r.contains("startsWith('/')")),
            "{bad:?} was not refused: {refused:?}"
        );
    }
}

#[test]
fn a_restore_names_one_source_and_the_backed_up_clusters_directory_of_it() {
    let from = |s3_prefix: Option<Option<&str>>, path: Option<Option<&str>>| {
        let mut rc = cluster("restored", 3);
        rc.spec.bootstrap = Some(raft_crds::BootstrapSpec {
            from_backup: Some(raft_crds::FromBackupSpec {
                s3: s3_prefix.map(|prefix| raft_crds::S3Destination {
                    bucket: "backups".into(),
                    prefix: prefix.map(str::to_owned),
                    endpoint: None,
                    region: None,
                    credentials_secret: "s3".into(),
                }),
                persistent_volume_claim: path.map(volume),
                backup: raft_crds::LATEST_BACKUP.into(),
            }),
        });
        validate_cel(&rc)
    };
    assert_accepted(from(Some(Some("shop/orders")), None));
    assert_accepted(from(None, Some(Some("shop/orders"))));
    assert_refused_by(from(None, None), ONE_DESTINATION);
    assert_refused_by(
        from(Some(Some("shop/orders")), Some(Some("shop/orders"))),
        ONE_DESTINATION,
    );
    let refused = refused_rules(from(Some(None), None));
    assert!(
        refused.iter().any(|r| r.contains("self.s3.prefix")),
        "{refused:?}"
    );
    let refused = refused_rules(from(None, Some(None)));
    assert!(
        refused
            .iter()
            .any(|r| r.contains("self.persistentVolumeClaim.path")),
        "{refused:?}"
    );
}

fn with_issuer(name: &str) -> raft_crds::TlsSpec {
    raft_crds::TlsSpec {
        issuer_ref: Some(raft_crds::IssuerRef {
            name: name.to_owned(),
            kind: "ClusterIssuer".to_owned(),
            group: "cert-manager.io".to_owned(),
        }),
    }
}

#[test]
fn the_certificate_issuer_is_chosen_at_creation_and_kept() {
    let mut old = cluster("prod-cluster", 3);
    old.spec.tls = Some(with_issuer("cluster-ca"));
    assert_accepted(validate_cel_update(&old.clone(), &old));

    let mut other = old.clone();
    other.spec.tls = Some(with_issuer("another-ca"));
    assert_refused_by(validate_cel_update(&other, &old), "self == oldSelf");

    let mut removed = old.clone();
    removed.spec.tls = None;
    assert_refused_by(
        validate_cel_update(&removed, &old),
        "has(self.tls) == has(oldSelf.tls)",
    );
    let plain = cluster("prod-cluster", 3);
    assert_refused_by(
        validate_cel_update(&old, &plain),
        "has(self.tls) == has(oldSelf.tls)",
    );
}

#[test]
fn how_a_cluster_started_cannot_be_added_or_removed_later() {
    let plain = cluster("prod-cluster", 3);
    let mut restored = plain.clone();
    restored.spec.bootstrap = Some(raft_crds::BootstrapSpec {
        from_backup: Some(raft_crds::FromBackupSpec {
            s3: None,
            persistent_volume_claim: Some(volume(Some("shop/orders"))),
            backup: "latest".to_owned(),
        }),
    });
    assert_accepted(validate_cel_update(&restored.clone(), &restored));
    let rule = "has(self.bootstrap) == has(oldSelf.bootstrap)";
    assert_refused_by(validate_cel_update(&restored, &plain), rule);
    assert_refused_by(validate_cel_update(&plain, &restored), rule);
}
