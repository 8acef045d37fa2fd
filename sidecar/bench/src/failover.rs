//! The `failover` subcommand: kill -9 the leader while a background client writes; time from
//! the kill to the first committed write through a surviving node (same operation id retried),
//! then restart the killed node and wait for it to catch up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_api::daemon::Operation;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::Failure;
use crate::args::{FailoverArgs, System};
use crate::load::{bench_op, micros, ms, payload, run_id};
use crate::report::report;
use crate::sut::{Sut, Writer, Written};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Trial {
    trial: u32,
    killed: String,
    failover_ms: f64,
    answered_by: String,
    log_index: u64,
    term: u64,
    new_leader: String,
    attempts: u64,
    errors: BTreeMap<String, u64>,
    catch_up_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FailoverReport {
    pub(crate) system: System,
    pub(crate) bench: &'static str,
    pub(crate) nodes: usize,
    pub(crate) trials: Vec<Trial>,
    pub(crate) median_ms: f64,
    pub(crate) min_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) background_ok: u64,
    pub(crate) background_errors: u64,
}

/// What the probe saw: who answered, when, and the errors before that.
struct Probe {
    elapsed: Duration,
    answered_by: usize,
    result: Written,
    attempts: u64,
    errors: BTreeMap<String, u64>,
}

/// Submit `op` (always the same id) to each survivor in its own retry loop, pausing `pause`
/// after every error, until one of them commits it or `deadline` passes.
async fn probe(
    survivors: Vec<(usize, Writer)>,
    op: Operation,
    pause: Duration,
    attempt_timeout: Duration,
    killed_at: Instant,
    deadline: Instant,
) -> Result<Probe, String> {
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let attempts = Arc::new(AtomicU64::new(0));
    let op = Arc::new(op);
    let mut loops = JoinSet::new();
    for (node, writer) in survivors {
        let (errors, attempts, op) = (Arc::clone(&errors), Arc::clone(&attempts), Arc::clone(&op));
        loops.spawn(async move {
            loop {
                attempts.fetch_add(1, Ordering::Relaxed);
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                let label = match tokio::time::timeout(left.min(attempt_timeout), writer.write(&op))
                    .await
                {
                    Ok(Ok(result)) => return Some((node, result, killed_at.elapsed())),
                    Ok(Err(label)) => label,
                    Err(_) => "PROBE_TIMEOUT".to_string(),
                };
                if let Ok(mut e) = errors.lock() {
                    *e.entry(label).or_default() += 1;
                }
                if Instant::now() + pause >= deadline {
                    return None;
                }
                tokio::time::sleep(pause).await;
            }
        });
    }
    let mut won = None;
    while let Some(joined) = loops.join_next().await {
        if let Ok(Some(w)) = joined {
            won = Some(w);
            loops.abort_all();
            break;
        }
    }
    let errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
    match won {
        Some((answered_by, result, elapsed)) => Ok(Probe {
            elapsed,
            answered_by,
            result,
            attempts: attempts.load(Ordering::Relaxed),
            errors,
        }),
        None => Err(format!(
            "no committed write before the deadline; errors: {errors:?}"
        )),
    }
}

/// A client that submits unique operations round-robin over every node until stopped.
fn background_writer(
    writers: Vec<Writer>,
    payload: Arc<Value>,
    prefix: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            for w in &writers {
                seq += 1;
                match w
                    .write(&bench_op(format!("{prefix}-{seq}"), &payload))
                    .await
                {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    })
}

pub(crate) async fn failover(args: FailoverArgs) -> Result<(), Failure> {
    if args.cluster.nodes < 3 {
        return Err(Failure::Config(
            "failover needs at least 3 nodes (a majority must survive)".into(),
        ));
    }
    let sut = Sut::start(&args.cluster).await?;
    let report_ = failover_on(&args, sut).await?;
    report(&report_, args.cluster.json.as_deref())
}

