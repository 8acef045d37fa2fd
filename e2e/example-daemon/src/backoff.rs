//! Capped exponential backoff with jitter, honouring the sidecar's `retryAfterMs` hint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Delays between retries: `base`, doubling up to `cap`, each stretched by up to 25 % of
/// jitter so that daemons retrying after the same event (a leader change) spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            next: base,
        }
    }

    /// The delay before the next retry. `retry_after` (the sidecar's `retryAfterMs`) is a
    /// floor: the sidecar knows better than we do when trying again makes sense, e.g. an
    /// election takes a few hundred ms.
    pub fn delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let backoff = self.next;
        self.next = (self.next * 2).min(self.cap);
        let jittered = backoff + backoff.mul_f64(jitter_fraction() * 0.25);
        jittered.max(retry_after.unwrap_or_default())
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
}

/// A number in [0, 1) that differs between processes and calls; no need for a real RNG.
fn jitter_fraction() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    f64::from(nanos % 1000) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let bounds = [100, 200, 400, 800, 1000, 1000];
        for expected in bounds {
            let d = b.delay(None);
            assert!(
                d >= ms(expected) && d <= ms(expected) * 5 / 4,
                "{d:?} vs {expected}"
            );
        }
        b.reset();
        assert!(b.delay(None) <= ms(125));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(50), ms(2000));
        assert_eq!(b.delay(Some(ms(500))), ms(500));
        assert!(b.delay(Some(ms(1))) >= ms(100));
    }
}
