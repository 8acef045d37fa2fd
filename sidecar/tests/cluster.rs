//! Cluster tests: real `raft-sidecar` processes on loopback, driven through their HTTP APIs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

#[allow(dead_code, reason = "shared fixtures; this binary uses some of them")]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{TestCluster, op, wait_for};
use nix::sys::signal::Signal;
use raft_api::ErrorCode;
use raft_api::admin::{MemberSpec, NodeRole, SettingsUpdate};
use raft_api::daemon::{Consistency, PartitionState};

const SECS_20: Duration = Duration::from_secs(20);

fn others(n: usize, but: &[usize]) -> Vec<usize> {
    (0..n).filter(|i| !but.contains(i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_accept_writes_on_leader_and_follower_and_keep_identical_journals()
 {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let follower = others(3, &[leader])[0];

    let on_leader = t.client(leader).submit(&op("a")).await.unwrap();
    assert!(on_leader.committed && on_leader.replicated && !on_leader.duplicate);
    let on_follower = t.client(follower).submit(&op("b")).await.unwrap();
    assert_eq!(
        on_follower.log_index,
        on_leader.log_index + 1,
        "journal indices are dense"
    );

    // The follower answered once the operation was applied on the follower itself.
    let page = t
        .client(follower)
        .journal(Some(on_follower.log_index), None)
        .await
        .unwrap();
    assert_eq!(page.entries[0].operation.id, "b");

    // Ids may hold any character: one that needs escaping in a URL is found again by its id.
    let odd = t.client(leader).submit(&op("tenant/a b?é%")).await.unwrap();
    let found = t.client(leader).operation("tenant/a b?é%").await.unwrap();
    assert_eq!(found.log_index, Some(odd.log_index));

    let journal = t.journals_agree(&[0, 1, 2], 3, SECS_20).await;
    assert_eq!(
        journal,
        vec![
            (1, "a".to_string()),
            (2, "b".to_string()),
            (3, "tenant/a b?é%".to_string())
        ]
    );

    let state = wait_for(
        "the follower to see the leader and a quorum",
        SECS_20,
        || async {
            t.client(follower)
                .state()
                .await
                .ok()
                .filter(|s| s.quorum_available)
        },
    )
    .await;
    assert!(!state.is_leader);
    assert_eq!(
        state.leader_id.as_deref(),
        Some(t.c.nodes[leader].name.as_str())
    );
    assert_eq!(state.members.len(), 3);
    assert_eq!(state.partition_state, PartitionState::Healthy);

    // A clean SIGTERM exits 0.
    let code =
        t.c.terminate(follower, Duration::from_secs(15))
            .await
            .unwrap();
    assert_eq!(code, Some(0));

    // So does a SIGTERM while the node is still starting: sent as soon as the process watches
    // for it (its caught-signal mask in /proc), which is while it opens its store.
    t.c.start(follower).unwrap();
    let pid = t.c.pid(follower).unwrap();
    let watches_sigterm = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let mask = s
                    .lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))?
                    .trim()
                    .to_string();
                u64::from_str_radix(&mask, 16).ok()
            })
            .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
    };
    let deadline = std::time::Instant::now() + SECS_20;
    while !watches_sigterm() {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted node did not watch for SIGTERM within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let code =
        t.c.terminate(follower, Duration::from_secs(15))
            .await
            .unwrap();
    assert_eq!(code, Some(0), "SIGTERM while starting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_bad_input_gets_its_error_code_and_the_node_keeps_serving() {
    let mut t = TestCluster::start(3, &["--max-operation-bytes", "4KiB"]).await;
    let leader = t.leader(SECS_20).await;
    let http = t.c.admin_http().reqwest();
    let api = format!("http://{}", t.c.nodes[leader].api);
    let admin = format!("https://{}", t.c.nodes[leader].admin);

    daemon_api_refuses_malformed_requests(&http, &api).await;
    a_reused_id_with_other_content_is_an_id_conflict(&t, leader).await;
    admin_api_refuses_requests_without_the_right_token(&http, &admin, &t.c.token).await;
    probes_and_metrics_need_no_token_and_count_the_refusals(&http, &admin).await;

    // Membership calls on a follower point at the leader.
    let follower = others(3, &[leader])[0];
    let err = t.client(follower).remove(1).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotLeader));

    // Still serving.
    let ok = t
        .client(leader)
        .submit(&op("after-bad-input"))
        .await
        .unwrap();
    assert!(ok.committed);
}

