"""The mutation self-test (issue 5 §2): the harness must catch every known bug, and nothing else.

For every mutant of :data:`server_under_test.mutants.CATALOGUE` the harness's
own ``check`` (:func:`harness.runner.run_check`, in-process, fixed seed,
bounded budgets, artifacts and example database under ``tmp_path``) must
report a violation, and the mutant's expected property must be among the
violated ones: a property with a reproducer, or one a reproducer's script
also broke. The run stops searching once the expected property is seen
(``until_found``), so a quick catch is a quick test.

The same run against the reference server, in both modes, must find nothing:
a violation there is a false alarm, a harness bug. The seed's server must
break every property its docstring documents.

    pytest -n 2 -m mutants tests/test_mutation_selftest.py

Every server is started and stopped by the harness; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.process import reference_command
from harness.report import RunReport
from harness.runner import CheckConfig, run_check
from server_under_test.mutants import CATALOGUE

pytestmark = pytest.mark.mutants

SEED = 20240605
MAX_EXAMPLES = 200
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


def _check(target: Target, tmp_path: Path) -> RunReport:
    config = CheckConfig(
        server_command=target.command,
        max_examples=MAX_EXAMPLES,
        time_budget=TIME_BUDGET,
        shrink_budget=SHRINK_BUDGET,
        seed=SEED,
        artifacts=tmp_path / "artifacts",
        database=tmp_path / "hypothesis",
        until_found=target.expected,
    )
    return run_check(config)


def _violated(report: RunReport) -> tuple[set[str], set[str]]:
    """(properties with a reproducer, every property violated)."""
    primary: set[str] = set()
    every: set[str] = set()
    for record in report.violations:
        primary.add(record.property_name)
        every.add(record.property_name)
        if record.reproducer:
            every.update(json.loads(Path(record.reproducer).read_text()).get("also_violated", ()))
    return primary, every


def _describe(report: RunReport) -> str:
    return "; ".join(f"{v.property_name}: {v.message} [{v.reproducer}]" for v in report.violations)


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
    assert not missing, (
        f"{target.name}: expected {sorted(missing)} among the violations, got {sorted(every)} "
        f"({_describe(report)})"
    )
    for name in target.expected & primary:
        found_after = report.properties[name].violations[0].seconds_to_find
        if found_after is not None:
            assert found_after <= CATCH_WITHIN, f"{target.name}: {name} took {found_after} s to find"