/// Run the failover trials on `sut` (stopped at the end) with a background writer.
pub(crate) async fn failover_on(
    args: &FailoverArgs,
    mut sut: Sut,
) -> Result<FailoverReport, Failure> {
    let run = run_id();
    let payload = Arc::new(payload(args.payload_bytes));
    let stop = Arc::new(AtomicBool::new(false));
    let (bg_ok, bg_err) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let bg = background_writer(
        (0..sut.len()).map(|i| sut.writer(i)).collect(),
        Arc::clone(&payload),
        format!("bench-{run}-bg"),
        Arc::clone(&stop),
        Arc::clone(&bg_ok),
        Arc::clone(&bg_err),
    );
    let outcome = failover_trials(args, &mut sut, &run, &payload).await;
    stop.store(true, Ordering::Relaxed);
    if tokio::time::timeout(args.cluster.request_timeout * 2, bg)
        .await
        .is_err()
    {
        eprintln!("bench: background writer did not stop in time");
    }
    let sut_system = sut.system;
    sut.stop().await;
    let trials = outcome?;
    let mut times: Vec<f64> = trials.iter().map(|t| t.failover_ms).collect();
    times.sort_by(f64::total_cmp);
    let median = match times.len() {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    };
    let min = times.first().copied().unwrap_or(0.0);
    let max = times.last().copied().unwrap_or(0.0);
    println!(
        "{} failover median_ms={median:.1} max_ms={max:.1} min_ms={min:.1}",
        sut_system.label()
    );
    Ok(FailoverReport {
        system: sut_system,
        bench: "failover",
        nodes: usize::from(args.cluster.nodes),
        trials,
        median_ms: median,
        min_ms: min,
        max_ms: max,
        background_ok: bg_ok.load(Ordering::Relaxed),
        background_errors: bg_err.load(Ordering::Relaxed),
    })
}

async fn failover_trials(
    args: &FailoverArgs,
    sut: &mut Sut,
    run: &str,
    payload: &Value,
) -> Result<Vec<Trial>, Failure> {
    let mut trials = Vec::new();
    for trial in 1..=args.trials {
        tokio::time::sleep(args.settle).await;
        let leader = sut.leader().await?;
        let survivors: Vec<(usize, Writer)> = (0..sut.len())
            .filter(|&i| i != leader)
            .map(|i| (i, sut.writer(i)))
            .collect();
        let op = bench_op(format!("bench-{run}-failover-{trial}"), payload);
        let killed_at = Instant::now();
        sut.sigkill(leader)?;
        let probing = tokio::spawn(probe(
            survivors,
            op,
            args.retry_interval,
            args.probe_timeout,
            killed_at,
            killed_at + args.failover_timeout,
        ));
        // Reap the killed process while the probe runs.
        sut.reap_killed(leader).await?;
        let probed = probing
            .await
            .map_err(|e| Failure::runtime(format!("probe task failed: {e}")))?
            .map_err(|e| Failure::runtime(format!("trial {trial}: {e}\n{}", sut.log_tails())))?;
        let new_leader = sut.leader().await?;
        let restarted_at = Instant::now();
        sut.restart(leader)?;
        sut.wait_caught_up(leader, args.catch_up_timeout).await?;
        let t = Trial {
            trial,
            killed: sut.name(leader).to_string(),
            failover_ms: ms(micros(probed.elapsed)),
            answered_by: sut.name(probed.answered_by).to_string(),
            log_index: probed.result.log_index,
            term: probed.result.term,
            new_leader: sut.name(new_leader).to_string(),
            attempts: probed.attempts,
            errors: probed.errors,
            catch_up_ms: ms(micros(restarted_at.elapsed())),
        };
        println!(
            "{} trial={} killed={} failover_ms={:.1} answered_by={} new_leader={} term={} attempts={} errors={:?} catch_up_ms={:.0}",
            sut.system.label(),
            t.trial,
            t.killed,
            t.failover_ms,
            t.answered_by,
            t.new_leader,
            t.term,
            t.attempts,
            t.errors,
            t.catch_up_ms
        );
        trials.push(t);
    }
    Ok(trials)
}