/// Assert the HTTP status and error code of an error answer; returns its body.
async fn expect_error(resp: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "expected {code}");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

async fn daemon_api_refuses_malformed_requests(http: &reqwest::Client, api: &str) {
    // A refused oversized body is not read, so the server closes that connection: never reuse
    // it for the next request.
    let post = |body: String| {
        http.post(format!("{api}/v1/operations"))
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(body)
            .send()
    };
    let long_id = format!(r#"{{"id":"{}","type":"x"}}"#, "i".repeat(257));
    for body in [
        "{not json".to_string(),
        r#"{"type":"x"}"#.into(),
        r#"{"id":"a"}"#.into(),
        long_id,
    ] {
        expect_error(post(body).await.unwrap(), 400, "INVALID_OPERATION").await;
    }
    for (id, size) in [("big", 8 * 1024), ("huge", 200 * 1024)] {
        let body = format!(
            r#"{{"id":"{id}","type":"x","payload":"{}"}}"#,
            "p".repeat(size)
        );
        expect_error(post(body).await.unwrap(), 413, "PAYLOAD_TOO_LARGE").await;
    }
    let get = |path: &str| http.get(format!("{api}{path}")).send();
    expect_error(
        get("/v1/operations/never-submitted").await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    expect_error(
        get("/v1/journal?from=abc").await.unwrap(),
        400,
        "INVALID_OPERATION",
    )
    .await;
}

async fn a_reused_id_with_other_content_is_an_id_conflict(t: &TestCluster, leader: usize) {
    t.client(leader).submit(&op("dup")).await.unwrap();
    let mut conflicting = op("dup");
    conflicting.payload = Some(serde_json::json!({"other": true}));
    let err = t.client(leader).submit(&conflicting).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::IdConflict));
}

async fn admin_api_refuses_requests_without_the_right_token(
    http: &reqwest::Client,
    admin: &str,
    token: &str,
) {
    let unauthorized = [
        http.get(format!("{admin}/admin/v1/status")),
        http.get(format!("{admin}/admin/v1/cluster"))
            .bearer_auth("wrong"),
        http.delete(format!("{admin}/admin/v1/members/1")),
    ];
    for request in unauthorized {
        expect_error(request.send().await.unwrap(), 401, "UNAUTHORIZED").await;
    }
    let garbage = http
        .post(format!("{admin}/admin/v1/members"))
        .bearer_auth(token)
        .body("nope")
        .send()
        .await
        .unwrap();
    expect_error(garbage, 400, "INVALID_OPERATION").await;
}

