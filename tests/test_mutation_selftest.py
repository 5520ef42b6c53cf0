"""The mutation self-test (issue 5 §2): the harness must catch every known bug, and nothing else.

For every mutant of :data:`server_under_test.mutants.CATALOGUE` the harness's
own ``epoll-harness check`` (a subprocess, in the network lab when permitted,
fixed seed, bounded budgets, artifacts and example database under ``tmp_path``) must
report a violation, and the mutant's expected property must be among the
violated ones: a property with a reproducer, or one a reproducer's script
also broke. The run stops searching once the expected property is seen
(``--until-found``), so a quick catch is a quick test.

The same run against the reference server, in both modes, must find nothing:
a violation there is a false alarm, a harness bug. The seed's server must
break every property its docstring documents.

    pytest -n 2 -m mutants tests/test_mutation_selftest.py

Every server is started and stopped by the harness; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.drive.process import reference_command
from server_under_test.mutants import CATALOGUE

pytestmark = pytest.mark.mutants

SEED = 20240605
# The reference servers run this many examples (all of them, they must find nothing); the
# repeat-run bench (bench/repeat_runs.py) and the mutation table run far more.
MAX_EXAMPLES = 50
# A mutant's search stops at its expected property or at TIME_BUDGET, not after a count:
# a race (et_no_drain's FIN arriving before its one read) may need more examples on a
# loaded machine than it does alone.
MUTANT_MAX_EXAMPLES = 2000
# The search may take this long before the expected property must have been seen
# (most mutants are caught within 10 s); the reference servers run all of it.
TIME_BUDGET = 45.0
SHRINK_BUDGET = 2.0
# Goal of issue 5: every mutant caught within this long.
CATCH_WITHIN = 60.0
SEED_SERVER_PROPERTIES = frozenset({"cleanup", "idle-cpu", "half-close", "survives", "accept-robust"})
# The seed's server dies (survives) only when a client's reset lands between its epoll.poll() and
# its recv()/getpeername() (bug 4 of its docstring): a race, seen in 2 of 6 runs while this test
# was written. The run searches for it (until_found); the test does not insist on it.
RACY = {"seed_server": frozenset({"survives"})}
# The same bug, seen through another property where the lab's buffers change its symptom. In the
# network lab a receive queue holds less than one 64 KiB read, so et_no_drain's data gets through
# edge by edge, and what stays unread is the FIN: the client's half-close is never answered (every
# time when the last bytes and the FIN arrive in one segment, a half-close with a tail).
SAME_BUG = {"et_no_drain": {"echo-complete": frozenset({"half-close"})}}


@dataclass(frozen=True)
class Target:
    name: str
    command: str
    expected: frozenset[str]  # empty: must pass


def _targets() -> list[Target]:
    python = shlex.quote(sys.executable)
    # The long runs first, so that xdist's scheduler spreads them over the workers.
    found = [
        Target("reference-lt", reference_command("lt"), frozenset()),
        Target("reference-et", reference_command("et"), frozenset()),
        Target(
            "seed_server",
            f"{python} -m server_under_test.seed_server --port {{port}}",
            SEED_SERVER_PROPERTIES,
        ),
    ]
    found += [
        Target(m.name, shlex.join(m.argv(host="{host}")), frozenset({m.expected_property})) for m in CATALOGUE
    ]
    return found


TARGETS = _targets()


@dataclass(frozen=True)
class Result:
    """What a check run's report.json says."""

    ok: bool
    examples: int
    violations: list[dict[str, Any]]
    seconds_to_find: dict[str, float | None]


def _check(target: Target, tmp_path: Path) -> Result:
    """``epoll-harness check`` as a user runs it, in the network lab when this process may create one.

    A subprocess: the namespace moves the whole process, and this pytest
    worker's other tests must stay on the host's loopback.
    """
    report_path = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "harness.cli", "check", "--server", target.command,
        "--netns" if os.geteuid() == 0 else "--no-netns",
        "--seed", str(SEED), "--max-examples", str(MUTANT_MAX_EXAMPLES if target.expected else MAX_EXAMPLES),
        "--time-budget", str(TIME_BUDGET),
        "--shrink-budget", str(SHRINK_BUDGET), "--capture", "never", "--quiet", "--report", str(report_path),
        # No confirming replays: this test asks whether the search finds the bug, and a racy one
        # (eagain_as_eof, et_no_drain) may not replay; confirmation is tested in test_shapes.py.
        "--confirm", "0",
    ]  # fmt: skip
    if target.expected:
        # In the lab a bug may show through its alias only (SAME_BUG): the search stops on that.
        in_lab = os.geteuid() == 0
        aliases = SAME_BUG.get(target.name, {}) if in_lab else {}
        until = {alias for name in target.expected for alias in aliases.get(name, {name})}
        command += ["--until-found", ",".join(sorted(until))]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_BUDGET + 240)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    violations = [v for stats in report["properties"].values() for v in stats["violations"]]
    for record in violations:
        if record["reproducer"]:
            record["reproducer"] = str(tmp_path / record["reproducer"])
    found = {v["property_name"]: v["seconds_to_find"] for v in violations}
    return Result(report["ok"], report["examples"], violations, found)


def _violated(report: Result) -> tuple[set[str], set[str]]:
    """(properties with a reproducer, every property violated)."""
    primary: set[str] = set()
    every: set[str] = set()
    for record in report.violations:
        primary.add(record["property_name"])
        every.add(record["property_name"])
        if record["reproducer"]:
            every.update(json.loads(Path(record["reproducer"]).read_text()).get("also_violated", ()))
    return primary, every


def _describe(report: Result) -> str:
    return "; ".join(f"{v['property_name']}: {v['message']} [{v['reproducer']}]" for v in report.violations)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_check_catches_the_bug(target: Target, tmp_path: Path) -> None:
    report = _check(target, tmp_path)
    primary, every = _violated(report)
    if not target.expected:
        assert report.ok, f"false alarm on {target.name} ({report.examples} examples): {_describe(report)}"
        assert report.examples >= 10, f"only {report.examples} examples in {TIME_BUDGET} s"
        return
    assert not report.ok, f"{target.name}: no violation in {report.examples} examples"
    missing = target.expected - every - RACY.get(target.name, frozenset())
    aliases = SAME_BUG.get(target.name, {})
    missing = {name for name in missing if not aliases.get(name, frozenset()) & every}
    assert not missing, (
        f"{target.name}: expected {sorted(missing)} among the violations, got {sorted(every)} "
        f"({_describe(report)})"
    )
    # A racy property is not insisted on, nor is how soon it showed (one example of the seed's
    # server can take 20 s: megabytes echoed by a server that prints each read).
    for name in (target.expected & primary) - RACY.get(target.name, frozenset()):
        found_after = report.seconds_to_find[name]
        if found_after is not None:
            assert found_after <= CATCH_WITHIN, f"{target.name}: {name} took {found_after} s to find"
