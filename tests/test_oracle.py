"""The echo oracle, alone: pure logic, tested exhaustively with Hypothesis and no sockets.

As in h11's test_io, the verdict must not depend on how TCP happened to cut
the stream: every test feeds the same bytes in segments that Hypothesis
chooses, and compares with feeding them whole.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from harness.model.oracle import (
    CROSSTALK_PROBE,
    ECHO_COMPLETE,
    ECHO_EXACT,
    HALF_CLOSE,
    NO_CROSSTALK,
    EchoOracle,
    Problem,
)


@st.composite
def segmentations(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at points Hypothesis chooses (shrinking towards no cut)."""
    if not data:
        return []
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=min(len(data), 20))))
    bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def feed(oracle: EchoOracle, conn: int, pieces: list[bytes]) -> None:
    for piece in pieces:
        oracle.received(conn, piece)


def verdicts(sent: dict[int, bytes], received: dict[int, list[bytes]]) -> list[Problem]:
    oracle = EchoOracle()
    for conn, data in sent.items():
        oracle.opened(conn)
        oracle.sent(conn, data)
    for conn, pieces in received.items():
        feed(oracle, conn, pieces)
    return oracle.problems()


@given(st.data(), st.binary(max_size=300))
def test_a_faithful_echo_has_no_problem_however_it_is_cut(data: st.DataObject, payload: bytes) -> None:
    pieces = data.draw(segmentations(payload))
    oracle = EchoOracle()
    oracle.opened(0)
    oracle.sent(0, payload)
    feed(oracle, 0, pieces)
    assert oracle.problems() == []
    assert oracle.owed(0) == 0
    assert oracle.is_prefix(0)


@given(st.data(), st.binary(min_size=1, max_size=200), st.integers(0, 199))
def test_a_prefix_is_fine_and_the_rest_is_owed(data: st.DataObject, payload: bytes, cut: int) -> None:
    cut = min(cut, len(payload))
    oracle = EchoOracle()
    oracle.opened(0)
    oracle.sent(0, payload)
    feed(oracle, 0, data.draw(segmentations(payload[:cut])))
    assert oracle.problem(0) is None
    assert oracle.owed(0) == len(payload) - cut


@given(st.data(), st.binary(min_size=1, max_size=200), st.integers(0, 199), st.integers(1, 255))
def test_a_changed_byte_breaks_echo_exact_at_its_offset(
    data: st.DataObject, payload: bytes, where: int, delta: int
) -> None:
    where = where % len(payload)
    wrong = bytearray(payload)
    wrong[where] = (wrong[where] + delta) % 256
    whole = verdicts({0: payload}, {0: [bytes(wrong)]})
    cut = verdicts({0: payload}, {0: data.draw(segmentations(bytes(wrong)))})
    assert [p.property_name for p in whole] == [ECHO_EXACT]
    assert f"byte {where} differs" in whole[0].message
    assert cut == whole


@given(st.data(), st.binary(max_size=100), st.binary(min_size=1, max_size=50))
def test_bytes_beyond_what_was_sent_break_echo_exact(
    data: st.DataObject, payload: bytes, extra: bytes
) -> None:
    received = payload + extra
    problems = verdicts({0: payload}, {0: data.draw(segmentations(received))})
    assert [p.property_name for p in problems] == [ECHO_EXACT]
    assert f"beyond the {len(payload)} sent, from offset {len(payload)}" in problems[0].message


@given(st.data(), st.binary(min_size=CROSSTALK_PROBE, max_size=200))
def test_another_connections_bytes_are_crosstalk_however_they_are_cut(
    data: st.DataObject, other: bytes
) -> None:
    mine = b"\x00" * 10 + bytes(range(1, 200))
    # Connection 0 receives its own first 10 bytes, then bytes connection 1 sent.
    received = mine[:10] + other
    sent = {0: mine, 1: other}
    whole = verdicts(sent, {0: [received]})
    cut = verdicts(sent, {0: data.draw(segmentations(received))})
    if other[:1] == mine[10:11]:
        return  # the first foreign byte happens to be right; covered by the cases that differ
    assert [p.property_name for p in whole] == [NO_CROSSTALK]
    assert cut == whole


def test_a_short_foreign_run_is_judged_at_eof() -> None:
    oracle = EchoOracle()
    for conn in (0, 1):
        oracle.opened(conn)
    oracle.sent(0, b"aaaaaaaa")
    oracle.sent(1, b"WXYZ")
    oracle.received(0, b"WXYZ")
    oracle.eof(0)
    assert [p.property_name for p in oracle.problems()] == [NO_CROSSTALK]


def test_eof_with_bytes_owed_breaks_echo_complete() -> None:
    oracle = EchoOracle()
    oracle.opened(0)
    oracle.sent(0, b"hello")
    oracle.received(0, b"he")
    oracle.eof(0)
    (problem,) = oracle.problems()
    assert problem.property_name == ECHO_COMPLETE
    assert "3 of 5 bytes still owed" in problem.message


def test_eof_with_bytes_owed_after_half_close_breaks_half_close() -> None:
    oracle = EchoOracle()
    oracle.opened(0)
    oracle.sent(0, b"hello")
    oracle.shut_write(0)
    oracle.eof(0)
    assert [p.property_name for p in oracle.problems()] == [HALF_CLOSE]


def test_a_server_reset_after_half_close_breaks_half_close_even_with_nothing_owed() -> None:
    oracle = EchoOracle()
    oracle.opened(0)
    oracle.sent(0, b"hi")
    oracle.received(0, b"hi")
    oracle.shut_write(0)
    oracle.reset(0)
    (problem,) = oracle.problems()
    assert problem.property_name == HALF_CLOSE
    assert "instead of echoing and closing with FIN" in problem.message


def test_after_the_client_goes_nothing_is_owed_to_it() -> None:
    oracle = EchoOracle()
    oracle.opened(0)
    oracle.sent(0, b"hello")
    oracle.client_gone(0)
    oracle.reset(0)
    oracle.eof(0)
    assert oracle.problems() == []


def test_the_first_problem_of_a_connection_stays_the_one_reported() -> None:
    oracle = EchoOracle()
    oracle.opened(0)
    oracle.sent(0, b"abcdef")
    oracle.received(0, b"abX")
    oracle.eof(0)
    (problem,) = oracle.problems()
    assert problem.property_name == ECHO_EXACT
    assert "byte 2 differs" in problem.message


def test_an_unknown_connection_is_a_clear_error() -> None:
    oracle = EchoOracle()
    try:
        oracle.sent(7, b"x")
    except KeyError as exc:
        assert "connection 7 was never opened" in str(exc)
    else:
        raise AssertionError("sending on an unopened connection must fail")
