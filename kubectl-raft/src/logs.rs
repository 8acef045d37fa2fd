//! The sidecar logs of every member as one timeline: the API server's log lines with
//! `timestamps=true` start with an RFC 3339 timestamp; lines of all pods are merged by it, each
//! prefixed with its pod. Pure: per-pod texts in, merged lines out.

/// One pod's log text (as `kubectl logs --timestamps` prints it).
pub struct PodLog {
    pub pod: String,
    pub text: String,
}

/// Every line of every pod, ordered by timestamp (stable: a pod's own order is kept, and a line
/// without a timestamp, such as the rest of a multi-line message, stays after the line before
/// it), as `pod | line`.
pub fn interleave(logs: &[PodLog]) -> Vec<String> {
    let mut lines: Vec<(String, usize, usize, String)> = Vec::new();
    for (p, log) in logs.iter().enumerate() {
        let mut last = String::new();
        for (i, line) in log.text.lines().enumerate() {
            if let Some((stamp, _)) = line.split_once(' ').filter(|(s, _)| is_timestamp(s)) {
                last = stamp.to_owned();
            }
            lines.push((last.clone(), p, i, format!("{} | {line}", log.pod)));
        }
    }
    // RFC 3339 timestamps of one format (the API server's, UTC, nanoseconds) sort as text.
    lines.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    lines.into_iter().map(|(_, _, _, l)| l).collect()
}

fn is_timestamp(word: &str) -> bool {
    word.len() >= 20 && word.as_bytes().get(4) == Some(&b'-') && word.ends_with('Z')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_all_members_are_merged_by_time_and_named_by_pod() {
        let logs = [
            PodLog {
                pod: "c-0".into(),
                text: "2026-12-05T10:00:00.100000000Z elected\n2026-12-05T10:00:02.000000000Z snapshot\n".into(),
            },
            PodLog {
                pod: "c-1".into(),
                text: "2026-12-05T10:00:01.000000000Z voted\n  continued line\n".into(),
            },
        ];
        assert_eq!(
            interleave(&logs),
            [
                "c-0 | 2026-12-05T10:00:00.100000000Z elected",
                "c-1 | 2026-12-05T10:00:01.000000000Z voted",
                "c-1 |   continued line",
                "c-0 | 2026-12-05T10:00:02.000000000Z snapshot",
            ]
        );
    }
}
