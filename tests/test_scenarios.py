"""The fd-exhaustion scenario blames EMFILE only for what EMFILE does: one bug, one finding.

Real servers (mutants of the reference, and the reference itself) started by
the scenario with RLIMIT_NOFILE 64; traffic on 127.0.0.1. A server that a
client's reset kills, or that spins with idle connections open, does so in
the scenario's control (8 clients, no exhaustion), and is reported under
survives or idle-cpu; a server that spins because accept() fails with EMFILE
is accept-robust's.
"""

from __future__ import annotations

import sys

import pytest

from harness.drive.process import reference_command
from harness.model.limits import DEFAULT_LIMITS
from harness.model.scenario import fd_exhaustion_scenario
from harness.run.scenarios import run_scenario


def _mutant(name: str) -> str:
    return f"{sys.executable} -m server_under_test.mutants.{name} --host {{host}} --port 0 --mode lt"


@pytest.mark.parametrize(
    ("name", "expected", "words"),
    [
        ("reset_kills", "survives", "before any fd exhaustion"),
        ("epollout_always", "idle-cpu", "before any fd exhaustion"),
        ("emfile_spin", "accept-robust", "EMFILE makes it spin"),
    ],
)
def test_each_bug_is_reported_as_what_it_is(name: str, expected: str, words: str) -> None:
    violation = run_scenario(_mutant(name), fd_exhaustion_scenario(DEFAULT_LIMITS), DEFAULT_LIMITS)
    assert violation is not None, f"{name}: the scenario saw nothing"
    assert (violation.property_name, words in violation.describe()) == (expected, True), violation.describe()


@pytest.mark.parametrize("mode", ["lt", "et"])
def test_the_reference_server_passes_control_and_exhaustion(mode: str) -> None:
    assert (
        run_scenario(reference_command(mode), fd_exhaustion_scenario(DEFAULT_LIMITS), DEFAULT_LIMITS) is None
    )
