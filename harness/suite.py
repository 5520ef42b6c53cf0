"""The property suite, as pytest tests: ``pytest --pyargs harness.suite [--server-cmd CMD]``.

These are the same checks as ``epoll-harness check``: the same strategy, the
same :class:`~harness.run.checker.Checker`, the same verdicts. Hypothesis settings
come from the active profile (``--hypothesis-profile``).
"""

from __future__ import annotations

from hypothesis import given

from harness.model.limits import Limits
from harness.model.properties import ACCEPT_ROBUST
from harness.model.scenario import fd_exhaustion_scenario
from harness.model.script import Script
from harness.run.checker import Checker
from harness.run.scenarios import run_scenario
from harness.run.verdict import enforce
from strategies import scripts


@given(script=scripts())
def test_every_property_holds(harness_checker: Checker, script: Script) -> None:
    enforce(harness_checker.check(script))


def test_accept_survives_fd_exhaustion(server_command: str, harness_limits: Limits) -> None:
    violation = run_scenario(server_command, fd_exhaustion_scenario(harness_limits), harness_limits)
    assert violation is None, f"[{ACCEPT_ROBUST}] {violation.describe() if violation else ''}"
