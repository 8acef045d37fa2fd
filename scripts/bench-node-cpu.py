#!/usr/bin/env python3
"""CPU time the raft-sidecar nodes spend per operation, for A/B comparisons of builds.

    scripts/bench-node-cpu.py LABEL BINARY CLIENTS DURATION [NAME=VALUE ...]

Runs `raft-bench throughput --sidecar-bin BINARY --clients CLIENTS --duration DURATION
--warmup 1s` (raft-bench from $RAFT_BENCH, default target/release/raft-bench; extra NAME=VALUE
pairs go into its environment), samples user+system CPU of every `raft-sidecar run`
process from /proc every 100 ms, and prints the bench's figures with the nodes' CPU seconds
and CPU microseconds per measured operation. Start-up and warm-up CPU are included, so compare
only runs of the same client count and duration. On a shared machine CPU per operation moves
far less than ops/s: it is the figure to compare builds by; run them alternately.
"""

import os
import re
import subprocess
import sys
import threading
import time


def node_cpu_seconds(seen):
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if len(argv) > 1 and argv[1] == b"run":
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                seen[pid] = (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass  # the process ended between listing and reading


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    label, binary, clients, duration = sys.argv[1:5]
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    bench = os.environ.get("RAFT_BENCH", os.path.join(target, "release", "raft-bench"))
    env = dict(os.environ)
    for pair in sys.argv[5:]:
        name, value = pair.split("=", 1)
        env[name] = value
    seen, done = {}, threading.Event()

    def sample():
        while not done.is_set():
            node_cpu_seconds(seen)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        out = subprocess.run(
            [bench, "throughput", "--sidecar-bin", binary, "--clients", clients,
             "--duration", duration, "--warmup", "1s"],
            env=env, capture_output=True, text=True, check=True, timeout=600,
        ).stdout
    finally:
        done.set()
        sampler.join()
    line = next(l for l in out.splitlines() if l.startswith("clients="))
    ops = float(re.search(r"ops/s=([\d.]+)", line).group(1)) * float(duration.rstrip("s"))
    cpu = sum(seen.values())
    load = open("/proc/loadavg").read().split()[0]
    print(f"{label} {line} node_cpu_s={cpu:.2f} cpu_us_per_op={1e6 * cpu / ops:.0f} load={load}")


if __name__ == "__main__":
    main()
