"""Network lab or host loopback: what the private namespace with small buffers buys (issue 6 §1).

    python -m bench.netns_bench [--budget 30] [--repeats 3]

For each setting (``--netns``: tcp_wmem/tcp_rmem 4096 8192 16384; ``--no-netns``:
the host's loopback and its buffers), runs ``epoll-harness check`` as a
subprocess with a fixed seed and budget and reads its report.json:

* the reference server with the full script mix: scripts per second;
* the flood-dependent mutants: seconds until the first violation of the
  expected property, and the size of the shrunk reproducer.

Prints a Markdown table. Every run stops by itself (the harness's budgets).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.drive.process import reference_command

# Bugs that only show once the server's send() hits EAGAIN or its queue fills.
FLOOD_MUTANTS = {
    "ignore_send_return": "echo-exact",
    "eagain_no_epollout": "echo-complete",
    "blocking_accepted": "no-head-of-line-blocking",
    "shared_output_buffer": "no-crosstalk",
}


def run_check(command: str, netns: bool, budget: float, seed: int, workdir: Path) -> dict[str, object]:
    report = workdir / "report.json"
    subprocess.run(
        [
            sys.executable, "-m", "harness.cli", "check", "--server", command,
            "--netns" if netns else "--no-netns", "--seed", str(seed), "--time-budget", str(budget),
            "--shrink-budget", "20", "--max-examples", "100000", "--no-scenarios", "--capture", "never",
            "--no-database", "--quiet", "--report", str(report),
        ],
        cwd=workdir, capture_output=True, text=True, timeout=budget + 300, check=False,
    )  # fmt: skip
    return json.loads(report.read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=float, default=30.0, help="search seconds per run (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell, seeds 1..N (default 3)")
    args = parser.parse_args()
    rows = []
    for netns in (True, False):
        label = "private netns, 4096 8192 16384" if netns else "host loopback, default buffers"
        rates = []
        for seed in range(1, args.repeats + 1):
            with tempfile.TemporaryDirectory() as tmp:
                report = run_check(reference_command("lt"), netns, args.budget, seed, Path(tmp))
            rates.append(float(report["examples"]) / float(report["seconds"]))  # type: ignore[arg-type]
        row = [label, f"{statistics.median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f})"]
        for name, prop in FLOOD_MUTANTS.items():
            command = f"{sys.executable} -m server_under_test.mutants.{name} --port {{port}}"
            found = []
            for seed in range(1, args.repeats + 1):
                with tempfile.TemporaryDirectory() as tmp:
                    report = run_check(command, netns, args.budget, seed, Path(tmp))
                violations = report["properties"][prop]["violations"]  # type: ignore[index]
                found.append(violations[0]["seconds_to_find"] if violations else None)
            caught = [f for f in found if f is not None]
            cell = f"{statistics.median(caught):.1f} s" if caught else "not caught"
            row.append(f"{cell} ({len(caught)}/{len(found)})")
        rows.append(row)
    mutants = (f"{name} ({prop})" for name, prop in FLOOD_MUTANTS.items())
    header = ["network", "reference: scripts/s (median, min–max)", *mutants]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