async fn probes_and_metrics_need_no_token_and_count_the_refusals(
    http: &reqwest::Client,
    admin: &str,
) {
    for probe in ["healthz", "readyz"] {
        let resp = http.get(format!("{admin}/{probe}")).send().await.unwrap();
        assert!(resp.status().is_success(), "/{probe}: {}", resp.status());
    }
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("consensus_operations_failed_total{code=\"INVALID_OPERATION\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("consensus_is_leader 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_loses_no_ack_duplicates_nothing_and_the_old_leader_catches_up()
 {
    let mut t = TestCluster::start(3, &[]).await;
    let old = t.leader(SECS_20).await;
    let survivors = others(3, &[old]);
    let mut events = t
        .client(survivors[0])
        .stream("/v1/events")
        .await
        .unwrap()
        .bytes_stream();

    // Writers submit to the leader until it dies, then retry the same ids on the survivors.
    let acked = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let client_nodes: Vec<usize> = std::iter::once(old)
            .chain(survivors.iter().copied())
            .collect();
        let clients: Vec<_> = client_nodes.iter().map(|i| t.client(*i)).collect();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for k in 0..30 {
                let o = op(&format!("w{w}-{k}"));
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut attempt = 0;
                let result = loop {
                    match clients[attempt % clients.len()].submit(&o).await {
                        Ok(r) => break r,
                        Err(e) if common::retryable(&e) && Instant::now() < deadline => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("{} failed for good: {e}", o.id),
                    }
                };
                acked.lock().await.push((o.id.clone(), result.log_index));
            }
        }));
    }
    wait_for("some writes before the kill", SECS_20, || async {
        (acked.lock().await.len() >= 40).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    t.c.kill9(old).await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let new_leader = t.leader(SECS_20).await;
    assert_ne!(new_leader, old);
    eprintln!(
        "writes resumed and finished {:?} after the kill",
        killed_at.elapsed()
    );

    let acked = acked.lock().await.clone();
    assert_eq!(acked.len(), 240);
    let journal = t.journals_agree(&survivors, 240, SECS_20).await;
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (index, id) in &journal {
        assert!(
            seen.insert(id.clone(), *index).is_none(),
            "{id} appears twice in the journal"
        );
    }
    for (id, index) in &acked {
        assert_eq!(
            seen.get(id),
            Some(index),
            "acknowledged {id} at {index} is not there exactly"
        );
    }
    let indices: Vec<u64> = journal.iter().map(|(i, _)| *i).collect();
    assert!(
        indices.windows(2).all(|w| w[1] == w[0] + 1),
        "indices strictly increase without gaps"
    );

    // A survivor saw the new leader being elected.
    let seen = raft_testkit::wait::sse_until(&mut events, Duration::from_secs(5), |text| {
        text.contains("event:consensus:leader_elected")
            || text.contains("event: consensus:leader_elected")
    })
    .await;
    assert!(
        seen.contains("consensus:leader_elected"),
        "no consensus:leader_elected event on a survivor: {seen}"
    );

    // The old leader restarts from its data dir and catches up.
    t.c.start(old).unwrap();
    let all = t.journals_agree(&[0, 1, 2], 240, SECS_20).await;
    assert_eq!(all, journal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_fell_behind_compaction_catches_up_by_snapshot() {
    let args = [
        "--snapshot-interval",
        "50",
        "--log-compaction-threshold",
        "10",
        "--max-log-size",
        "100",
        "--journal-retention",
        "120",
    ];
    let mut t = TestCluster::start(3, &args).await;
    let leader = t.leader(SECS_20).await;
    let lagging = others(3, &[leader])[0];
    let up: Vec<usize> = others(3, &[lagging]);
    t.c.kill9(lagging).await.unwrap();
    for k in 0..300 {
        t.submit_retrying(&up, &op(&format!("c{k}")), SECS_20).await;
    }
    t.client(leader).snapshot().await.unwrap();
    let state = t.client(leader).state().await.unwrap();
    assert!(
        state.snapshot_index >= 250,
        "snapshot at {}",
        state.snapshot_index
    );
    assert!(
        state.log_size <= 100 + 50,
        "log compacted to {} entries",
        state.log_size
    );

    // Reading below the retained journal answers COMPACTED with firstIndex.
    let err = t.client(leader).journal(Some(1), None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Compacted));

    t.c.start(lagging).unwrap();
    let caught_up = wait_for(
        "the lagging follower to install a snapshot and catch up",
        SECS_20,
        || async {
            let s = t.client(lagging).state().await.ok()?;
            (s.applied_index >= state.applied_index && s.snapshot_index > 0).then_some(s)
        },
    )
    .await;
    assert!(caught_up.snapshot_index > 0);
    let page_leader = t.client(leader).journal(None, Some(1000)).await.unwrap();
    let page_lagging = t.client(lagging).journal(None, Some(1000)).await.unwrap();
    assert_eq!(page_lagging.entries, page_leader.entries);
    assert_eq!(page_lagging.commit_index, 300);
    // A duplicate submitted to the caught-up node is still recognised (dedupe came with the snapshot).
    let dup = t.client(lagging).submit(&op("c5")).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.log_index, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_as_learners_promoted_and_removed_including_the_leader() {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    for k in 0..20 {
        t.submit_retrying(&[leader], &op(&format!("m{k}")), SECS_20)
            .await;
    }
    // A new node starts uninitialized and is Ready but refuses writes.
    let new = t.c.plan_node(false).unwrap();
    t.c.start(new).unwrap();
    let status = wait_for("the new node's admin API", SECS_20, || async {
        t.client(new).status().await.ok()
    })
    .await;
    assert_eq!(status.role, NodeRole::Uninitialized);
    let err = t.client(new).submit(&op("early")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotInitialized));

    let spec = MemberSpec {
        node_id: status.node_id.parse().unwrap(),
        name: t.c.nodes[new].name.clone(),
        address: t.c.nodes[new].peer.to_string(),
        admin_address: Some(t.c.nodes[new].admin.to_string()),
    };
    let added = t.client(leader).add_learner(&spec).await.unwrap();
    assert_eq!(added.added, Some(true));
    assert_eq!(
        t.client(leader).add_learner(&spec).await.unwrap().added,
        Some(false),
        "idempotent"
    );
    wait_for("the learner to catch up", SECS_20, || async {
        let view = t.client(leader).cluster().await.ok()?;
        let m = view.members.iter().find(|m| m.node_id == status.node_id)?;
        (m.lag == Some(0)).then_some(())
    })
    .await;
    // Caught up in time too: it has everything the leader had.
    let view = t.client(leader).cluster().await.unwrap();
    let learner = view.members.iter().find(|m| m.node_id == status.node_id);
    assert_eq!(learner.and_then(|m| m.lag_ms), Some(0), "{view:?}");
    let promoted = t.client(leader).promote(spec.node_id).await.unwrap();
    assert_eq!(promoted.promoted, Some(true));
    t.journals_agree(&[0, 1, 2, new], 20, SECS_20).await;

    // Remove a follower: it learns it was removed and refuses writes.
    let follower = others(3, &[leader])[0];
    let follower_id: u64 = t
        .client(follower)
        .status()
        .await
        .unwrap()
        .node_id
        .parse()
        .unwrap();
    let removed = t.client(leader).remove(follower_id).await.unwrap();
    assert_eq!(removed.removed, Some(true));
    let again = t.client(leader).remove(follower_id).await.unwrap();
    assert_eq!(
        again.removed,
        Some(false),
        "removing a non-member is a no-op"
    );
    wait_for(
        "the removed follower to report `removed`",
        SECS_20,
        || async {
            let s = t.client(follower).status().await.ok()?;
            (s.role == NodeRole::Removed).then_some(())
        },
    )
    .await;
    let err = t
        .client(follower)
        .submit(&op("to-removed"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotInitialized));

    // Remove the leader itself: the rest elect a new one and keep committing.
    let leader_id: u64 = t
        .client(leader)
        .status()
        .await
        .unwrap()
        .node_id
        .parse()
        .unwrap();
    let removed = t.client(leader).remove(leader_id).await.unwrap();
    assert_eq!(removed.removed, Some(true));
    let remaining: Vec<usize> = others(4, &[leader, follower]);
    let new_leader = wait_for("a leader among the remaining members", SECS_20, || async {
        for i in &remaining {
            if let Ok(s) = t.client(*i).state().await
                && s.is_leader
            {
                return Some(*i);
            }
        }
        None
    })
    .await;
    let view = t.client(new_leader).cluster().await.unwrap();
    assert_eq!(view.members.len(), 2);
    assert!(!view.joint);
    t.submit_retrying(&remaining, &op("after-removals"), SECS_20)
        .await;
    t.journals_agree(&remaining, 21, SECS_20).await;

    // With two voters left, removing one while the other is down would lose quorum: refused.
    let other = remaining
        .iter()
        .copied()
        .find(|i| *i != new_leader)
        .unwrap();
    t.c.signal(other, Signal::SIGSTOP).unwrap();
    wait_for(
        "the leader to see the frozen member as unhealthy",
        SECS_20,
        || async {
            let view = t.client(new_leader).cluster().await.ok()?;
            view.members.iter().any(|m| !m.healthy).then_some(())
        },
    )
    .await;
    let new_leader_id: u64 = t
        .client(new_leader)
        .status()
        .await
        .unwrap()
        .node_id
        .parse()
        .unwrap();
    let err = t
        .client(new_leader)
        .remove(new_leader_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Refused), "{err}");
    t.c.signal(other, Signal::SIGCONT).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_answers_no_quorum_or_no_leader_within_three_seconds_and_recovers() {
    let mut t = TestCluster::start(3, &["--partition-detection-ms", "1000"]).await;
    let leader = t.leader(SECS_20).await;
    let followers = others(3, &[leader]);
    let mut events = t
        .client(leader)
        .stream("/v1/events")
        .await
        .unwrap()
        .bytes_stream();

    // Freeze both followers (SIGSTOP: alive to TCP, silent to Raft): the leader is a minority.
    for f in &followers {
        t.c.signal(*f, Signal::SIGSTOP).unwrap();
    }
    // A write caught in flight by the partition ends quickly, with an unknown outcome.
    let started = Instant::now();
    let err = t
        .client(leader)
        .submit(&op("minority-0"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err.code(), Some(ErrorCode::NoQuorum | ErrorCode::Timeout)),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "first answer took {took:?}");

    let state = wait_for(
        "the leader to report a minority partition",
        SECS_20,
        || async {
            let s = t.client(leader).state().await.ok()?;
            (s.partition_state == PartitionState::Minority).then_some(s)
        },
    )
    .await;
    assert!(!state.quorum_available);
    let started = Instant::now();
    let err = t
        .client(leader)
        .submit(&op("minority-1"))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Some(ErrorCode::NoQuorum), "{err}");
    assert!(took < Duration::from_secs(3), "NO_QUORUM took {took:?}");

    for f in &followers {
        t.c.signal(*f, Signal::SIGCONT).unwrap();
    }
    let new_leader = t.leader(SECS_20).await;
    t.submit_retrying(&[new_leader], &op("healed"), SECS_20)
        .await;
    let seen = raft_testkit::wait::sse_until(&mut events, Duration::from_secs(10), |text| {
        text.contains("partition:detected") && text.contains("partition:recovered")
    })
    .await;
    assert!(
        seen.contains("partition:detected") && seen.contains("partition:recovered"),
        "events seen: {seen}"
    );

    // Now isolate a follower: it answers NO_LEADER (or NO_QUORUM) quickly instead of hanging.
    // Wait until it knows it is cut off (minority or leaderless): while it is merely degraded
    // (one peer silent, the leader still heard) it forwards, and a forward to a leader that
    // stops mid-request rightly answers TIMEOUT (outcome unknown), not a refusal.
    let leader = t.leader(SECS_20).await;
    let lone = others(3, &[leader])[0];
    let rest = others(3, &[lone]);
    // The lone node may be the old leader, still reporting the minority it was in: wait for a
    // fresh verdict first, or the one awaited below could be that stale one while the new
    // leader was heard a moment ago (a write is then forwarded, and TIMEOUT is the true answer).
    wait_for(
        "the lone follower to see the healed cluster",
        SECS_20,
        || async {
            let s = t.client(lone).state().await.ok()?;
            (s.partition_state == PartitionState::Healthy).then_some(())
        },
    )
    .await;
    for r in &rest {
        t.c.signal(*r, Signal::SIGSTOP).unwrap();
    }
    wait_for(
        "the lone follower to notice it is cut off",
        SECS_20,
        || async {
            let s = t.client(lone).state().await.ok()?;
            matches!(
                s.partition_state,
                PartitionState::Minority | PartitionState::Leaderless
            )
            .then_some(())
        },
    )
    .await;
    let started = Instant::now();
    let err = t.client(lone).submit(&op("lone")).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err.code(), Some(ErrorCode::NoLeader | ErrorCode::NoQuorum)),
        "lone follower answered {err}"
    );
    assert!(took < Duration::from_secs(3), "answer took {took:?}");
    for r in &rest {
        t.c.signal(*r, Signal::SIGCONT).unwrap();
    }
    t.leader(SECS_20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_was_lost_returns_as_a_new_node_id_and_is_replaced_without_losing_data() {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let victim = others(3, &[leader])[0];
    let old_id = t.client(victim).status().await.unwrap().node_id;
    t.submit_retrying(&[leader], &op("before-loss"), SECS_20)
        .await;

    t.c.kill9(victim).await.unwrap();
    t.c.wipe(victim).unwrap();
    t.c.start(victim).unwrap();
    let fresh = wait_for("the wiped node's admin API", SECS_20, || async {
        t.client(victim).status().await.ok()
    })
    .await;
    assert_ne!(
        fresh.node_id, old_id,
        "a lost volume comes back as a new node id"
    );
    assert_eq!(
        fresh.role,
        NodeRole::Uninitialized,
        "it never answers as the old member"
    );

    // The cluster keeps committing with the old member missing.
    t.submit_retrying(&[leader], &op("during-loss"), SECS_20)
        .await;
    let view = t.client(leader).cluster().await.unwrap();
    assert!(view.members.iter().any(|m| m.node_id == old_id));

    // Replace it: remove the old id, add the new one as a learner, promote it.
    let removed = t
        .client(leader)
        .remove(old_id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(removed.removed, Some(true));
    let spec = MemberSpec {
        node_id: fresh.node_id.parse().unwrap(),
        name: t.c.nodes[victim].name.clone(),
        address: t.c.nodes[victim].peer.to_string(),
        admin_address: Some(t.c.nodes[victim].admin.to_string()),
    };
    t.client(leader).add_learner(&spec).await.unwrap();
    wait_for("the replacement to catch up", SECS_20, || async {
        let view = t.client(leader).cluster().await.ok()?;
        let m = view.members.iter().find(|m| m.node_id == fresh.node_id)?;
        (m.lag == Some(0)).then_some(())
    })
    .await;
    t.client(leader).promote(spec.node_id).await.unwrap();
    let journal = t.journals_agree(&[0, 1, 2], 2, SECS_20).await;
    assert_eq!(
        journal,
        vec![
            (1, "before-loss".to_string()),
            (2, "during-loss".to_string())
        ]
    );
}

/// `Some` once all three nodes have applied a dedupe window of `ms`.
async fn every_node_has_window(t: &TestCluster, ms: u64) -> Option<()> {
    for i in 0..3 {
        if t.client(i).settings().await.ok()?.dedupe_window_ms != Some(ms) {
            return None;
        }
    }
    Some(())
}

/// The dedupe window is the cluster's, set once and changed only through the admin API: every
/// node restarted with a window just over the write timeout, whichever leads, still remembers
/// ids for the cluster's 24 h; a window set through the leader applies on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dedupe_window_is_the_clusters_and_changes_only_through_the_admin_api() {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    t.submit_retrying(&[leader], &op("first"), SECS_20).await;
    const DAY_MS: u64 = 24 * 3600 * 1000;
    wait_for("every node to apply the cluster's window", SECS_20, || {
        every_node_has_window(&t, DAY_MS)
    })
    .await;

    // Restart every node with a 6 s window (the write timeout is 5 s).
    for i in 0..3 {
        t.c.kill9(i).await.unwrap();
        t.c.nodes[i].args = vec!["--dedupe-window".into(), "6s".into()];
        t.c.start(i).unwrap();
    }
    let leader = t.leader(SECS_20).await;
    let first = t.submit_retrying(&[leader], &op("a"), SECS_20).await;
    // Real time must pass for the replicated clock to pass a 6 s window: nothing to poll.
    tokio::time::sleep(Duration::from_secs(7)).await;
    t.submit_retrying(&[leader], &op("filler-1"), SECS_20).await;
    let again = t.submit_retrying(&[leader], &op("a"), SECS_20).await;
    assert!(
        again.duplicate && again.log_index == first.log_index,
        "a leader's flag shortened the cluster's window: {again:?} after {first:?}"
    );
    let s = t.client(leader).settings().await.unwrap();
    assert_eq!(s.dedupe_window_ms, Some(DAY_MS));

    // Changes go through the leader, and a window not longer than the write timeout is refused.
    let follower = others(3, &[leader])[0];
    let update = |ms| SettingsUpdate {
        dedupe_window_ms: ms,
    };
    let err = t
        .client(follower)
        .set_settings(&update(6_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotLeader), "{err}");
    let err = t
        .client(leader)
        .set_settings(&update(5_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Refused), "{err}");
    let set = t.client(leader).set_settings(&update(6_000)).await.unwrap();
    assert_eq!(set.dedupe_window_ms, Some(6_000));
    wait_for("every node to apply the new window", SECS_20, || {
        every_node_has_window(&t, 6_000)
    })
    .await;

    // Now ids are forgotten after 6 s of the replicated clock, which entries advance.
    let b = t.submit_retrying(&[leader], &op("b"), SECS_20).await;
    // As above: the window is measured in real time.
    tokio::time::sleep(Duration::from_secs(7)).await;
    t.submit_retrying(&[leader], &op("filler-2"), SECS_20).await;
    let b_again = t.submit_retrying(&[leader], &op("b"), SECS_20).await;
    assert!(
        !b_again.duplicate && b_again.log_index > b.log_index,
        "expired under the new window: {b_again:?} after {b:?}"
    );
}

/// `?consistency=linearizable` on a follower that was frozen while a write committed: the
/// read waits until the follower applied it, so it sees the write (a local read right after
/// the thaw may not). A follower cut off from everyone answers an error, never stale data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_on_a_follower_see_every_acknowledged_write_or_fail() {
    let mut t = TestCluster::start(3, &[]).await;
    let leader = t.leader(SECS_20).await;
    let follower = others(3, &[leader])[0];
    t.c.signal(follower, Signal::SIGSTOP).unwrap();
    let written = t
        .submit_retrying(&[leader], &op("while-frozen"), SECS_20)
        .await;
    t.c.signal(follower, Signal::SIGCONT).unwrap();
    let lin = Consistency::Linearizable;
    let client = t.client(follower);
    let seen = client.operation_read("while-frozen", lin).await.unwrap();
    assert_eq!(seen.log_index, Some(written.log_index), "{seen:?}");
    let page = client.journal_read(None, Some(1000), lin).await.unwrap();
    assert!(
        page.entries
            .iter()
            .any(|e| e.operation.id == "while-frozen"),
        "{page:?}"
    );
    let state = client.state_read(lin).await.unwrap();
    assert!(!state.is_leader && state.leader_id.is_some(), "{state:?}");

    // Cut off: the read cannot be confirmed, so it is refused rather than served stale.
    for r in others(3, &[follower]) {
        t.c.signal(r, Signal::SIGSTOP).unwrap();
    }
    let started = Instant::now();
    let err = client.state_read(lin).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            Some(ErrorCode::NoLeader | ErrorCode::NoQuorum | ErrorCode::Timeout)
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = client.journal_read(None, Some(1), lin).await.unwrap_err();
    assert!(err.code().is_some_and(|c| c.is_retryable()), "{err}");
    for r in others(3, &[follower]) {
        t.c.signal(r, Signal::SIGCONT).unwrap();
    }
    t.leader(SECS_20).await;
    // An unknown consistency is a bad request.
    let err = client
        .stream("/v1/state?consistency=eventual")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidOperation), "{err}");
}

