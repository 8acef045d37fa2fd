//! The load: operations and payloads, the client loop that submits them, the HDR histogram
//! of latencies and the per-client tallies, and the `throughput` subcommand (one level of N
//! concurrent clients after another).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use raft_api::daemon::Operation;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::Failure;
use crate::args::{Mode, System, ThroughputArgs};
use crate::report::report;
use crate::stalls::{STALL, Stalls, Window, stalls};
use crate::sut::{NodeRss, Sut, Writer};

/// Highest latency the histograms track (longer ones are clamped to it), in microseconds.
const MAX_LATENCY_US: u64 = 120_000_000;

pub(crate) fn bench_op(id: String, payload: &Value) -> Operation {
    Operation {
        id,
        op_type: "bench".into(),
        payload: Some(payload.clone()),
        daemon_id: None,
        timestamp: None,
    }
}

/// A JSON string payload of exactly `bytes` bytes.
pub(crate) fn payload(bytes: usize) -> Value {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let s: String = (0..bytes)
        .map(|i| char::from(ALPHABET[i % ALPHABET.len()]))
        .collect();
    Value::String(s)
}

pub(crate) fn new_histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| Failure::runtime(format!("cannot create histogram: {e}")))
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn ms(us: u64) -> f64 {
    // Two decimals are plenty for a noisy shared machine.
    (us as f64 / 10.0).round() / 100.0
}

pub(crate) fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// What one client task measured.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    warmup_ok: u64,
    errors: BTreeMap<String, u64>,
    warmup_errors: u64,
    /// When each measured successful request completed ([`stalls`]).
    done: Vec<Instant>,
}

