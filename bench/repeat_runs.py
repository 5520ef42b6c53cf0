"""Repeat runs of ``check`` against correct servers of other shapes: a false alarm shows up here.

    python -m bench.repeat_runs                          # every server, 5 runs of 60 s, 2 at a time
    python -m bench.repeat_runs --runs 2 --budget 20 --only socat-exec-cat --json out.json

Each run is ``epoll-harness check`` as a user runs it (a subprocess, in the
network lab when this process may create one, no example database, a
different seed per run), against the correct servers of
tests/programs/servers/ (the C server is compiled first). Prints a Markdown
table: per server, the runs, the scripts checked, the violations (0 is the
only right answer), the non-strict findings seen and the diagnostics (fds
that are no leak). The mutants' side of the table (each still caught, time
to first violation) is ``python -m bench.mutation_table``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ROOT / "tests" / "programs" / "servers"
PY = sys.executable
KEPT = ROOT / "bench" / "build" / "repeat_runs"  # the artifacts of runs that reported a violation

CORRECT = {
    "c-1mib-buffer-lt": "{build}/bigbuf_echo --port {port} --buffer 1048576",
    "c-1mib-buffer-et": "{build}/bigbuf_echo --port {port} --buffer 1048576 --et",
    "c-16mib-buffer-lt": "{build}/bigbuf_echo --port {port} --buffer 16777216",
    "c-16mib-buffer-et": "{build}/bigbuf_echo --port {port} --buffer 16777216 --et",
    "c-lazy-log-file": "{build}/bigbuf_echo --port {port} --buffer 1048576 --lazy-log {build}/lazy.log",
    "c-pipe-pool": "{build}/bigbuf_echo --port {port} --buffer 1048576 --pipe-pool",
    "fork-per-connection": f"{PY} {SERVERS}/fork_echo.py --port {{port}}",
    "thread-per-connection": f"{PY} {SERVERS}/thread_echo.py --port {{port}}",
    "socat-exec-cat": "socat TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork EXEC:cat",
    "node-net-with-error-handler": f"node {SERVERS}/node_echo.js --port {{port}}",
    "trio": f"{PY} {SERVERS}/trio_echo.py --port {{port}}",
    "uvloop": f"{PY} {SERVERS}/uvloop_echo.py --port {{port}}",
    "asyncio-streams": f"{PY} {SERVERS}/asyncio_streams_echo.py --port {{port}}",
    "asyncio-protocol": f"{PY} {SERVERS}/asyncio_protocol_echo.py --port {{port}}",
    "twisted": f"{PY} {SERVERS}/twisted_echo.py --port {{port}}",
}


@dataclass
class Row:
    server: str
    runs: int = 0
    scripts: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)  # seen once, never again in its replays
    non_strict: list[str] = field(default_factory=list)
    diagnostics: set[str] = field(default_factory=set)


def one_run(name: str, command: str, seed: int, budget: float, capture: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"repeat-{name}-") as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [
                PY, "-m", "harness.cli", "check", "--server", command, "--seed", str(seed),
                "--time-budget", str(budget), "--no-database", "--capture", capture, "--quiet",
                "--report", str(report), "--artifacts", str(Path(tmp) / "art"),
            ],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=budget * 4 + 120,
            check=False,
        )
        if not report.exists():
            return {"error": f"no report from {command}"}
        found = json.loads(report.read_text())
        if any(stats["violations"] for stats in found["properties"].values()):
            # Kept for a look: a violation on a correct server is a false alarm to explain.
            shutil.copytree(Path(tmp) / "art", KEPT / f"{name}-{seed}", dirs_exist_ok=True)
        return found  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", action="append", choices=sorted(CORRECT))
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--capture",
        choices=("always", "never"),
        default="always",
        help="always (default): every script captured, graceful-fin judged on the wire too",
    )
    ns = parser.parse_args()
    build = Path(tempfile.mkdtemp(prefix="repeat-build-"))
    subprocess.run([str(SERVERS / "build.sh"), str(build)], check=True, capture_output=True)
    chosen = {
        name: command.format(build=build, port="{port}")
        for name, command in CORRECT.items()
        if not ns.only or name in ns.only
    }
    rows = {name: Row(name) for name in chosen}
    jobs = [(name, command, 1000 + run) for name, command in chosen.items() for run in range(ns.runs)]
    with ThreadPoolExecutor(ns.jobs) as pool:
        for (name, _command, _seed), report in zip(
            jobs, pool.map(lambda job: one_run(*job, ns.budget, ns.capture), jobs), strict=True
        ):
            row = rows[name]
            row.runs += 1
            if "error" in report:
                row.violations.append(str(report["error"]))
                continue
            row.scripts += int(report["examples"])  # type: ignore[call-overload]
            row.seconds += float(report["seconds"])  # type: ignore[arg-type]
            row.diagnostics.update(report.get("diagnostics", ()))  # type: ignore[arg-type]
            for prop, stats in report["properties"].items():  # type: ignore[attr-defined]
                for v in stats["violations"]:
                    # A failure that replays counts; one that never replayed is listed apart (the
                    # run passes on it), as the check's own summary does.
                    seen = f"{prop}: {v['message']} ({v.get('confirmed')}/{v.get('replays')} replays)"
                    unconfirmed = v.get("confirmed") == 0 and v.get("replays", 0) > 0
                    (row.unconfirmed if unconfirmed else row.violations).append(seen)
                row.non_strict += [f"{prop}: {v['message']}" for v in stats.get("non_strict", ())]
            print(f"{name}: run {row.runs}/{ns.runs} done", file=sys.stderr, flush=True)
    print(
        "| server | runs x budget | scripts checked | violations | unconfirmed | non-strict findings (runs) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows.values():
        kinds = sorted({n.split(":")[0] for n in row.non_strict})
        print(
            f"| {row.server} | {row.runs} x {ns.budget:g} s | {row.scripts} | {len(row.violations)} | "
            f"{len(row.unconfirmed)} | {', '.join(kinds) or '-'} ({len(row.non_strict)}) |"
        )
    for row in rows.values():
        for violation in row.violations:
            print(f"\n{row.server}: {violation}")
        for violation in row.unconfirmed:
            print(f"\n{row.server}: unconfirmed: {violation}")
    if ns.json is not None:
        rows_json = [asdict(r) | {"diagnostics": sorted(r.diagnostics)} for r in rows.values()]
        ns.json.write_text(json.dumps(rows_json, indent=1))
    return 0 if not any(r.violations for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
