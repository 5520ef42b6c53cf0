"""The property suite, as pytest tests: ``pytest --pyargs harness.suite [--server-cmd CMD]``.

These are the same checks as ``epoll-harness check``: the same strategy (sized
for the network the worker runs in), the same checker, the same verdicts, the
same fixed scenario. Hypothesis settings come from the active profile
(``--hypothesis-profile``; the plugin's ``ci`` by default). Import them into a
test module of your own to run them with the rest of your tests::

    from harness.suite import (
        test_a_half_closing_client_gets_its_echo_then_eof,
        test_accept_survives_fd_exhaustion,
        test_every_property_holds,
        test_memory_stays_bounded_for_a_client_that_does_not_read,
    )
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from harness.drive.netns import NetworkSetup
from harness.model.limits import Limits
from harness.model.scenario import fd_exhaustion_scenario
from harness.model.script import Script
from harness.pytest_plugin import ScenarioRunner
from harness.run.checker import Checker
from harness.run.runner import flood_past_the_memory_bound, half_close_with_echo_owed
from harness.run.verdict import enforce


@given(data=st.data())
def test_every_property_holds(
    harness_checker: Checker, harness_scripts: st.SearchStrategy[Script], data: st.DataObject
) -> None:
    enforce(harness_checker.check(data.draw(harness_scripts, label="script")))


def test_accept_survives_fd_exhaustion(harness_scenario: ScenarioRunner, harness_limits: Limits) -> None:
    harness_scenario(fd_exhaustion_scenario(harness_limits))


def test_memory_stays_bounded_for_a_client_that_does_not_read(
    harness_checker: Checker, harness_network: NetworkSetup, harness_limits: Limits
) -> None:
    # A flood past the memory bound on every run: the strategy draws one now and then only.
    enforce(harness_checker.check(flood_past_the_memory_bound(harness_network, harness_limits)))


def test_a_half_closing_client_gets_its_echo_then_eof(harness_checker: Checker) -> None:
    # Send one byte, shut down writing, read to EOF: the whole of the commonest half-close bug.
    enforce(harness_checker.check(half_close_with_echo_owed()))
