"""HopelessWait: when a wait on the server asks whether the server is quiescent, and how often.

Pure logic over the monotonic clock; the answers come from a stub question
that records when it was asked (what the Checker asks of /proc is tested in
tests/test_checker.py against real servers).
"""

from __future__ import annotations

import time

from harness.drive.quiescence import QUIET_AFTER, HopelessWait


def ask_for(seconds: float, wait: HopelessWait) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not wait.check():
        time.sleep(0.002)


def test_no_question_without_a_watch_or_before_progress_has_stopped() -> None:
    assert not HopelessWait(None).check()
    asked: list[float] = []
    wait = HopelessWait(lambda: asked.append(time.monotonic()) or True)
    assert not wait.check() and not asked  # progress just happened (the wait began)


def test_a_quiescent_answer_ends_the_wait() -> None:
    wait = HopelessWait(lambda: True)
    ask_for(10 * QUIET_AFTER, wait)
    assert wait.hopeless


def test_a_busy_server_is_asked_at_doubling_intervals_and_progress_starts_again() -> None:
    asked: list[float] = []

    def busy() -> bool:
        asked.append(time.monotonic())
        return False

    wait = HopelessWait(busy)
    ask_for(1.0, wait)
    # Asked at about 0.05, 0.1, 0.2, 0.4 and 0.8 s: a handful, not one per 50 ms (20).
    assert 2 <= len(asked) <= 7, asked
    assert not wait.hopeless
    wait.progress()
    before = len(asked)
    assert not wait.check()  # no question right after progress
    assert len(asked) == before
