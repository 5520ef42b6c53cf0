"""Where a server's time goes under one benchmark load: py-spy, summarised as text.

    python -m bench.profile_server --server "reference lt" --workload rr64 --seconds 5

Starts the server exactly as echo_bench does (pinned, own process group,
stopped by pid however this ends), drives it with loadgen for the given
workload, samples it with ``py-spy record --format raw`` meanwhile, and
prints the share of samples per source line (self time) and per function
(inclusive). Idle samples are kept, so the shares are of wall time: the line
that calls ``epoll.poll`` is the time spent waiting, plus the syscall itself.

py-spy runs with ``--nonblocking`` so it does not stop the server to read
its stacks; a stopped server would serve fewer requests and shift the
profile towards whatever the interruptions hit.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.echo_bench import (
    LOADGEN_CPU,
    SERVERS,
    Settings,
    compile_loadgen,
    loadgen_args,
    run_loadgens,
    running_server,
    workloads_for,
)


def summarise(raw: Path, top: int) -> str:
    """Collapsed stacks ("frame;frame;leaf count") -> tables of self and inclusive shares."""
    by_line: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        by_line[frames[-1]] += count
        # Inclusive: count each function once per stack, however often it recurses.
        for function in {f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" for f in frames}:
            by_function[function] += count
    out = [f"{total} samples", "", "self time by line:", ""]
    out += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in by_line.most_common(top)]
    out += ["", "inclusive time by function:", ""]
    out += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in by_function.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--server", choices=list(SERVERS), default="reference lt")
    parser.add_argument("--workload", choices=[w.key for w in workloads_for(10_000)], default="rr64")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--native", action="store_true", help="also sample C frames (py-spy --native)")
    ns = parser.parse_args(argv)
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 1
    compile_loadgen()
    settings = Settings(
        duration=ns.seconds + 1, warmup=0.5, repeats=1, hold_conns=10_000, hold_window=1000, pin=True
    )
    workload = next(w for w in workloads_for(settings.hold_conns) if w.key == ns.workload)
    with tempfile.TemporaryDirectory() as tmp, running_server(ns.server, settings) as server:
        raw = Path(tmp) / "profile.txt"
        cmd = [py_spy, "record", "--nonblocking", "--idle", "--format", "raw", "--rate", "100"]
        cmd += ["--duration", str(int(ns.seconds)), "--pid", str(server.proc.pid), "--output", str(raw)]
        if ns.native:
            cmd.append("--native")
        # Start the load first, so the samples fall inside its measured window.
        # py-spy shares the loadgen's core: the server's core stays the server's.
        spy = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {LOADGEN_CPU}),
        )
        try:
            (result,) = run_loadgens(
                [loadgen_args(workload, server.port, server.proc.pid, settings)], settings, server.proc.pid
            )
            _, err = spy.communicate(timeout=ns.seconds + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        if spy.returncode != 0 or not raw.exists():
            print(f"py-spy failed: {err.strip()}", file=sys.stderr)
            return 1
        metric = workload.metric(result)
        print(
            f"{ns.server}, {workload.label}: {metric:,.1f} {workload.unit} under py-spy (ok={result['ok']})"
        )
        print(summarise(raw, ns.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
