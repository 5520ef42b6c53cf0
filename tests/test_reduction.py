"""The script reducer, without a server: candidates are valid, cuts keep what a predicate needs."""

from __future__ import annotations

import time

from hypothesis import given, settings

from harness.model.reduction import candidates, renumbered
from harness.model.script import (
    BurstConnect,
    Close,
    Connect,
    Payload,
    Read,
    ReadToEof,
    Script,
    Send,
    ShutdownWrite,
)
from harness.run.reduce import reduce
from strategies import scripts

FOREVER = float("inf")


@settings(max_examples=40)
@given(script=scripts(max_connections=4, max_steps=16))
def test_every_candidate_is_a_valid_smaller_or_plainer_script_with_a_client(script: Script) -> None:
    for candidate in candidates(script):
        assert len(candidate) <= len(script)
        assert candidate.connection_ids or any(isinstance(s, BurstConnect) for s in candidate)
        Script.from_json(candidate.to_json())  # valid, and survives the reproducer's round trip


def test_a_half_close_bug_is_cut_down_to_its_four_steps() -> None:
    """The seed server's half-close bug needs a connection, a byte, SHUT_WR and a read to EOF."""
    script = Script(
        (
            Connect(0, rcvbuf=2048),
            Connect(1),
            Send(1, Payload(b"ab\r\n", size=5000, seed=1), fragments=(100, 200), delay_ms=3),
            Send(0, Payload(size=70000, seed=2)),
            Read(1, chunk=100, pace_ms=2),
            BurstConnect(count=40, size=900),
            Read(0),
            ShutdownWrite(0),
            ReadToEof(0, chunk=512),
            Close(1),
        )
    )

    def fails(candidate: Script) -> bool:
        steps = candidate.steps
        shut = {s.conn for s in steps if isinstance(s, ShutdownWrite)}
        sent = {s.conn for s in steps if isinstance(s, Send) and len(s.payload)}
        eof = {s.conn for s in steps if isinstance(s, ReadToEof)}
        return bool(shut & sent & eof)

    smallest = renumbered(reduce(script, fails, FOREVER))
    assert smallest.steps == (
        Connect(0),
        Send(0, Payload(size=1, seed=2)),
        ShutdownWrite(0),
        ReadToEof(0),
    )


def test_a_byte_dependent_bug_keeps_only_the_bytes_that_matter() -> None:
    script = Script(
        (Connect(0), Send(0, Payload(b"xx\x00\xff\r\nyy", size=48_000, seed=3)), Read(0), Close(0))
    )

    def fails(candidate: Script) -> bool:
        return any(isinstance(s, Send) and b"\r\n" in s.payload.literal for s in candidate.steps)

    smallest = reduce(script, fails, FOREVER)
    assert smallest.steps == (Connect(0), Send(0, Payload(b"\r\n")))


def test_the_reducer_stops_at_its_deadline() -> None:
    script = Script((Connect(0), Send(0, Payload(size=1000)), Read(0), Close(0)))
    calls = []

    def fails(candidate: Script) -> bool:
        calls.append(candidate)
        return True

    assert reduce(script, fails, time.monotonic() - 1) == script
    assert calls == []


def test_renumbering_closes_the_gaps_left_by_cuts() -> None:
    script = Script((Connect(3), Connect(7), Send(7, Payload(b"a")), Close(3)))
    assert renumbered(script).steps == (Connect(0), Connect(1), Send(1, Payload(b"a")), Close(0))


def test_renumbering_drops_fragment_sizes_past_the_payload() -> None:
    script = Script((Connect(0), Send(0, Payload(b"abcdef"), fragments=(2, 3, 48119, 48119))))
    assert renumbered(script).steps[1] == Send(0, Payload(b"abcdef"), fragments=(2, 3))


def test_a_long_script_is_halved_first_with_what_its_cut_connections_did() -> None:
    # 40 steps, the bug in the last four: halves and quarters go first (each try costs the
    # server an example), and a cut that takes a connect takes that connection's later steps.
    noise = tuple(
        step
        for conn in range(9)
        for step in (Connect(conn + 1), Send(conn + 1, Payload(b"x")), Read(conn + 1), Close(conn + 1))
    )
    bug = (Connect(0), Send(0, Payload(b"y")), ShutdownWrite(0), ReadToEof(0))
    script = Script((Connect(0), *noise[:-4], *bug[1:], *noise[-4:]))
    first = next(iter(candidates(script)))
    # The first half went, and with it the later steps of connections 0 and 5 (opened there).
    assert first.steps == tuple(s for s in script.steps[20:] if getattr(s, "conn", None) not in (0, 5))
    tries = []

    def fails(candidate: Script) -> bool:
        tries.append(candidate)
        return all(step in candidate.steps for step in bug)

    assert reduce(script, fails, FOREVER).steps == bug
    assert len(tries) < 60


def test_a_cut_never_leaves_a_read_to_eof_without_the_half_close_it_waits_for() -> None:
    # A "fails" that any wait for EOF satisfies (as a stall judged on a server that owes no EOF
    # was): the reducer may drop everything else, never the client's own FIN.
    script = Script((Connect(0), Send(0, Payload(b"x")), ShutdownWrite(0), ReadToEof(0), Close(0)))

    def fails(candidate: Script) -> bool:
        return any(isinstance(step, ReadToEof) for step in candidate.steps)

    assert reduce(script, fails, FOREVER).steps == (Connect(0), ShutdownWrite(0), ReadToEof(0))
