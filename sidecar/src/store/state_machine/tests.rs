use openraft::{CommittedLeaderId, Entry as RaftEntry, EntryPayload};
use rocksdb::perf::PerfMetric;

use super::*;
use crate::journal::{JournalState, OpOutcome, StoredOperation};

fn op(id: &str, payload: &str) -> StoredOperation {
    StoredOperation {
        id: id.into(),
        op_type: "t".into(),
        payload: Some(payload.into()),
        daemon_id: None,
        timestamp: None,
    }
}

/// An entry whose leader read the replicated clock as `clock_ms` and was started with a dedupe
/// window of `window_ms` (which the cluster adopts only if it has none yet).
fn entry(term: u64, index: u64, ops: Vec<StoredOperation>, clock_ms: u64, window_ms: u64) -> Entry {
    RaftEntry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(std::sync::Arc::new(Proposal {
            operations: ops,
            clock_ms,
            initial_window_ms: window_ms,
            set_window_ms: None,
        })),
    }
}

/// The records of a page that must not be compacted.
fn records(slice: JournalSlice) -> Vec<(u64, JournalRecord)> {
    match slice {
        JournalSlice::Records { records, .. } => records,
        JournalSlice::Compacted { first_index } => {
            panic!("unexpectedly compacted (first index {first_index})")
        }
    }
}

fn indices(slice: &JournalSlice) -> Vec<u64> {
    match slice {
        JournalSlice::Records { records, .. } => records.iter().map(|(i, _)| *i).collect(),
        JournalSlice::Compacted { .. } => Vec::new(),
    }
}

fn open(dir: &std::path::Path, retention: u64) -> StateMachineStore {
    let (db, _) = Db::open(dir, "c").unwrap();
    StateMachineStore::open(db, retention).unwrap()
}

#[tokio::test]
async fn applying_the_same_id_twice_across_entries_appends_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), 100);
    let out = sm
        .apply(vec![entry(
            1,
            1,
            vec![op("a", "1"), op("b", "2")],
            10,
            1_000,
        )])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        vec![
            OpOutcome::Appended { index: 1, term: 1 },
            OpOutcome::Appended { index: 2, term: 1 }
        ]
    );
    let out = sm
        .apply(vec![entry(
            2,
            2,
            vec![op("a", "1"), op("a", "9")],
            20,
            1_000,
        )])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        vec![
            OpOutcome::Duplicate { index: 1, term: 1 },
            OpOutcome::Conflict { index: 1 }
        ]
    );
    let reader = sm.reader();
    let page = records(reader.page(Some(1), 10).await.unwrap());
    assert_eq!(
        page.iter()
            .map(|(i, r)| (*i, r.operation.id.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "a"), (2, "b")]
    );
    assert_eq!(reader.applied().journal.last_index(), 2);
}

#[tokio::test]
async fn applied_state_and_dedupe_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = open(dir.path(), 100);
        sm.apply(vec![entry(1, 1, vec![op("a", "1")], 10, 1_000)])
            .await
            .unwrap();
    }
    let mut sm = open(dir.path(), 100);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(1));
    let out = sm
        .apply(vec![entry(1, 2, vec![op("a", "1")], 20, 1_000)])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        vec![OpOutcome::Duplicate { index: 1, term: 1 }]
    );
}

#[tokio::test]
async fn dedupe_records_expire_after_the_window_of_the_proposing_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), 100);
    sm.apply(vec![entry(1, 1, vec![op("a", "1")], 1_000, 500)])
        .await
        .unwrap();
    // Still inside the window: duplicate.
    let out = sm
        .apply(vec![entry(1, 2, vec![op("a", "1")], 1_400, 500)])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        vec![OpOutcome::Duplicate { index: 1, term: 1 }]
    );
    // Past it: the id is forgotten and appended anew.
    let out = sm
        .apply(vec![entry(1, 3, vec![op("a", "1")], 1_600, 500)])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        vec![OpOutcome::Appended { index: 2, term: 1 }]
    );
}

