"""The runner: its budgets hold whatever Hypothesis does; its example database keeps what failed.

A real reference server (started and stopped by the runner), no scenarios;
the inputs come from a strategy that never lets an example reach the test.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import reject
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from harness.drive.process import reference_command
from harness.model.script import Connect, Script
from harness.model.transcript import Transcript
from harness.run.checker import Outcome
from harness.run.report import RunReport
from harness.run.runner import CheckConfig, run_check, steering_score

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


def test_a_failing_script_is_kept_replayed_first_and_forgotten_once_fixed(tmp_path: Path) -> None:
    """The example database across runs, as a user's CI meets it: a bug found, then fixed."""
    from harness.run.corpus import saved_failures

    buggy = f"{sys.executable} -m server_under_test.mutants.ignore_eof --host {{host}} --port 0 --mode lt"
    database = tmp_path / "db"

    def run(server: str, max_examples: int) -> RunReport:
        config = CheckConfig(
            server, max_examples=max_examples, time_budget=30.0, shrink_budget=5.0, confirm=1,
            scenarios=False, database=database, artifacts=tmp_path / "art",
            until_found=frozenset({"cleanup"}),
        )  # fmt: skip
        return run_check(config)

    first = run(buggy, 200)
    assert first.properties["cleanup"].violations, "the mutant's leak was not found"
    kept, unreadable = saved_failures(DirectoryBasedExampleDatabase(str(database)))
    assert unreadable == 0 and "cleanup" in {k.property_name for k in kept}
    # The next run checks the saved script first (one script kept for two properties is checked
    # once), and, its max_examples reached, nothing more.
    again = run(buggy, 1)
    assert again.examples == len({k.script for k in kept}) and again.properties["cleanup"].violations
    # Against a server without the bug the saved scripts pass, and are forgotten.
    fixed = run(reference_command("lt"), 3)
    assert fixed.ok
    assert saved_failures(DirectoryBasedExampleDatabase(str(database))) == ([], 0)


def test_a_campaign_settles_its_findings_in_batches() -> None:
    """Hypothesis's rule for going on after a failure (ten more examples at least, and until the
    later half found nothing new), capped at SETTLE_WITHIN seconds after the batch's first find."""
    from harness.run.runner import SETTLE_WITHIN, _RunState, _time_to_settle

    now = time.monotonic()
    state = _RunState(now, unsettled_since=(5, now), last_new_at=5)
    assert not _time_to_settle(state, 14)  # nine examples past the find
    assert _time_to_settle(state, 15)
    state.last_new_at = 20  # another property found at example 20: the later half goes on
    assert not _time_to_settle(state, 30) and _time_to_settle(state, 40)
    state.unsettled_since = (5, now - SETTLE_WITHIN)
    assert _time_to_settle(state, 6)
    assert not _time_to_settle(_RunState(now), 1000)  # nothing to settle


TICKING_SERVER = """
import selectors, socket, sys
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
listener.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(listener, selectors.EVENT_READ)
while True:
    for key, _ in sel.select(timeout=0.02):  # a timer: never asleep for good, so pauses run in full
        if key.fileobj is listener:
            conn, _ = listener.accept()
            conn.setblocking(False)
            sel.register(conn, selectors.EVENT_READ)
        else:
            data = key.fileobj.recv(65536)
            if data:
                key.fileobj.send(data)
            else:
                sel.unregister(key.fileobj)
                key.fileobj.close()
"""


def _budget_of_1_5_s(server_source: str, tmp_path: Path) -> CheckConfig:
    """A search of 1.5 s against the Python server ``server_source`` (written to ``tmp_path``)."""
    server = tmp_path / "server.py"
    server.write_text(server_source)
    return CheckConfig(
        f"{sys.executable} {server} {{port}}", max_examples=5, time_budget=1.5, shrink_budget=1.0,
        seed=1, scenarios=False, database=None, artifacts=tmp_path,
    )  # fmt: skip


