"""The runner's budgets hold whatever Hypothesis does between calls of the test.

A real reference server (started and stopped by the runner), no scenarios;
the inputs come from a strategy that never lets an example reach the test.
"""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import reject
from hypothesis import strategies as st

from harness.drive.process import reference_command
from harness.model.script import Script
from harness.run.runner import CheckConfig, run_check

DRAW_SECONDS = 0.2


@st.composite
def slow_and_rejected(draw: st.DrawFn) -> Script:
    """Takes a while to draw, then is rejected: Hypothesis tries again and again, never calling the test."""
    time.sleep(DRAW_SECONDS)
    draw(st.integers(0, 2**32))  # a space Hypothesis cannot exhaust
    reject()


def test_the_time_budget_holds_while_hypothesis_draws_without_testing(tmp_path: Path) -> None:
    config = CheckConfig(
        reference_command("lt"),
        max_examples=50,
        time_budget=1.0,
        shrink_budget=1.0,
        seed=1,
        scenarios=False,
        database=None,
        artifacts=tmp_path,
    )
    started = time.monotonic()
    report = run_check(config, strategy=slow_and_rejected())
    # Hypothesis alone would try hundreds of inputs (DRAW_SECONDS each) before giving up.
    assert time.monotonic() - started < config.time_budget + 20 * DRAW_SECONDS + 10
    assert report.examples == 0 and report.ok
