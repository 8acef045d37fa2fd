//! Snapshot pacing: how much of a member's time snapshot builds may take.
//!
//! A snapshot image holds the whole state machine (the journal window and every live dedupe
//! record), so a build costs in proportion to the state, not to the entries since the last one,
//! while openraft asks for one every `--snapshot-interval` entries whatever the state's size.
//! Each build therefore waits, before it starts, until the previous one's end plus its duration
//! times `(100 − share) / share`: builds take at most `--snapshot-build-share` percent of the
//! time, and the log grows in between instead (each snapshot, once built, lets openraft purge it
//! to `--log-compaction-threshold` entries behind). An explicit request
//! (`POST /admin/v1/snapshot`) [`hurries`](SnapshotPace::hurry) the next build past its wait.
//!
//! Sits between openraft's build request and [`super::snapshots::SnapshotFiles::build`]: the
//! builder task waits here, off the state-machine worker, so applies go on meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::watch;
use tokio::time::Instant;

/// The most a build may take of a member's time when no flag says otherwise, in percent.
pub const DEFAULT_BUILD_SHARE: u8 = 10;

pub struct SnapshotPace {
    /// Percent of the time builds may take (1..=100; 100 is unpaced).
    share: u8,
    last: Mutex<Option<Build>>,
    /// Set by [`SnapshotPace::hurry`], consumed by the next build.
    hurried: AtomicBool,
    closed: AtomicBool,
    /// Bumped on every hurry and on close, to wake a waiting build.
    wake: watch::Sender<u64>,
    /// Build durations, when the node exports metrics.
    durations: Option<Histogram>,
}

#[derive(Clone, Copy)]
struct Build {
    finished: Instant,
    took: Duration,
}

/// What a build's wait for its turn ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    Build,
    /// The state machine was dropped (Raft stopped): do not build.
    Closed,
}

impl SnapshotPace {
    /// Builds take at most `share` percent of the time (clamped to 1..=100).
    pub fn new(share: u8, durations: Option<Histogram>) -> Self {
        Self {
            share: share.clamp(1, 100),
            last: Mutex::new(None),
            hurried: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            wake: watch::channel(0).0,
            durations,
        }
    }

    /// No wait between builds (tests and tools that build on purpose).
    pub fn unpaced() -> Self {
        Self::new(100, None)
    }

    /// When the next build may start, if it has to wait at all.
    fn next_start(&self) -> Option<Instant> {
        let last = (*self.last.lock())?;
        let rest = f64::from(100 - self.share) / f64::from(self.share);
        Some(last.finished + last.took.mul_f64(rest))
    }

    /// Wait for this build's turn: until [`Self::next_start`], a hurry or close.
    pub async fn wait_turn(&self) -> Turn {
        let mut wake = self.wake.subscribe();
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Turn::Closed;
            }
            if self.hurried.swap(false, Ordering::AcqRel) {
                return Turn::Build;
            }
            let Some(at) = self.next_start().filter(|at| *at > Instant::now()) else {
                return Turn::Build;
            };
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                changed = wake.changed() => {
                    if changed.is_err() {
                        return Turn::Closed;
                    }
                }
            }
        }
    }

    /// Record a finished build that started at `started`.
    pub fn finished(&self, started: Instant) {
        let finished = Instant::now();
        let took = finished - started;
        if let Some(h) = &self.durations {
            h.observe(took.as_secs_f64());
        }
        *self.last.lock() = Some(Build { finished, took });
    }

    /// Let the next build (or the one waiting now) start without waiting.
    pub fn hurry(&self) {
        self.hurried.store(true, Ordering::Release);
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The state machine is gone: a waiting build gives up (and lets go of the store).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Record a build that took `took` (advancing the paused clock by it); its end.
    async fn build_taking(pace: &SnapshotPace, took: Duration) -> Instant {
        let started = Instant::now();
        tokio::time::advance(took).await;
        pace.finished(started);
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn a_build_waits_nine_times_the_last_one_at_a_ten_percent_share() {
        let pace = SnapshotPace::new(10, None);
        assert_eq!(
            pace.wait_turn().await,
            Turn::Build,
            "the first build never waits"
        );
        let ended = build_taking(&pace, Duration::from_secs(2)).await;
        assert_eq!(pace.wait_turn().await, Turn::Build);
        assert_eq!(ended.elapsed(), Duration::from_secs(18));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unpaced_store_builds_back_to_back() {
        let pace = SnapshotPace::unpaced();
        let ended = build_taking(&pace, Duration::from_secs(5)).await;
        assert_eq!(pace.wait_turn().await, Turn::Build);
        assert_eq!(ended.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hurry_starts_the_waiting_build_at_once_and_only_that_one() {
        let pace = Arc::new(SnapshotPace::new(10, None));
        build_taking(&pace, Duration::from_secs(1)).await;
        let waiting = tokio::spawn({
            let pace = pace.clone();
            async move {
                let turn = pace.wait_turn().await;
                (turn, Instant::now())
            }
        });
        tokio::time::advance(Duration::from_secs(2)).await;
        let asked = Instant::now();
        pace.hurry();
        let (turn, at) = waiting.await.unwrap();
        assert_eq!(turn, Turn::Build);
        assert_eq!(at, asked, "the waiting build started when hurried");
        // The hurry was consumed: the next build waits again.
        let ended = build_taking(&pace, Duration::from_secs(1)).await;
        pace.wait_turn().await;
        assert_eq!(ended.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hurry_before_the_build_is_asked_for_is_kept_for_it() {
        let pace = SnapshotPace::new(10, None);
        build_taking(&pace, Duration::from_secs(3)).await;
        pace.hurry();
        let asked = Instant::now();
        assert_eq!(pace.wait_turn().await, Turn::Build);
        assert_eq!(asked.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_releases_a_waiting_build_without_building() {
        let pace = Arc::new(SnapshotPace::new(10, None));
        build_taking(&pace, Duration::from_secs(60)).await;
        let waiting = tokio::spawn({
            let pace = pace.clone();
            async move { pace.wait_turn().await }
        });
        tokio::task::yield_now().await;
        pace.close();
        assert_eq!(waiting.await.unwrap(), Turn::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn build_durations_reach_the_histogram() {
        let histogram = Histogram::new([0.5, 1.0, 2.0].into_iter());
        let pace = SnapshotPace::new(10, Some(histogram.clone()));
        build_taking(&pace, Duration::from_millis(1500)).await;
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("build_seconds", "", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("build_seconds_sum 1.5"), "{text}");
        assert!(text.contains("build_seconds_count 1"), "{text}");
    }
}
