"""The checker on hand-written scripts: which property a known failure is charged to.

Each test runs one deterministic script against a mutant (a subprocess the
Checker starts and stops), on host loopback, and asserts the property named
in the verdict, not merely that something failed.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.drive.process import ServerProcess
from harness.model.properties import ACCEPT_ROBUST, CLEANUP, ECHO_COMPLETE, NO_HOL_BLOCKING
from harness.model.script import (
    BurstConnect,
    Close,
    Connect,
    Flood,
    Payload,
    Read,
    ReadToEof,
    Script,
    Send,
    ShutdownWrite,
)
from harness.run.checker import Checker
from strategies import echo_path_capacity, min_flood_size

MiB = 1 << 20
PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture
def blocking_checker() -> Iterator[Checker]:
    """A server whose accepted sockets are blocking: one send() to a full client stops it all."""
    mutant = "server_under_test.mutants.blocking_accepted"
    checker = Checker(ServerProcess(f"{shlex.quote(sys.executable)} -m {mutant} --port {{port}}"))
    checker.start()
    try:
        yield checker
    finally:
        checker.stop()


MISBEHAVING = Path(__file__).resolve().parent / "programs" / "misbehaving.py"


def names(checker: Checker, script: Script) -> set[str]:
    return {v.property_name for v in checker.check(script).violations}


def test_a_read_stalled_behind_an_unread_flood_is_head_of_line_blocking(blocking_checker: Checker) -> None:
    flood = min_flood_size(echo_path_capacity())
    script = Script(
        (
            Connect(0),
            Flood(0, size=flood, seed=0),
            Connect(1),
            Send(1, Payload.pattern(5, 0)),
            Read(1),
        )
    )
    assert names(blocking_checker, script) == {NO_HOL_BLOCKING}


def test_a_send_stalled_behind_an_unread_flood_is_head_of_line_blocking(blocking_checker: Checker) -> None:
    """The server blocked on connection 0 takes nothing from connection 1, whose send() stalls.

    The send is larger than the kernel holds on its way (client send buffer
    plus server receive buffer), so it is the send that stalls, not the read
    after it: the same bug, and the same property, as a stalled read.
    """
    flood = min_flood_size(echo_path_capacity())
    script = Script(
        (
            Connect(0),
            Flood(0, size=flood, seed=0),
            Connect(1),
            Send(1, Payload.pattern(32 * MiB, 0)),
        )
    )
    found = names(blocking_checker, script)
    assert NO_HOL_BLOCKING in found and ECHO_COMPLETE not in found, found


def test_a_read_stalled_behind_a_big_unread_send_is_head_of_line_blocking(blocking_checker: Checker) -> None:
    """No flood this time: a plain Send whose echo overfills connection 0's path, never read.

    Nothing in the script marks connection 0 as a blocker; what the server is
    doing does: its one thread sleeps in sendto() on connection 0's socket.
    Connection 1 comes only once the server is there (on a loaded machine it
    may still be echoing connection 0's bytes when connection 1's arrive, and
    serve it first): the script is played a step at a time, as the state
    machine plays it, waiting on that condition in between.
    """
    first = (Connect(0), Send(0, Payload.pattern(min_flood_size(echo_path_capacity()), 0)))
    then = (Connect(1), Send(1, Payload.pattern(5, 0)), Read(1))
    executor = blocking_checker.begin()
    try:
        for index, step in enumerate(first + then):
            if index == len(first):
                server_blocks_in_a_write(blocking_checker)
            executor.step_index = index
            executor.run_step(step)
    finally:
        executor.abort_all()
    outcome = blocking_checker.judge(Script(first + then), executor.transcript)
    assert {v.property_name for v in outcome.violations} == {NO_HOL_BLOCKING}, outcome.violations
    assert "blocking sendto() on fd" in outcome.violations[0].message
    assert "connection 0's socket" in outcome.violations[0].message


def server_blocks_in_a_write(checker: Checker, within: float = 30.0) -> None:
    assert checker.observer is not None
    deadline = time.monotonic() + within
    while not checker.observer.blocked_writes():
        assert time.monotonic() < deadline, f"the server was not blocked in a write within {within} s"
        time.sleep(0.01)


def test_a_stall_on_a_server_asleep_for_good_is_reported_without_waiting_out_the_deadline() -> None:
    """oneshot_no_rearm never hears of the second Send: it sleeps in epoll_wait, nothing in flight."""
    mutant = "server_under_test.mutants.oneshot_no_rearm"
    checker = Checker(ServerProcess(f"{shlex.quote(sys.executable)} -m {mutant} --port {{port}}"))
    checker.start()
    try:
        script = Script(
            (Connect(0), Send(0, Payload.pattern(10, 0)), Read(0), Send(0, Payload.pattern(10, 1)), Read(0))
        )
        outcome = checker.check(script)
    finally:
        checker.stop()
    stall = next(v for v in outcome.violations if v.property_name == ECHO_COMPLETE)
    assert "none could come: the server sleeps in its event wait" in stall.message, stall
    leak = next(v for v in outcome.violations if v.property_name == CLEANUP)
    assert "none will close" in leak.message, leak


def test_a_server_woken_by_its_timer_is_waited_for() -> None:
    """Slow but correct: every echo and every close comes 0.3 s late, from an epoll_wait timeout.

    Between events the server sleeps in epoll_wait with nothing in flight, as
    a stuck one does, but with a timeout: it is not quiescent, and the
    harness waits for it up to stall_timeout and cleanup_timeout as usual.
    """
    command = f"{shlex.quote(sys.executable)} {PROGRAMS / 'misbehaving.py'} timer-echo --port {{port}}"
    checker = Checker(ServerProcess(command))
    checker.start()
    try:
        script = Script(
            (
                Connect(0),
                Send(0, Payload.pattern(100, 0)),
                Read(0),
                Connect(1),
                Send(1, Payload.pattern(10, 1)),
                ShutdownWrite(1),
                ReadToEof(1),
                Close(0),
            )
        )
        outcome = checker.check(script)
    finally:
        checker.stop()
    assert outcome.ok, outcome.violations


def test_a_burst_on_a_server_asleep_for_good_fails_without_waiting_out_the_deadline() -> None:
    """A server that reads and never echoes sleeps in epoll_wait: the burst's echoes cannot come."""
    checker = Checker(ServerProcess(f"{shlex.quote(sys.executable)} {MISBEHAVING} swallows --port {{port}}"))
    checker.start()
    try:
        outcome = checker.check(Script((BurstConnect(count=5, size=300),)))
    finally:
        checker.stop()
    (violation,) = [v for v in outcome.violations if v.property_name == ACCEPT_ROBUST]
    assert "got no complete echo" in violation.message, violation
    assert "none could come: the server sleeps in its event wait" in violation.message, violation


def test_a_read_on_an_echo_already_diverged_ends_without_waiting_out_the_deadline() -> None:
    """A thread per connection (blocked in recv: never "asleep" to the harness) that drops the CR of
    CR LF owes a byte for ever; the read ends once nothing comes, and the verdict is echo-exact."""
    command = f"{shlex.quote(sys.executable)} {PROGRAMS / 'servers' / 'crlf_drop.py'} --port {{port}}"
    checker = Checker(ServerProcess(command))
    checker.start()
    try:
        outcome = checker.check(Script((Connect(0), Send(0, Payload.of(b"a\r\nb")), Read(0), Close(0))))
    finally:
        checker.stop()
    assert [v.property_name for v in outcome.violations] == ["echo-exact"], outcome.violations
    assert "a read ended early: the echo had already diverged" in outcome.evidence
    assert not outcome.transcript.stalled  # not waited out as a stall (stall_timeout, 1 s)