impl Tally {
    fn new() -> Result<Self, Failure> {
        Ok(Tally {
            hist: new_histogram()?,
            ok: 0,
            warmup_ok: 0,
            errors: BTreeMap::new(),
            warmup_errors: 0,
            done: Vec::new(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LevelResult {
    pub(crate) clients: u32,
    pub(crate) ops: u64,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
    pub(crate) errors: u64,
    pub(crate) error_codes: BTreeMap<String, u64>,
    pub(crate) warmup_ops: u64,
    pub(crate) warmup_errors: u64,
    pub(crate) rss: Vec<NodeRss>,
    /// Spans of at least [`STALL`] in which no write completed.
    pub(crate) stalls: Stalls,
    /// Latencies of the measured operations, in microseconds (merged over rounds by `compare`).
    #[serde(skip)]
    pub(crate) hist: Histogram<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ThroughputReport {
    system: System,
    bench: &'static str,
    nodes: usize,
    mode: Mode,
    payload_bytes: usize,
    /// Operations per request (latencies are per request).
    batch: u32,
    duration_ms: u64,
    warmup_ms: u64,
    results: Vec<LevelResult>,
}

/// Submit unique operations (`batch` per request) until `end`; requests started at or after
/// `measure_from` count. The histogram has one latency per request.
async fn client_loop(
    writer: Writer,
    prefix: String,
    payload: Arc<Value>,
    measure_from: Instant,
    end: Instant,
    error_pause: Duration,
    batch: u32,
) -> Result<Tally, Failure> {
    if batch > 1 {
        return batch_loop(
            writer,
            prefix,
            payload,
            (measure_from, end),
            error_pause,
            batch,
        )
        .await;
    }
    let mut t = Tally::new()?;
    let mut seq: u64 = 0;
    loop {
        let start = Instant::now();
        if start >= end {
            return Ok(t);
        }
        seq += 1;
        let op = bench_op(format!("{prefix}-{seq}"), &payload);
        let outcome = writer.write(&op).await;
        let measured = start >= measure_from;
        match outcome {
            Ok(_) if measured => {
                let now = Instant::now();
                t.hist.saturating_record(micros(now - start).max(1));
                t.done.push(now);
                t.ok += 1;
            }
            Ok(_) => t.warmup_ok += 1,
            Err(label) => {
                if measured {
                    *t.errors.entry(label).or_default() += 1;
                } else {
                    t.warmup_errors += 1;
                }
                tokio::time::sleep(error_pause).await;
            }
        }
    }
}

/// [`client_loop`] with `batch` operations per request.
async fn batch_loop(
    writer: Writer,
    prefix: String,
    payload: Arc<Value>,
    (measure_from, end): (Instant, Instant),
    error_pause: Duration,
    batch: u32,
) -> Result<Tally, Failure> {
    let mut t = Tally::new()?;
    let mut seq: u64 = 0;
    loop {
        let start = Instant::now();
        if start >= end {
            return Ok(t);
        }
        let ops: Vec<Operation> = (0..batch)
            .map(|_| {
                seq += 1;
                bench_op(format!("{prefix}-{seq}"), &payload)
            })
            .collect();
        let (written, failed) = writer.write_batch(&ops).await;
        if start >= measure_from {
            let now = Instant::now();
            t.hist.saturating_record(micros(now - start).max(1));
            if written > 0 {
                t.done.push(now);
            }
            t.ok += written;
            for label in &failed {
                *t.errors.entry(label.clone()).or_default() += 1;
            }
        } else {
            t.warmup_ok += written;
            t.warmup_errors += failed.len() as u64;
        }
        if !failed.is_empty() {
            tokio::time::sleep(error_pause).await;
        }
    }
}

pub(crate) async fn throughput(args: ThroughputArgs) -> Result<(), Failure> {
    if args.duration.is_zero() {
        return Err(Failure::Config("--duration must be above zero".into()));
    }
    let mut sut = Sut::start(&args.cluster).await?;
    let sut_system = sut.system;
    let outcome = throughput_levels(&args, &mut sut).await;
    sut.stop().await;
    let results = outcome?;
    report(
        &ThroughputReport {
            system: sut_system,
            bench: "throughput",
            nodes: usize::from(args.cluster.nodes),
            mode: args.mode,
            payload_bytes: args.payload_bytes,
            batch: args.batch,
            duration_ms: u64::try_from(args.duration.as_millis()).unwrap_or(u64::MAX),
            warmup_ms: u64::try_from(args.warmup.as_millis()).unwrap_or(u64::MAX),
            results,
        },
        args.cluster.json.as_deref(),
    )
}

async fn throughput_levels(
    args: &ThroughputArgs,
    sut: &mut Sut,
) -> Result<Vec<LevelResult>, Failure> {
    let load = Load {
        mode: args.mode,
        warmup: args.warmup,
        duration: args.duration,
        payload_bytes: args.payload_bytes,
        error_pause: args.error_pause,
        batch: args.batch,
    };
    let mut results = Vec::new();
    for &clients in &args.clients {
        let level = measure_level(sut, clients, &load).await?;
        println!(
            "clients={} batch={} ops/s={:.1} p50_ms={:.2} p99_ms={:.2} p99.9_ms={:.2} errors={} stalls={} stalled_ms={:.0} longest_stall_ms={:.1}",
            level.clients,
            args.batch,
            level.ops_per_sec,
            level.p50_ms,
            level.p99_ms,
            level.p999_ms,
            level.errors,
            level.stalls.count,
            level.stalls.total_ms,
            level.stalls.longest_ms
        );
        results.push(level);
    }
    Ok(results)
}

/// How one throughput level is driven.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) mode: Mode,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) payload_bytes: usize,
    pub(crate) error_pause: Duration,
    /// Operations per request.
    pub(crate) batch: u32,
}

/// `clients` concurrent clients for `load.warmup + load.duration`; the measured part counts.
pub(crate) async fn measure_level(
    sut: &mut Sut,
    clients: u32,
    load: &Load,
) -> Result<LevelResult, Failure> {
    let payload = Arc::new(payload(load.payload_bytes));
    let run = run_id();
    let leader = sut.leader().await?;
    let mut tasks = JoinSet::new();
    let measure_from = Instant::now() + load.warmup;
    let window = Window {
        from: measure_from,
        to: measure_from + load.duration,
        wall: SystemTime::now() + load.warmup,
    };
    let end = window.to;
    for c in 0..clients {
        let node = match load.mode {
            Mode::Leader => leader,
            Mode::Spread => usize::try_from(c).unwrap_or(0) % sut.len(),
        };
        tasks.spawn(client_loop(
            sut.writer(node),
            format!("bench-{run}-{clients}-{c}"),
            Arc::clone(&payload),
            measure_from,
            end,
            load.error_pause,
            load.batch,
        ));
    }
    let mut hist = new_histogram()?;
    let (mut ok, mut warmup_ok, mut warmup_errors) = (0, 0, 0);
    let mut error_codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let mut t = joined.map_err(|e| Failure::runtime(format!("client task failed: {e}")))??;
        done.append(&mut t.done);
        hist.add(&t.hist)
            .map_err(|e| Failure::runtime(format!("cannot merge histograms: {e}")))?;
        ok += t.ok;
        warmup_ok += t.warmup_ok;
        warmup_errors += t.warmup_errors;
        for (k, v) in t.errors {
            *error_codes.entry(k).or_default() += v;
        }
    }
    let errors = error_codes.values().sum();
    if errors > 0 {
        eprintln!(
            "bench: {} clients={clients} errors by code: {error_codes:?}",
            sut.system.label()
        );
    }
    Ok(LevelResult {
        clients,
        ops: ok,
        ops_per_sec: (ok as f64 / load.duration.as_secs_f64() * 10.0).round() / 10.0,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        mean_ms: (hist.mean() / 10.0).round() / 100.0,
        errors,
        error_codes,
        warmup_ops: warmup_ok,
        warmup_errors,
        rss: sut.rss(),
        stalls: stalls(done, window, STALL),
        hist,
    })
}