#[tokio::test]
async fn retention_drops_the_oldest_journal_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), 3);
    let ops = (0..5).map(|i| op(&format!("op-{i}"), "1")).collect();
    sm.apply(vec![entry(1, 1, ops, 10, 1_000)]).await.unwrap();
    let reader = sm.reader();
    assert_eq!(
        reader.applied().journal,
        JournalState {
            next_index: 6,
            first_index: 3,
            clock_ms: 10,
            dedupe_window_ms: Some(1_000),
            dedupe_horizon_ms: 0,
        }
    );
    let page = records(reader.page(None, 10).await.unwrap());
    assert_eq!(
        page.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    // Dedupe outlives retention: the dropped operation is still known.
    assert_eq!(
        reader.lookup("op-0".into()).await.unwrap().map(|r| r.index),
        Some(1)
    );
}

#[tokio::test]
async fn a_page_from_a_trimmed_index_is_compacted_never_a_later_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), 10);
    let ops = (0..20).map(|i| op(&format!("a-{i}"), "1")).collect();
    sm.apply(vec![entry(1, 1, ops, 10, 1_000)]).await.unwrap();
    let reader = sm.reader();
    let first = reader.applied().journal.first_index;
    assert_eq!(first, 11);
    let before = reader.page(Some(first), 3).await.unwrap();
    assert_eq!(indices(&before), vec![11, 12, 13]);
    // Five more: retention moves the first index to 16 under a reader paging from 11.
    let ops = (0..5).map(|i| op(&format!("b-{i}"), "1")).collect();
    sm.apply(vec![entry(1, 2, ops, 20, 1_000)]).await.unwrap();
    let after = reader.page(Some(first), 3).await.unwrap();
    assert!(
        matches!(after, JournalSlice::Compacted { first_index: 16 }),
        "a page from {first} after the trim must be COMPACTED, got {after:?}"
    );
    // From the new first index on, the page starts exactly there.
    let resumed = reader.page(Some(16), 3).await.unwrap();
    assert_eq!(indices(&resumed), vec![16, 17, 18]);
    match reader.page(None, 100).await.unwrap() {
        JournalSlice::Records { journal, records } => {
            assert_eq!((journal.first_index, journal.last_index()), (16, 25));
            assert_eq!(records.len(), 10);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_snapshot_installed_elsewhere_reproduces_the_journal_and_dedupe() {
    let src = tempfile::tempdir().unwrap();
    let mut sm = open(src.path(), 100);
    sm.apply(vec![entry(
        1,
        1,
        vec![op("a", "1"), op("b", "2")],
        10,
        1_000,
    )])
    .await
    .unwrap();
    let mut builder = sm.get_snapshot_builder().await;
    let snapshot = builder.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(1));
    // Applying after the build does not change the built snapshot.
    sm.apply(vec![entry(1, 2, vec![op("c", "3")], 10, 1_000)])
        .await
        .unwrap();

    let dst = tempfile::tempdir().unwrap();
    let mut other = open(dst.path(), 100);
    other
        .apply(vec![entry(1, 1, vec![op("zzz", "1")], 10, 1_000)])
        .await
        .unwrap();
    let bytes = read_all(snapshot.snapshot).await;
    let received = receive(&mut other, &bytes).await;
    other
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap();
    let reader = other.reader();
    let page = records(reader.page(Some(1), 10).await.unwrap());
    assert_eq!(
        page.iter()
            .map(|(_, r)| r.operation.id.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert!(
        reader.lookup("zzz".into()).await.unwrap().is_none(),
        "old state is replaced"
    );
    let out = other
        .apply(vec![entry(1, 2, vec![op("b", "2")], 20, 1_000)])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        vec![OpOutcome::Duplicate { index: 2, term: 1 }]
    );
    let current = other.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
}

#[tokio::test]
async fn a_corrupt_snapshot_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut sm, snapshot) = one_op_and_a_snapshot(dir.path()).await;
    let mut bytes = read_all(snapshot.snapshot).await;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let received = receive(&mut sm, &bytes).await;
    let err = sm
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("snapshot"), "{err}");
    assert_eq!(
        records(sm.reader().page(Some(1), 10).await.unwrap()).len(),
        1
    );
    // The damaged receipt is gone; the good current snapshot stays.
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(snapshot_files(dir.path()), vec!["current.snap"]);
}

#[tokio::test]
async fn a_damaged_current_snapshot_file_stops_the_store_from_opening_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(one_op_and_a_snapshot(dir.path()).await);
    let path = dir.path().join("snapshots/current.snap");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let (db, _) = Db::open(dir.path(), "c").unwrap();
    let err = StateMachineStore::open(db, 100).err().unwrap().to_string();
    assert!(err.contains("current.snap"), "{err}");
}

