//! The binary's command line: bad configuration exits 64 with one line saying what is wrong.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::process::Command;

fn sidecar(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_raft-sidecar"))
        .args(args)
        .env_remove("HOSTNAME")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_configuration_exits_64_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["run", "--no-such-flag"], "--no-such-flag"),
        (
            &["run", "--node-name", "n", "--insecure", "--data-dir", data],
            "--cluster-id",
        ),
        (
            &[
                "run",
                "--cluster-id",
                "c",
                "--node-name",
                "n",
                "--insecure",
                "--api-addr",
                "nowhere",
            ],
            "nowhere",
        ),
        (
            &[
                "run",
                "--cluster-id",
                "c",
                "--node-name",
                "n",
                "--insecure",
                "--insecure-plaintext",
                "--election-timeout-min-ms",
                "500",
                "--data-dir",
                data,
            ],
            "--election-timeout-min-ms",
        ),
        (
            &[
                "run",
                "--cluster-id",
                "c",
                "--node-name",
                "n",
                "--auth-token-file",
                "/nonexistent/token",
                "--data-dir",
                data,
            ],
            "/nonexistent/token",
        ),
        (
            &[
                "run",
                "--cluster-id",
                "c",
                "--node-name",
                "n",
                "--data-dir",
                data,
            ],
            "--auth-token-file",
        ),
        (
            &[
                "run",
                "--cluster-id",
                "c",
                "--node-name",
                "n",
                "--insecure",
                "--data-dir",
                data,
            ],
            "--tls-cert",
        ),
    ];
    for (args, needle) in cases {
        let (code, stderr) = sidecar(args);
        assert_eq!(code, Some(64), "{args:?} → {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?} printed more than one line:\n{stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} does not mention {needle}"
        );
    }
}

#[test]
fn a_data_dir_of_another_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    raft_sidecar::store::Db::open(dir.path(), "cluster-a").unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, stderr) = sidecar(&[
        "run",
        "--cluster-id",
        "cluster-b",
        "--node-name",
        "n",
        "--insecure",
        "--insecure-plaintext",
        "--data-dir",
        data,
        "--api-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--peer-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("cluster-a"), "{stderr}");
}

#[test]
fn unusable_certificate_files_are_a_configuration_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca =
        raft_pki::Authority::generate("test CA", std::time::Duration::from_secs(3600)).unwrap();
    // A certificate for another member than --node-name.
    let issued = ca
        .issue(&raft_pki::Subject {
            common_name: "other".into(),
            names: vec!["other".into()],
            usage: raft_pki::Usage::Member,
            valid_for: std::time::Duration::from_secs(3600),
        })
        .unwrap();
    let certs = dir.path().join("tls");
    issued.write_dir(&certs, ca.cert_pem()).unwrap();
    let file = |f: &str| certs.join(f).to_str().unwrap().to_owned();
    let missing = dir.path().join("nope.crt").to_str().unwrap().to_owned();
    for (cert, needle) in [
        (file("tls.crt"), "not valid for this member's name"),
        (missing.clone(), missing.as_str()),
    ] {
        let (code, stderr) = sidecar(&[
            "run",
            "--cluster-id",
            "c",
            "--node-name",
            "n",
            "--insecure",
            "--data-dir",
            data.to_str().unwrap(),
            "--api-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--peer-addr",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &file("tls.key"),
            "--tls-ca",
            &file("ca.crt"),
        ]);
        assert_eq!(code, Some(64), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn help_lists_every_run_flag_with_its_environment_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_raft-sidecar"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--cluster-id",
        "--api-addr",
        "--peer-addr",
        "--admin-addr",
        "--advertise-peer",
        "--auth-token-file",
        "--initial-members",
        "--heartbeat-ms",
        "--partition-detection-ms",
        "--snapshot-interval",
        "--log-compaction-threshold",
        "--max-log-size",
        "--journal-retention",
        "--dedupe-window",
        "--max-operation-bytes",
        "--write-timeout-ms",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(help.contains("RAFT_DATA_DIR") && help.contains("RAFT_WRITE_TIMEOUT_MS"));
}