def test_an_example_still_running_when_the_time_is_up_stops_at_its_next_step(tmp_path: Path) -> None:
    from harness.model.script import Connect, Pause

    long_script = Script((Connect(0), *[Pause(1000)] * 10))  # 10 s, a step a second
    started = time.monotonic()
    report = run_check(_budget_of_1_5_s(TICKING_SERVER, tmp_path), strategy=st.just(long_script))
    # Abandoned at the step after 1.5 s, not played for 10 s; half a script is judged on nothing.
    assert time.monotonic() - started < 7
    assert report.ok and report.examples == 0


def _outcome(evidence: set[str], seconds: float) -> Outcome:
    script = Script((Connect(0),))
    return Outcome(script, [], Transcript(script), evidence, seconds)


def test_steering_climbs_rare_events_reached_quickly() -> None:
    seen = Counter({"flood filled every buffer": 50, "RST injected toward the server": 1})
    rare, common = {"RST injected toward the server"}, {"flood filled every buffer"}
    # Rarer events score higher at the same cost; the same events score higher when checked faster.
    assert steering_score(_outcome(rare, 0.05), seen) > steering_score(_outcome(common, 0.05), seen)
    assert steering_score(_outcome(rare, 0.05), seen) > steering_score(_outcome(rare, 2.0), seen)
    assert steering_score(_outcome(set(), 0.01), seen) == 0.0


@pytest.mark.parametrize("steer", [True, False])
def test_a_campaigns_search_runs_in_rounds_each_drawing_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steer: bool
) -> None:
    # Steered or not: one long Hypothesis run turned to mutating what it had (42 ms of its own
    # per example unsteered, 5 ms in rounds), or kept climbing stale scores (steered).
    from harness.model.script import Payload, Send
    from harness.run import runner

    rounds: list[tuple[object, object]] = []
    original = runner._hypothesis_search

    def counted(*args: Any) -> None:
        rounds.append((args[5], args[7]))  # done, rounds_before
        original(*args)

    monkeypatch.setattr(runner, "_hypothesis_search", counted)
    drawn: list[bytes] = []

    @st.composite
    def one_send(draw: st.DrawFn) -> Script:
        data = draw(st.binary(min_size=1, max_size=64))
        drawn.append(data)
        return Script((Connect(0), Send(0, Payload.of(data))))

    config = CheckConfig(
        reference_command("lt"), max_examples=12, time_budget=60.0, shrink_budget=1.0, seed=3,
        scenarios=False, database=None, artifacts=tmp_path, steer=steer, search_round=5,
    )  # fmt: skip
    report = run_check(config, strategy=one_send())
    assert report.examples == 12 and report.ok
    assert rounds == [(0, 0), (5, 1), (10, 2)]  # 5 + 5 + 2, each round seeded apart
    assert len(set(drawn)) > 5  # a later round does not draw the first round's scripts again


TRICKLING_SERVER = """
import socket, sys, threading, time
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
def serve(conn):
    while data := conn.recv(65536):
        conn.sendall(data)
    while True:  # after the client's FIN: a byte every 50 ms, never EOF (bytes keep moving)
        conn.send(b"x")
        time.sleep(0.05)
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],), daemon=True).start()
"""


def test_a_read_whose_bytes_keep_trickling_in_stops_when_the_time_is_up(tmp_path: Path) -> None:
    # One ReadToEof that makes progress every 50 ms never stalls: without the budget inside the
    # read it ran on to step_timeout (60 s), and a 60 s campaign worker's search took 113 s.
    from harness.model.script import ReadToEof, ShutdownWrite

    script = Script((Connect(0), ShutdownWrite(0), ReadToEof(0)))
    started = time.monotonic()
    report = run_check(_budget_of_1_5_s(TRICKLING_SERVER, tmp_path), strategy=st.just(script))
    assert time.monotonic() - started < 15
    assert report.examples == 0  # abandoned unjudged: the budget ended it, not the server
    assert report.abandoned == 1 and report.to_json()["abandoned_scripts"] == 1