#[tokio::test]
async fn an_install_cut_short_is_finished_or_discarded_at_open_never_half_done() {
    let src = tempfile::tempdir().unwrap();
    let (_sm, built) = one_op_and_a_snapshot(src.path()).await;
    let bytes = read_all(built.snapshot).await;

    // Killed before the state batch: the file is discarded, the state is the old one.
    let dst = tempfile::tempdir().unwrap();
    drop(open(dst.path(), 100));
    std::fs::write(dst.path().join("snapshots/installing.snap"), &bytes).unwrap();
    let mut other = open(dst.path(), 100);
    assert!(other.get_current_snapshot().await.unwrap().is_none());
    assert!(snapshot_files(dst.path()).is_empty());
    drop(other);

    // Killed after the state batch (the store recorded the id): the rename is finished.
    let (db, _) = Db::open(dst.path(), "c").unwrap();
    let mut batch = WriteBatch::default();
    db.put(
        &mut batch,
        Cf::Meta,
        MetaKey::Snapshot.key(),
        &built.meta.snapshot_id,
    )
    .unwrap();
    db.write(batch, true).unwrap();
    drop(db);
    std::fs::write(dst.path().join("snapshots/installing.snap"), &bytes).unwrap();
    std::fs::write(dst.path().join("snapshots/building-3.snap"), b"partial").unwrap();
    other = open(dst.path(), 100);
    let current = other.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, built.meta);
    assert_eq!(snapshot_files(dst.path()), vec!["current.snap"]);
}

