"""The script model: JSON round trips, validation, deterministic payloads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given

from harness.model.errors import ScriptError
from harness.model.script import (
    AbortConnect,
    BurstConnect,
    Close,
    Connect,
    Flood,
    Pause,
    Payload,
    Read,
    ReadToEof,
    Reset,
    Script,
    Send,
    ShutdownWrite,
    pattern_bytes,
)
from strategies import scripts


def every_step_script() -> Script:
    return Script(
        (
            Connect(0, rcvbuf=4096, nodelay=False),
            Send(0, Payload.of(bytes(range(256))), fragments=(1, 2, 3), delay_ms=1),
            Send(0, Payload.pattern(5000, 3)),
            Read(0, nbytes=10, chunk=3, pace_ms=1),
            Flood(0, 70000, seed=2),
            Pause(5),
            AbortConnect(1),
            BurstConnect(3, size=8),
            Connect(2),
            Reset(2),
            ShutdownWrite(0),
            ReadToEof(0),
            Close(0),
        )
    )


def test_every_step_type_round_trips_through_json() -> None:
    script = every_step_script()
    text = script.dumps()
    assert Script.loads(text) == script
    assert json.loads(text)["version"] == 1


@given(scripts())
def test_drawn_scripts_round_trip(script: Script) -> None:
    assert Script.from_json(json.loads(json.dumps(script.to_json()))) == script


def test_pattern_bytes_are_deterministic_and_differ_per_connection() -> None:
    assert pattern_bytes(1000, 1, 0) == pattern_bytes(1000, 1, 0)
    assert pattern_bytes(1000, 1, 0) != pattern_bytes(1000, 1, 1)
    assert pattern_bytes(1000, 1, 0) != pattern_bytes(1000, 2, 0)
    assert len(Payload.pattern(12345, 0).materialize(3)) == 12345


@pytest.mark.parametrize(
    ("steps", "complaint"),
    [
        ((Send(0, Payload.of(b"x")),), "connection 0 is not open"),
        ((Connect(0), Connect(0)), "used twice"),
        ((Connect(0), Close(0), Connect(0)), "used twice"),
        ((Connect(0), Close(0), Send(0, Payload.of(b"x"))), "not open"),
        ((Connect(0), ShutdownWrite(0), Send(0, Payload.of(b"x"))), "half-closed already"),
        # EOF is owed only after the client's FIN: a reducer once cut the shutdown_wr away, and
        # the wait for an EOF no server owes was judged a stall on every server (a false alarm).
        ((Connect(0), Send(0, Payload.of(b"x")), ReadToEof(0)), "must be half-closed"),
        ((Connect(0), Send(0, Payload.of(b"xy"), fragments=(0,))), "fragment sizes"),
        ((Connect(0), Flood(0, 0)), "flood size"),
        ((Pause(-1),), "ms must be"),
        ((BurstConnect(0),), "count and size"),
        ((Connect(0, rcvbuf=0),), "rcvbuf"),
    ],
)
def test_invalid_scripts_are_refused_with_the_step_named(steps: tuple, complaint: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ScriptError, match=complaint):
        Script(steps)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("not json", "not a JSON script"),
        ('{"version": 99, "steps": []}', "version 99 is not supported"),
        ('{"version": 1}', "list of 'steps'"),
        ('{"version": 1, "steps": [{"op": "teleport"}]}', "unknown step op 'teleport'"),
        ('{"version": 1, "steps": [{"op": "connect", "conn": 0, "colour": 1}]}', "bad 'connect' step"),
    ],
)
def test_malformed_json_gives_an_actionable_error(text: str, complaint: str) -> None:
    with pytest.raises(ScriptError, match=complaint):
        Script.loads(text)
