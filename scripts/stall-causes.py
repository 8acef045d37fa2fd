#!/usr/bin/env python3
"""What each stall of a raft-bench throughput run coincided with (docs/benchmarks.md, "Where
the tail at 64 clients comes from").

    RAFT_LOG=info,openraft=info raft-bench throughput --clients 64 --duration 20s \\
        --keep-dir --json run.json
    scripts/stall-causes.py run.json /tmp/raft-bench-<pid>-<id>   # the directory it kept

A stall is a span of 10 ms or more in which no write completed (the JSON's `stalls.spans`, each
with its wall-clock start). For every span this lists the node events from 50 ms before it to
its end: snapshot builds (openraft's log at info), AppendEntries answers that came too late
for openraft ("did not answer within"), and RocksDB flushes and compactions (each node's
rocksdb/LOG). Then the time in stalls, summed by the kinds of event seen near them. A
coincidence, not a proof of cause: "none" is stall time with no such event nearby.
"""

import datetime
import json
import sys
from pathlib import Path

BEFORE_S = 0.05


def utc(text):
    """Seconds since the epoch of an RFC 3339 UTC time (millisecond or finer)."""
    stamp = text.rstrip("Z")[:23]
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f")
    return parsed.replace(tzinfo=datetime.timezone.utc).timestamp()


def node_events(run_dir):
    """(time, kind) of every event of interest on every node of a kept run directory."""
    events = []
    for node_log in sorted(run_dir.glob("node-*.log")):
        for line in node_log.read_text(errors="replace").splitlines():
            if "worker_loop: build snapshot" in line or "command done: BuildSnapshot" in line:
                kind = "snapshot"
            elif "did not answer within" in line and "update progress" in line:
                kind = "late AppendEntries answer"
            else:
                continue
            events.append((utc(line[:26]), kind))
    for rocks_log in sorted(run_dir.glob("node-*/rocksdb/LOG")):
        for line in rocks_log.read_text(errors="replace").splitlines():
            if "EVENT_LOG" not in line:
                continue
            event = json.loads(line[line.index("{"):])
            name = event.get("event", "")
            if name.startswith("flush_"):
                kind = "flush"
            elif name.startswith("compaction_"):
                kind = "compaction"
            else:
                continue
            events.append((event["time_micros"] / 1e6, kind))
    return sorted(events)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    report = json.loads(Path(sys.argv[1]).read_text())
    events = node_events(Path(sys.argv[2]))
    if not any(kind == "snapshot" for _, kind in events):
        print("note: no snapshot events in the node logs; was RAFT_LOG=info,openraft=info set?")
    totals = {}
    for level in report["results"]:
        print(f"clients={level['clients']}")
        for span in level["stalls"].get("spans", []):  # absent when there were none
            start = utc(span["at"])
            end = start + span["ms"] / 1000
            kinds = sorted({k for t, k in events if start - BEFORE_S <= t <= end})
            key = " + ".join(kinds) or "none"
            print(f"  {span['at']} {span['ms']:7.1f} ms  {key}")
            count, total, longest = totals.get(key, (0, 0.0, 0.0))
            totals[key] = (count + 1, total + span["ms"], max(longest, span["ms"]))
    print("\nstall time by the events near it:")
    for key, (count, total, longest) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print(f"  {key:<60} {count:4d} stalls {total:8.1f} ms, longest {longest:6.1f} ms")


if __name__ == "__main__":
    main()
