//! When this node's log reached each index, sampled by the monitor every tick: what lets
//! "caught up" mean "has what the leader had a moment ago" instead of "within N entries". At
//! thousands of writes a second a healthy follower is hundreds of entries behind (the entries in
//! flight), so an entry count alone reads it as lagging and membership changes, rolling updates
//! and the operator's health flap under load.
//!
//! Pure and clock-free: callers pass the instants. The monitor records, the leader asks
//! [`LogTimeline::behind`] for each follower's matched index.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Samples kept: a minute of history at the monitor's 100 ms tick (samples are taken only when
/// the index moved, so an idle log keeps older ones).
const CAPACITY: usize = 600;

#[derive(Debug, Default)]
pub struct LogTimeline {
    /// (last log index, first instant it was seen), both strictly increasing.
    samples: VecDeque<(u64, Instant)>,
}

impl LogTimeline {
    /// The log's last index is `index` at `at`; kept only when it moved forward.
    pub fn record(&mut self, index: u64, at: Instant) {
        if self.samples.back().is_some_and(|(last, _)| *last >= index) {
            return;
        }
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back((index, at));
    }

    /// How long this log has held entries past `matched` (a follower's matched index): zero when
    /// the follower has everything sampled, `None` when `matched` predates the history kept (a
    /// follower that far behind is judged by its entry count alone).
    pub fn behind(&self, matched: u64, now: Instant) -> Option<Duration> {
        let (oldest, _) = *self.samples.front()?;
        if matched < oldest {
            return None;
        }
        // The first sample past `matched`: the log held an entry the follower lacks since then
        // (or a little earlier, by at most one sampling interval).
        Some(
            self.samples
                .iter()
                .find(|(index, _)| *index > matched)
                .map_or(Duration::ZERO, |(_, since)| {
                    now.saturating_duration_since(*since)
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_follower_with_every_sampled_entry_is_not_behind() {
        let t0 = Instant::now();
        let mut t = LogTimeline::default();
        t.record(10, at(t0, 0));
        t.record(20, at(t0, 100));
        assert_eq!(t.behind(20, at(t0, 5000)), Some(Duration::ZERO));
        assert_eq!(t.behind(25, at(t0, 5000)), Some(Duration::ZERO));
    }

    #[test]
    fn hundreds_of_entries_in_flight_are_a_few_milliseconds_behind() {
        // 8,000 entries a second, sampled every 100 ms; the follower misses the last 240.
        let t0 = Instant::now();
        let mut t = LogTimeline::default();
        for tick in 0..50u64 {
            t.record(tick * 800, at(t0, tick * 100));
        }
        let last = 49 * 800;
        assert_eq!(
            t.behind(last - 240, at(t0, 4900)),
            Some(Duration::ZERO),
            "the entries past it arrived after the last sample"
        );
        assert_eq!(
            t.behind(last - 1000, at(t0, 4900)),
            Some(Duration::from_millis(100))
        );
    }

    #[test]
    fn a_follower_stuck_since_a_write_long_ago_is_behind_by_that_long() {
        let t0 = Instant::now();
        let mut t = LogTimeline::default();
        t.record(5, at(t0, 0));
        t.record(6, at(t0, 1000));
        // Idle since: no newer sample, and still 6 s behind.
        assert_eq!(t.behind(5, at(t0, 7000)), Some(Duration::from_secs(6)));
    }

    #[test]
    fn a_follower_behind_all_the_history_kept_is_unknown() {
        let t0 = Instant::now();
        let mut t = LogTimeline::default();
        assert_eq!(t.behind(0, t0), None, "nothing sampled yet");
        for i in 0..(CAPACITY as u64 + 10) {
            t.record(100 + i, at(t0, i));
        }
        assert_eq!(t.behind(100, at(t0, 10_000)), None);
        assert!(t.behind(200, at(t0, 10_000)).is_some());
    }

    #[test]
    fn an_index_that_did_not_move_is_not_sampled_again() {
        let t0 = Instant::now();
        let mut t = LogTimeline::default();
        t.record(7, at(t0, 0));
        t.record(7, at(t0, 500));
        t.record(8, at(t0, 900));
        assert_eq!(t.behind(7, at(t0, 1000)), Some(Duration::from_millis(100)));
    }
}
