//! Stalls of a measured load: spans of at least [`STALL`] in which no write completed, from the
//! completion times of every client. Under a closed-loop load a percentile cannot say whether
//! its slow writes were spread evenly or all waited through the same pause; a stall is the
//! second kind: the whole write path stopped, so every client in flight waited through it.
//! Each span is reported with its wall-clock start, to be matched with the nodes' logs.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// The shortest span without a completed write that counts as a stall.
pub(crate) const STALL: Duration = Duration::from_millis(10);

/// The stalls of one measured run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stalls {
    pub(crate) count: u64,
    /// Time in stalls, all together.
    pub(crate) total_ms: f64,
    pub(crate) longest_ms: f64,
    /// Empty in a sum of runs ([`merged`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) spans: Vec<Span>,
}

/// One stall.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Span {
    /// When it began (the last completion before it), RFC 3339 UTC to the millisecond.
    pub(crate) at: String,
    pub(crate) ms: f64,
}

/// The measured window `[from, to]`, with `wall` the wall-clock time of `from`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) from: Instant,
    pub(crate) to: Instant,
    pub(crate) wall: SystemTime,
}

/// The spans of at least `min` inside `window` with no instant of `done` (completion times,
/// in any order), the window's edges counting as bounds: a write path stopped when the
/// measurement began or ended stalled too.
pub(crate) fn stalls(mut done: Vec<Instant>, window: Window, min: Duration) -> Stalls {
    done.sort_unstable();
    let mut out = Stalls::default();
    for (start, gap) in gaps(&done, window.from, window.to).filter(|(_, gap)| *gap >= min) {
        let ms = millis(gap);
        out.count += 1;
        out.total_ms += ms;
        out.longest_ms = out.longest_ms.max(ms);
        let at = window.wall + start.duration_since(window.from);
        out.spans.push(Span {
            at: humantime::format_rfc3339_millis(at).to_string(),
            ms,
        });
    }
    out.total_ms = round2(out.total_ms);
    out
}

/// Every span between consecutive instants of `done` (sorted) inside `[from, to]`, with
/// `from` and `to` as the first and last bound: (where it starts, how long it lasts).
pub(crate) fn gaps(
    done: &[Instant],
    from: Instant,
    to: Instant,
) -> impl Iterator<Item = (Instant, Duration)> + '_ {
    let inside = done
        .iter()
        .copied()
        .filter(move |t| (from..=to).contains(t));
    let mut prev = from;
    inside.chain(std::iter::once(to)).map(move |t| {
        let gap = (prev, t.duration_since(prev));
        prev = t;
        gap
    })
}

/// Several runs' stalls summed up; the spans stay with each run.
pub(crate) fn merged<'a>(runs: impl IntoIterator<Item = &'a Stalls>) -> Stalls {
    let mut out = Stalls::default();
    for s in runs {
        out.count += s.count;
        out.total_ms = round2(out.total_ms + s.total_ms);
        out.longest_ms = out.longest_ms.max(s.longest_ms);
    }
    out
}

fn millis(d: Duration) -> f64 {
    round2(d.as_secs_f64() * 1000.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(from: Instant, ms: u64) -> Window {
        Window {
            from,
            to: from + Duration::from_millis(ms),
            wall: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_pause_with_no_completion_is_one_stall_and_steady_completions_none() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Every 2 ms up to 40 ms, nothing until 75 ms, then every 2 ms again up to 100 ms;
        // given out of order, as clients report them.
        let mut done: Vec<Instant> = (0..=20).chain(38..=50).map(|i| at(i * 2)).collect();
        done.reverse();
        let s = stalls(done, window(t0, 100), STALL);
        assert_eq!(s.count, 1, "{s:?}");
        assert_eq!(s.longest_ms, 36.0);
        assert_eq!(s.total_ms, 36.0);
        assert_eq!(s.spans[0].at, "1970-01-01T00:00:00.040Z");
    }

    #[test]
    fn a_write_path_stopped_at_either_edge_of_the_window_stalls_too() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Completions before the window (warm-up) do not count; the first inside is at 30 ms,
        // the last at 50 ms of a 100 ms window.
        let done = vec![t0 - Duration::from_millis(5), at(30), at(35), at(50)];
        let s = stalls(done, window(t0, 100), STALL);
        assert_eq!(s.count, 3, "{s:?}");
        assert_eq!(s.longest_ms, 50.0);
        assert_eq!(s.total_ms, 30.0 + 15.0 + 50.0);
    }

    #[test]
    fn no_completion_at_all_is_one_stall_over_the_whole_window() {
        let t0 = Instant::now();
        let s = stalls(Vec::new(), window(t0, 80), STALL);
        assert_eq!((s.count, s.longest_ms), (1, 80.0));
    }

    #[test]
    fn merged_runs_add_counts_and_time_and_keep_the_longest() {
        let t0 = Instant::now();
        let a = stalls(vec![t0 + Duration::from_millis(20)], window(t0, 40), STALL);
        let b = stalls(Vec::new(), window(t0, 15), STALL);
        let m = merged([&a, &b]);
        assert_eq!(m.count, 3);
        assert_eq!(m.total_ms, 55.0);
        assert_eq!(m.longest_ms, 20.0);
    }
}