#[tokio::test]
async fn a_copy_cut_short_after_earlier_installs_and_builds_is_discarded_not_fatal() {
    let src = tempfile::tempdir().unwrap();
    let (_src_sm, built) = one_op_and_a_snapshot(src.path()).await;
    let bytes = read_all(built.snapshot).await;
    // A finished install, then a snapshot built locally (current.snap is not the installed one).
    let dst = tempfile::tempdir().unwrap();
    let mut sm = open(dst.path(), 100);
    let received = receive(&mut sm, &bytes).await;
    sm.install_snapshot(&built.meta, received).await.unwrap();
    sm.apply(vec![entry(1, 2, vec![op("b", "2")], 10, 1_000)])
        .await
        .unwrap();
    let own = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop(sm);
    // Killed while copying the next snapshot to install: a partial installing.snap.
    std::fs::write(
        dst.path().join("snapshots/installing.snap"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    let mut sm = open(dst.path(), 100);
    assert_eq!(
        sm.get_current_snapshot().await.unwrap().unwrap().meta,
        own.meta
    );
    assert_eq!(snapshot_files(dst.path()), vec!["current.snap"]);
}

/// A store in `dir` with one applied operation and a snapshot of it.
async fn one_op_and_a_snapshot(dir: &std::path::Path) -> (StateMachineStore, Snapshot) {
    let mut sm = open(dir, 100);
    sm.apply(vec![entry(1, 1, vec![op("a", "1")], 10, 1_000)])
        .await
        .unwrap();
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    (sm, snapshot)
}

async fn read_all(mut file: Box<tokio::fs::File>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await.unwrap();
    bytes
}

/// What openraft does with the chunks of a snapshot from the leader.
async fn receive(sm: &mut StateMachineStore, bytes: &[u8]) -> Box<tokio::fs::File> {
    use tokio::io::AsyncWriteExt;
    let mut file = sm.begin_receiving_snapshot().await.unwrap();
    file.write_all(bytes).await.unwrap();
    file.flush().await.unwrap();
    file
}

fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// "a" at 1 s and "b" at 1.2 s with a 500 ms window, then `third` at 1.6 s, past a's window.
fn a_and_b_then_one_past_as_window(third: &str) -> Vec<Entry> {
    vec![
        entry(1, 1, vec![op("a", "1")], 1_000, 500),
        entry(1, 2, vec![op("b", "1")], 1_200, 500),
        entry(1, 3, vec![op(third, "1")], 1_600, 500),
    ]
}

/// `entries` applied to two new stores: all in one call, and one call per entry. Returns each
/// store (with its directory) and its outcomes.
async fn applied_both_ways(
    entries: impl Fn() -> Vec<Entry>,
) -> [(tempfile::TempDir, StateMachineStore, Vec<Vec<OpOutcome>>); 2] {
    let together = tempfile::tempdir().unwrap();
    let mut one_call = open(together.path(), 100);
    let all_at_once = one_call.apply(entries()).await.unwrap();
    let apart = tempfile::tempdir().unwrap();
    let mut many_calls = open(apart.path(), 100);
    let mut one_by_one = Vec::new();
    for e in entries() {
        one_by_one.extend(many_calls.apply(vec![e]).await.unwrap());
    }
    let outcomes = |r: Vec<ApplyResponse>| r.into_iter().map(|r| r.outcomes).collect();
    [
        (together, one_call, outcomes(all_at_once)),
        (apart, many_calls, outcomes(one_by_one)),
    ]
}

#[tokio::test]
async fn dedupe_outcomes_do_not_depend_on_how_entries_are_grouped_into_apply_calls() {
    let [(_a, _, all_at_once), (_b, _, one_by_one)] =
        applied_both_ways(|| a_and_b_then_one_past_as_window("a")).await;
    assert_eq!(all_at_once, one_by_one);
    assert_eq!(
        one_by_one[2],
        vec![OpOutcome::Appended { index: 3, term: 1 }],
        "a is past the window"
    );
}

/// A follower catching up on a quiet cluster applies calls that span more than a window: the
/// call that writes "a" also expires it. What stays on disk must not depend on that grouping,
/// and nothing of "a" may stay behind (its expiry key was never read again, so it stayed for
/// good).
#[tokio::test]
async fn what_a_store_keeps_does_not_depend_on_how_entries_are_grouped_into_apply_calls() {
    let [(_a, one_call, _), (_b, many_calls, _)] =
        applied_both_ways(|| a_and_b_then_one_past_as_window("c")).await;
    let kept = dedupe_rows(&one_call.db);
    assert_eq!(kept, dedupe_rows(&many_calls.db));
    let keys: Vec<_> = kept.into_iter().map(|(cf, key, _)| (cf, key)).collect();
    assert_eq!(
        keys,
        vec![
            (Cf::Dedupe, b"b".to_vec()),
            (Cf::Dedupe, b"c".to_vec()),
            (Cf::DedupeExpiry, expiry_key(1_200, "b")),
            (Cf::DedupeExpiry, expiry_key(1_600, "c")),
        ]
    );
}

/// Every row of the dedupe and dedupe expiry families, with its family.
fn dedupe_rows(db: &Db) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    let mut rows = Vec::new();
    for cf in [Cf::Dedupe, Cf::DedupeExpiry] {
        let handle = db.cf(cf).unwrap();
        for item in db.raw().iterator_cf(handle, IteratorMode::Start) {
            let (key, value) = item.unwrap();
            rows.push((cf, key.to_vec(), value.to_vec()));
        }
    }
    rows
}

/// Leader A stamps the replicated clock at 100 s; leader B's clock is 20 s behind, more than
/// the 10 s window. Whatever B commits must still be deduplicated within the window.
#[tokio::test]
async fn a_leader_whose_clock_is_behind_still_deduplicates_what_it_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), 100);
    sm.apply(vec![entry(1, 1, vec![op("x", "1")], 100_000, 10_000)])
        .await
        .unwrap();
    let first = sm
        .apply(vec![entry(2, 2, vec![op("a", "1")], 80_000, 10_000)])
        .await
        .unwrap();
    assert_eq!(
        first[0].outcomes,
        vec![OpOutcome::Appended { index: 2, term: 2 }]
    );
    // The client retries half a second later, through the same leader.
    let retry = sm
        .apply(vec![entry(2, 3, vec![op("a", "1")], 80_500, 10_000)])
        .await
        .unwrap();
    assert_eq!(
        retry[0].outcomes,
        vec![OpOutcome::Duplicate { index: 2, term: 2 }],
        "a record must not be born expired"
    );
}

/// The window is the cluster's, not the proposing node's: a leader started with a shorter
/// `--dedupe-window` does not forget ids that the cluster's window still covers.
#[tokio::test]
async fn a_leader_started_with_a_shorter_window_does_not_shorten_the_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), 100);
    sm.apply(vec![entry(1, 1, vec![op("a", "1")], 1_000, 10_000)])
        .await
        .unwrap();
    let out = sm
        .apply(vec![entry(2, 2, vec![op("a", "1")], 1_500, 100)])
        .await
        .unwrap();
    assert_eq!(
        out[0].outcomes,
        vec![OpOutcome::Duplicate { index: 1, term: 1 }]
    );
}

