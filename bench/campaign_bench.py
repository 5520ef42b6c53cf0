"""Campaigns, measured in one run: examples/s with 1, 2 and N workers; time to first finding per mutant.

    python -m bench.campaign_bench                                   # both parts, tables on stdout
    python -m bench.campaign_bench --seconds 60 --mutant-seconds 60 --json out.json
    python -m bench.campaign_bench --skip-throughput --only ignore_eof --only et_no_drain
    python -m bench.campaign_bench --skip-throughput --skip-mutants --seed-seconds 120

Every run is ``epoll-harness fuzz`` as a user runs it (a subprocess, each worker
in its own network lab when permitted, a fresh example database, so nothing is
replayed from an earlier run).

* Throughput: the reference server (it never fails, so every second goes to
  the search) for ``--seconds`` with 1 worker, 2 workers and one per core;
  examples and examples/s in all and per worker, and the ratio to 1 worker.
* The seed's server: a two-worker campaign of ``--seed-seconds`` (120 by
  default), its findings (one per property, minimal, confirmed) and its
  regression tests run against the seed's server and the reference.
* Time to first finding: every mutant with ``--stop-on-first`` and one
  worker per core, once steered toward scarce fault events (Hypothesis
  ``target()``, the default) and once with ``--no-steer``: what the first
  finding was, whether it is the mutant's expected property, and when it was
  first seen (seconds since the campaign started).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.drive.process import reference_command
from server_under_test.mutants import catalogue

PY = sys.executable


def campaign(command: str, workers: int, seconds: float, *extra: str) -> dict[str, Any]:
    """One ``fuzz`` run in a fresh folder; its summary.json (or the error)."""
    with tempfile.TemporaryDirectory(prefix="campaign-bench-") as tmp:
        out = Path(tmp) / "out"
        result = subprocess.run(
            [
                PY, "-m", "harness.cli", "fuzz", "--server", command, "--workers", str(workers),
                "--duration", f"{seconds}s", "--db", str(Path(tmp) / "db"), "--out", str(out), "--quiet",
                *extra,
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=seconds * 3 + 300,
            check=False,
        )  # fmt: skip
        summary = out / "summary.json"
        if not summary.exists():
            return {"error": result.stderr.strip().splitlines()[-1:] or ["no summary"]}
        data: dict[str, Any] = json.loads(summary.read_text())
        return data


def throughput(seconds: float, cores: int) -> list[dict[str, Any]]:
    rows = []
    for workers in sorted({1, 2, cores}):
        got = campaign(reference_command("lt"), workers, seconds, "--confirm", "0")
        rows.append(
            {"workers": workers, **{k: got.get(k) for k in ("examples", "examples_per_second", "error")}}
        )
        rows[-1]["per_worker"] = [w["examples_per_second"] for w in got.get("per_worker", [])]
        print(f"throughput: {workers} workers done", file=sys.stderr, flush=True)
    return rows


def first_findings(seconds: float, cores: int, only: list[str] | None) -> list[dict[str, Any]]:
    rows = []
    for mutant in catalogue():
        if only and mutant.name not in only:
            continue
        row: dict[str, Any] = {"mutant": mutant.name, "expected": mutant.expected_property}
        for mode, extra in (("steered", ()), ("unsteered", ("--no-steer",))):
            got = campaign(
                shlex.join(mutant.argv(host="{host}")), cores, seconds, "--stop-on-first", "--confirm", "1",
                "--shrink-budget", "10", *extra,
            )  # fmt: skip
            findings = got.get("findings", [])
            first = min(findings, key=lambda f: f["seconds_to_find"]) if findings else None
            row[mode] = {
                "property": first["property_name"] if first else None,
                "seconds": first["seconds_to_find"] if first else None,
                "expected_found": any(
                    mutant.expected_property in (f["property_name"], *f["also"]) for f in findings
                ),
                "examples": got.get("examples"),
            }
        rows.append(row)
        print(f"first finding: {mutant.name} done", file=sys.stderr, flush=True)
    return rows


def seed_campaign(seconds: float, workers: int) -> dict[str, Any]:
    """Issue 16's done-criterion: a two-worker campaign against the seed's server, its findings,
    and its regression tests run against the seed's server (must fail) and the reference (must pass)."""
    seed_server = f"{PY} -m server_under_test.seed_server --port {{port}}"
    with tempfile.TemporaryDirectory(prefix="campaign-bench-seed-") as tmp:
        out = Path(tmp) / "out"
        subprocess.run(
            [
                PY, "-m", "harness.cli", "fuzz", "--server", seed_server, "--workers", str(workers),
                "--duration", f"{seconds}s", "--db", str(Path(tmp) / "db"), "--out", str(out), "--quiet",
            ],
            cwd=tmp, capture_output=True, text=True, timeout=seconds * 3 + 300, check=False,
        )  # fmt: skip
        if not (out / "summary.json").exists():
            return {"error": "no summary"}
        summary = json.loads((out / "summary.json").read_text())
        regression = {}
        for name, server in (("seed", seed_server), ("reference", reference_command("lt"))):
            ran = subprocess.run(
                [PY, "-m", "pytest", str(out), "-q", "-p", "no:cacheprovider", "--server-cmd", server],
                cwd=tmp, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            regression[name] = (ran.returncode, ran.stdout.strip().splitlines()[-1:])
    return {
        "examples": summary["examples"],
        "examples_per_second": summary["examples_per_second"],
        "findings": [
            {
                "property": f["property_name"],
                "also": f["also"],
                "steps": f["steps"],
                "bytes_sent": f["bytes_sent"],
                "confirmed": f["confirmed"],
                "replays": f["replays"],
                "seconds_to_find": f["seconds_to_find"],
            }
            for f in summary["findings"]
        ],
        "regression_tests": regression,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="each throughput campaign (default 60)")
    parser.add_argument("--mutant-seconds", type=float, default=60.0, help="each mutant campaign at most")
    parser.add_argument("--only", action="append", help="only these mutants")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-mutants", action="store_true")
    parser.add_argument(
        "--seed-seconds",
        type=float,
        default=120.0,
        help="the two-worker seed campaign (0: skip; default 120)",
    )
    parser.add_argument("--json", type=Path)
    ns = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    result: dict[str, Any] = {"cores": cores}
    if not ns.skip_throughput:
        result["throughput"] = throughput(ns.seconds, cores)
        base = result["throughput"][0].get("examples_per_second") or 0
        print(f"| workers | examples in {ns.seconds:g} s | examples/s | per worker | vs 1 worker |")
        print("|---|---|---|---|---|")
        for row in result["throughput"]:
            ratio = (
                f"{row['examples_per_second'] / base:.2f}x" if base and row["examples_per_second"] else "-"
            )
            per = ", ".join(f"{r:.2f}" for r in row["per_worker"])
            print(
                f"| {row['workers']} | {row['examples']} | {row['examples_per_second']} | {per} | {ratio} |"
            )
        print()
    if ns.seed_seconds:
        seed = result["seed_campaign"] = seed_campaign(ns.seed_seconds, 2)
        print(f"seed server, 2 workers, {ns.seed_seconds:g} s: {seed.get('examples')} examples")
        print("| property | also | steps | bytes | confirmed | found after (s) |")
        print("|---|---|---|---|---|---|")
        for f in seed.get("findings", []):
            print(
                f"| {f['property']} | {', '.join(f['also']) or '-'} | {f['steps']} | {f['bytes_sent']} | "
                f"{f['confirmed']}/{f['replays']} | {f['seconds_to_find']} |"
            )
        for name, (code, last) in seed.get("regression_tests", {}).items():
            print(f"regression tests against the {name} server: exit {code}, {' '.join(last)}")
        print()
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=1) + "\n")
    if ns.skip_mutants:
        return 0
    result["first_findings"] = first_findings(ns.mutant_seconds, cores, ns.only)
    print("| mutant | expected | steered: first finding (s) | unsteered: first finding (s) |")
    print("|---|---|---|---|")
    for row in result["first_findings"]:
        cells = []
        for mode in ("steered", "unsteered"):
            got = row[mode]
            if got["property"] is None:
                cells.append(f"none in {ns.mutant_seconds:g} s")
            else:
                mark = "" if got["expected_found"] else " (not the expected)"
                cells.append(f"{got['property']}{mark} ({got['seconds']:.1f})")
        print(f"| {row['mutant']} | {row['expected']} | {cells[0]} | {cells[1]} |")
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
