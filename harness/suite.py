"""The property suite, as pytest tests: ``pytest --pyargs harness.suite [--server-cmd CMD]``.

These are the same checks as ``epoll-harness check``: the same strategy, the
same :class:`~harness.checker.Checker`, the same verdicts. Hypothesis settings
come from the active profile (``--hypothesis-profile``).
"""

from __future__ import annotations

from hypothesis import given

from harness.checker import Checker
from harness.limits import Limits
from harness.properties import ACCEPT_ROBUST
from harness.scenarios import fd_exhaustion_scenario, run_scenario
from harness.script import Script
from harness.verdict import enforce
from strategies import scripts


@given(script=scripts())
def test_every_property_holds(harness_checker: Checker, script: Script) -> None:
    enforce(harness_checker.check(script))


def test_accept_survives_fd_exhaustion(server_command: str, harness_limits: Limits) -> None:
    violation = run_scenario(server_command, fd_exhaustion_scenario(harness_limits), harness_limits)
    assert violation is None, f"[{ACCEPT_ROBUST}] {violation.describe() if violation else ''}"