/// openraft 0.9 hands a snapshot received from the leader to the state machine worker and, in
/// the same step, asks the log to purge up to it. If the node is killed before the install
/// renames the file, the next start loads the older `current.snap`: the log must not have been
/// purged past it (openraft's `purge_upto <= snapshot` check panics at start, and a leader
/// could not send the entries between that snapshot and the purge point to anyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_ahead_of_an_install_never_passes_the_snapshot_a_restart_loads() {
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    let dir = tempfile::tempdir().unwrap();
    let at = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
    {
        let (db, _) = Db::open(dir.path(), "c").unwrap();
        let mut sm = StateMachineStore::open(db.clone(), 100).unwrap();
        let mut log = crate::store::log::LogStore::new(db.clone());
        let entries: Vec<Entry> = (1..=15)
            .map(|i| entry(1, i, vec![op(&format!("o{i}"), "x")], i * 10, 1_000))
            .collect();
        let mut batch = WriteBatch::default();
        for e in &entries {
            db.put(
                &mut batch,
                Cf::Log,
                &crate::store::index_key(e.log_id.index),
                e,
            )
            .unwrap();
        }
        db.write(batch, true).unwrap();
        sm.apply(entries[..10].to_vec()).await.unwrap();
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(built.meta.last_log_id, Some(at(10)));
        sm.apply(entries[10..].to_vec()).await.unwrap();
        // The leader's snapshot at 20 arrives: openraft purges to 20 before the install ran.
        log.purge(at(20)).await.unwrap();
        // kill -9 here.
    }
    let (db, _) = Db::open(dir.path(), "c").unwrap();
    let mut sm = StateMachineStore::open(db.clone(), 100).unwrap();
    let mut log = crate::store::log::LogStore::new(db);
    let snapshot = sm.get_current_snapshot().await.unwrap().unwrap();
    let purged = log.get_log_state().await.unwrap().last_purged_log_id;
    assert!(
        purged <= snapshot.meta.last_log_id,
        "the log is purged to {purged:?}, past the snapshot a restart loads ({:?})",
        snapshot.meta.last_log_id
    );
    // Entries after the snapshot are still there for followers (and for openraft at start).
    let held = log.try_get_log_entries(11..16).await.unwrap();
    assert_eq!(held.len(), 5);
}

/// At a 1 % share the next build then waits 990 s.
fn last_build_took_ten_seconds(pace: &pace::SnapshotPace) {
    let ten_seconds_ago = tokio::time::Instant::now()
        .checked_sub(std::time::Duration::from_secs(10))
        .unwrap();
    pace.finished(ten_seconds_ago);
}

#[tokio::test]
async fn a_paced_build_waits_its_turn_while_applies_go_on_and_holds_what_they_applied() {
    let dir = tempfile::tempdir().unwrap();
    let pace = Arc::new(pace::SnapshotPace::new(1, None));
    let mut sm = open(dir.path(), 100).paced(pace.clone());
    sm.apply(vec![entry(1, 1, vec![op("a", "1")], 10, 1_000)])
        .await
        .unwrap();
    last_build_took_ten_seconds(&pace);
    let mut builder = sm.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    sm.apply(vec![entry(1, 2, vec![op("b", "2")], 20, 1_000)])
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert!(!build.is_finished(), "the build did not wait for its turn");
    pace.hurry();
    let snapshot = build.await.unwrap().unwrap();
    assert_eq!(
        snapshot.meta.last_log_id.map(|l| l.index),
        Some(2),
        "the view is taken after the wait"
    );
}

#[tokio::test]
async fn a_build_waiting_for_its_turn_gives_up_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let pace = Arc::new(pace::SnapshotPace::new(1, None));
    let mut sm = open(dir.path(), 100).paced(pace.clone());
    last_build_took_ten_seconds(&pace);
    let mut builder = sm.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    tokio::task::yield_now().await;
    drop(sm);
    assert!(build.await.unwrap().is_err());
    assert!(
        snapshot_files(dir.path()).is_empty(),
        "nothing was built: {:?}",
        snapshot_files(dir.path())
    );
    // The builder let go of the store: it opens again in the same process.
    drop(open(dir.path(), 100));
}

