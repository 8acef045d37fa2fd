//! The leader's reading of the replicated dedupe clock.
//!
//! Dedupe records expire against a clock kept in the replicated journal state (see
//! `journal::advance_clock`), never against a node's wall clock. A leader advances it by what
//! its own monotonic clock measures since it last saw the applied value, so the replicated
//! clock never runs ahead of real time: a record is remembered for at least the window, in
//! real time, whatever the wall clocks of the nodes say or do (offsets, steps, NTP jumps).
//! Time between one leader's last proposal and the next leader's first one is not counted,
//! which only keeps records longer.

use std::time::Instant;

use super::health::millis;

/// One leader's estimate of the replicated clock; pure, so its rules are unit-tested.
#[derive(Debug, Clone, Copy)]
pub struct LeaderClock {
    /// The applied clock this estimate starts from …
    base_ms: u64,
    /// … read at this instant …
    at: Instant,
    /// … in this term (a new term starts from the applied clock again).
    term: u64,
}

impl LeaderClock {
    pub fn new(now: Instant) -> Self {
        Self {
            base_ms: 0,
            at: now,
            term: 0,
        }
    }

    /// The clock reading for a proposal in `term`, given the replicated clock this node has
    /// applied (`applied_ms`): the applied value plus the time measured since it was first
    /// seen in this term, and never less than the applied value.
    pub fn read(&mut self, term: u64, applied_ms: u64, now: Instant) -> u64 {
        let estimate = self
            .base_ms
            .saturating_add(millis(now.saturating_duration_since(self.at)));
        if term != self.term || applied_ms >= estimate {
            // A new term, or entries of an earlier leader applied since: start over from
            // what is replicated, so an old estimate never carries into another tenure.
            *self = Self {
                base_ms: applied_ms,
                at: now,
                term,
            };
            return applied_ms;
        }
        estimate
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_leader_advances_the_clock_by_the_time_it_measures() {
        let t0 = Instant::now();
        let mut clock = LeaderClock::new(t0);
        assert_eq!(clock.read(3, 50_000, t0), 50_000);
        assert_eq!(clock.read(3, 50_000, t0 + secs(2)), 52_000);
        // Its own proposals applied meanwhile do not make it count twice.
        assert_eq!(clock.read(3, 52_000, t0 + secs(5)), 55_000);
    }

    #[test]
    fn a_new_term_starts_from_the_applied_clock_not_from_an_old_estimate() {
        let t0 = Instant::now();
        let mut clock = LeaderClock::new(t0);
        clock.read(1, 0, t0);
        // Deposed at 1 s; another leader ran the clock to 40 s by 100 s of real time (it
        // started late). Back in charge, this node must not add the 100 s it was away.
        assert_eq!(clock.read(5, 40_000, t0 + secs(100)), 40_000);
        assert_eq!(clock.read(5, 40_000, t0 + secs(101)), 41_000);
    }

    #[test]
    fn an_applied_clock_ahead_of_the_estimate_wins() {
        let t0 = Instant::now();
        let mut clock = LeaderClock::new(t0);
        clock.read(2, 1_000, t0);
        // Entries of the previous leader, applied after this one took over, are ahead.
        assert_eq!(clock.read(2, 9_000, t0 + secs(1)), 9_000);
        assert_eq!(clock.read(2, 9_000, t0 + secs(3)), 11_000);
    }

    #[test]
    fn the_reading_never_goes_back_within_a_term() {
        let t0 = Instant::now();
        let mut clock = LeaderClock::new(t0);
        let mut last = 0;
        for (step, applied) in [0, 500, 200, 3_000, 3_000, 1_000, 9_000]
            .into_iter()
            .enumerate()
        {
            let now = t0 + Duration::from_millis(700 * step as u64);
            let reading = clock.read(4, applied, now);
            assert!(
                reading >= last && reading >= applied,
                "{reading} after {last}"
            );
            last = reading;
        }
    }
}