/// A node cut off from the majority ends its journal watches with an error event naming why,
/// instead of leaving them open in silence while it may be behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_node_ends_its_watches_with_an_error_event() {
    let mut t = TestCluster::start(3, &["--partition-detection-ms", "1000"]).await;
    let leader = t.leader(SECS_20).await;
    t.submit_retrying(&[leader], &op("before"), SECS_20).await;
    let lone = others(3, &[leader])[0];
    let mut watch = t
        .client(lone)
        .stream("/v1/journal/watch?from=1")
        .await
        .unwrap()
        .bytes_stream();
    let seen = raft_testkit::wait::sse_until(&mut watch, Duration::from_secs(5), |text| {
        text.contains("\"before\"")
    })
    .await;
    assert!(seen.contains("\"before\""), "{seen}");
    for r in others(3, &[lone]) {
        t.c.signal(r, Signal::SIGSTOP).unwrap();
    }
    let seen =
        raft_testkit::wait::sse_until(&mut watch, SECS_20, |text| text.contains("event:error"))
            .await;
    assert!(
        seen.contains("event:error") && seen.contains("NO_QUORUM"),
        "the watch stayed open in silence: {seen}"
    );
    for r in others(3, &[lone]) {
        t.c.signal(r, Signal::SIGCONT).unwrap();
    }
    t.leader(SECS_20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_commits_each_operation_once_answers_each_in_order_and_refuses_only_bad_batches() {
    use raft_api::daemon::{BatchItem, BatchResult};

    let mut t = TestCluster::start(3, &["--max-batch-operations", "64"]).await;
    let leader = t.leader(SECS_20).await;
    let follower = others(3, &[leader])[0];
    let earlier = t.client(leader).submit(&op("b-7")).await.unwrap();

    // 50 operations through a follower: one malformed, one already committed alone.
    let mut ops: Vec<serde_json::Value> = (0..50)
        .map(|i| serde_json::to_value(op(&format!("b-{i}"))).unwrap())
        .collect();
    ops[20] = serde_json::json!({"id": "b-20", "type": ""});
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/operations:batch", t.c.nodes[follower].api);
    let send = |ops: Vec<serde_json::Value>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(&url)
                .json(&serde_json::json!({ "operations": ops }))
                .send()
                .await
                .unwrap()
        }
    };
    let first: BatchResult = send(ops.clone()).await.json().await.unwrap();
    assert_eq!(first.results.len(), 50);
    let mut indices = std::collections::BTreeSet::new();
    for (i, item) in first.results.iter().enumerate() {
        match (i, item) {
            (20, BatchItem::Failed(f)) => {
                assert_eq!(f.operation_id.as_deref(), Some("b-20"));
                assert_eq!(f.error.code, ErrorCode::InvalidOperation);
            }
            (7, BatchItem::Committed(r)) => {
                assert!(r.duplicate, "b-7 was committed before the batch");
                assert_eq!(r.log_index, earlier.log_index);
            }
            (i, BatchItem::Committed(r)) => {
                assert_eq!(r.operation_id, format!("b-{i}"), "answers are in order");
                assert!(!r.duplicate);
                assert!(indices.insert(r.log_index), "one journal index each");
            }
            (i, other) => panic!("operation {i}: {other:?}"),
        }
    }
    // Every operation in the journal once, on every node.
    let journal = t.journals_agree(&[0, 1, 2], 49, SECS_20).await;
    let ids: std::collections::BTreeSet<&str> = journal.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 49);

    // The same batch again (a client retry): every one a duplicate at its first index.
    let again: BatchResult = send(ops).await.json().await.unwrap();
    for (item, before) in again.results.iter().zip(&first.results) {
        if let (BatchItem::Committed(a), BatchItem::Committed(b)) = (item, before) {
            assert!(a.duplicate && a.log_index == b.log_index, "{a:?} / {b:?}");
        }
    }
    t.journals_agree(&[0, 1, 2], 49, SECS_20).await;

    // Refused as a whole: too many operations, none, not a batch; the typed client agrees.
    let too_many: Vec<serde_json::Value> = (0..65)
        .map(|i| serde_json::to_value(op(&format!("x-{i}"))).unwrap())
        .collect();
    expect_error(send(too_many).await, 413, "PAYLOAD_TOO_LARGE").await;
    expect_error(send(Vec::new()).await, 400, "INVALID_OPERATION").await;
    let not_a_batch = http
        .post(&url)
        .json(&serde_json::json!([1, 2]))
        .send()
        .await
        .unwrap();
    expect_error(not_a_batch, 400, "INVALID_OPERATION").await;
    let typed = t
        .client(leader)
        .submit_batch(&[op("c-1"), op("c-2")])
        .await
        .unwrap();
    assert!(matches!(
        &typed.results[..],
        [BatchItem::Committed(_), BatchItem::Committed(_)]
    ));
}