/// RocksDB's count of `metric` on this thread while `f` runs.
fn counted<T>(metric: PerfMetric, f: impl FnOnce() -> T) -> (T, u64) {
    use rocksdb::perf::{PerfContext, PerfStatsLevel, set_perf_stats};
    set_perf_stats(PerfStatsLevel::EnableCount);
    let mut perf = PerfContext::default();
    perf.reset();
    let out = f();
    let count = perf.metric(metric);
    set_perf_stats(PerfStatsLevel::Disable);
    (out, count)
}

/// A store holding 2,000 dedupe records committed at 1 s, with a 500 ms window.
fn two_thousand_ids_at_one_second(dir: &std::path::Path) -> (Db, AppliedState) {
    let (db, _) = Db::open(dir, "c").unwrap();
    let early = (0..2_000).map(|n| op(&format!("early-{n}"), "x")).collect();
    let state = apply_entries(
        &db,
        AppliedState::default(),
        vec![entry(1, 1, early, 1_000, 500)],
        10_000,
    )
    .unwrap()
    .0;
    (db, state)
}

/// Expiry must not slow down with history. The records earlier applies expired stay in RocksDB
/// as tombstones until a compaction drops them; an apply must look only at what expires at its
/// own horizon and never step over those again (RocksDB counts the deleted entries a read steps
/// over). Stepping over them made every apply cost as much as a whole window of expired ids:
/// about 500 ops/s instead of 12,000 under load once the window was reached.
#[test]
fn expiring_dedupe_records_never_steps_over_the_ones_expired_before() {
    let dir = tempfile::tempdir().unwrap();
    let (db, state) = two_thousand_ids_at_one_second(dir.path());
    let apply = |state, e| apply_entries(&db, state, vec![e], 10_000).unwrap().0;
    // Past the window of all 2,000: they expire here.
    let state = apply(state, entry(1, 2, vec![op("a", "x")], 1_600, 500));
    assert_eq!(
        db.get::<DedupeRecord>(Cf::Dedupe, b"early-0").unwrap(),
        None,
        "expired"
    );

    let (state, stepped_over) = counted(PerfMetric::InternalDeleteSkippedCount, || {
        apply(state, entry(1, 3, vec![op("b", "x")], 1_700, 500))
    });
    assert!(
        stepped_over < 10,
        "the apply stepped over {stepped_over} deleted entries"
    );
    assert_eq!(state.journal.next_index, 2_003);
}

/// Expiring an id costs no read of its record: the expiry index names it, and the record under
/// it is the one that key was written for. Reading each one made expiry a second point lookup
/// per operation once the window was full.
#[test]
fn expiring_dedupe_records_reads_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let (db, state) = two_thousand_ids_at_one_second(dir.path());
    // Past the window of all 2,000: they expire here, and "a" is looked up.
    let (state, lookups) = counted(PerfMetric::GetFromMemtableCount, || {
        apply_entries(
            &db,
            state,
            vec![entry(1, 2, vec![op("a", "x")], 1_600, 500)],
            10_000,
        )
        .unwrap()
        .0
    });
    // The lookup of "a" shows the counter counts; one per expiring id would be 2,001.
    assert!(
        (1..10).contains(&lookups),
        "the apply made {lookups} point lookups"
    );
    assert_eq!(
        db.get::<DedupeRecord>(Cf::Dedupe, b"early-0").unwrap(),
        None,
        "expired"
    );
    assert_eq!(state.journal.next_index, 2_002);
}

/// Stores written by earlier versions can hold records below the horizon (an apply that both
/// wrote and expired an id left it behind). A lookup must forget them as `apply` does, not
/// answer that an operation past its window is still known.
#[tokio::test]
async fn a_lookup_forgets_an_id_past_its_window_even_if_its_record_was_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = open(dir.path(), 100);
    sm.apply(vec![entry(1, 1, vec![op("a", "1")], 1_000, 500)])
        .await
        .unwrap();
    let left_behind = sm
        .db
        .get::<DedupeRecord>(Cf::Dedupe, b"a")
        .unwrap()
        .unwrap();
    sm.apply(vec![entry(1, 2, vec![op("b", "1")], 1_600, 500)])
        .await
        .unwrap();
    let mut batch = WriteBatch::default();
    sm.db
        .put(&mut batch, Cf::Dedupe, b"a", &left_behind)
        .unwrap();
    sm.db.write(batch, false).unwrap();

    let reader = sm.reader();
    assert_eq!(reader.lookup("a".into()).await.unwrap(), None);
    assert_eq!(
        reader.lookup("b".into()).await.unwrap().map(|r| r.index),
        Some(2)
    );
}
