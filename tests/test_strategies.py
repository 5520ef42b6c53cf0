"""Fast, pure tests of the strategies: validity, JSON round trips, argument checks, shrinking.

Nothing here opens a socket. The shrinking tests use :func:`hypothesis.find`
to ask for the simplest example with some property and pin what it is: that
is what a user sees as a reproducer, so it is part of the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from harness.model.script import (
    AbortConnect,
    BurstConnect,
    Close,
    Connect,
    Flood,
    InjectReset,
    Pause,
    Payload,
    Read,
    ReadToEof,
    Reset,
    Script,
    Send,
    ShutdownWrite,
    Step,
)
from strategies import (
    DEFAULT_FLOOD_BUFFER_BYTES,
    LITERAL_MAX_SIZE,
    Fragmentation,
    LifecycleKind,
    echo_path_capacity,
    floods,
    fragmentations,
    lifecycles,
    min_flood_size,
    payload_sizes,
    payloads,
    scripts,
    sends,
    short_scripts,
    slow_readers,
)
from strategies.fragments import ETHERNET_MSS, MAX_TOTAL_DELAY_MS
from strategies.lifecycles import MAX_CHUNKED_READS, MAX_PACE_MS, SLOW_RCVBUF_MAX, SLOW_RCVBUF_MIN
from strategies.scripts import MAX_FLOODS_PER_SCRIPT

FAST = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# No explain phase: it re-runs every shrunk example many times over and adds nothing to find().
# Derandomized: what a shrink reaches must not depend on what ran before in the same process (one
# full-suite run of 500 saw a fragmentation shrink to a random cut holding one 1448-byte write).
SHRINK = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


#: Most shrinking tests start from smaller scripts: the result is the same, the search shorter.
SMALL = scripts(max_connections=4, max_steps=12)


def minimal(
    strategy: st.SearchStrategy[Any], condition: Callable[[Any], bool] = lambda _: True, *, tries: int = 300
) -> Any:
    return find(strategy, condition, settings=settings(SHRINK, max_examples=tries))


# -- invariants of drawn scripts --------------------------------------------------


def check_owed(steps: tuple[Step, ...]) -> None:
    """A partial Read never asks for more echo than Sends (not floods) have certainly caused,
    and a chunked read of what may be owed takes at most MAX_CHUNKED_READS recv calls."""
    owed: dict[int, int] = {}  # exactly owed, from Sends
    owed_max: dict[int, int] = {}  # at most owed, floods included
    for step in steps:
        if isinstance(step, Send | Flood):
            size = len(step.payload) if isinstance(step, Send) else step.size
            owed_max[step.conn] = owed_max.get(step.conn, 0) + size
            if isinstance(step, Send):
                owed[step.conn] = owed.get(step.conn, 0) + size
                assert sum(step.fragments) < len(step.payload) or not step.fragments
        if isinstance(step, Read | ReadToEof):
            amount = owed_max.get(step.conn, 0)
            if isinstance(step, Read) and step.nbytes is not None:
                assert 1 <= step.nbytes <= owed.get(step.conn, 0), step
                amount = step.nbytes
                owed[step.conn] -= step.nbytes
                owed_max[step.conn] -= step.nbytes
            else:
                owed[step.conn] = owed_max[step.conn] = 0
            if step.chunk is not None:
                assert step.chunk >= 1 and 0 <= step.pace_ms <= MAX_PACE_MS
                assert step.chunk * MAX_CHUNKED_READS >= amount, step


def check_script(script: Script) -> None:
    assert Script.from_json(script.to_json()) == script
    assert Script.loads(script.dumps()) == script
    check_owed(script.steps)
    # Ids are numbered in the order connections open.
    assert list(script.connection_ids) == list(range(len(script.connection_ids)))


@FAST
@given(scripts())
def test_scripts_are_valid_and_round_trip(script: Script) -> None:
    check_script(script)
    assert 1 <= len(script) <= 40
    assert 1 <= len(script.connection_ids) <= 8
    assert sum(isinstance(s, Flood) for s in script) <= MAX_FLOODS_PER_SCRIPT


@FAST
@given(short_scripts())
def test_short_scripts_have_no_floods_or_delays(script: Script) -> None:
    check_script(script)
    assert len(script) <= 12
    for step in script:
        assert not isinstance(step, Flood | Pause)
        assert getattr(step, "delay_ms", 0) == 0 and getattr(step, "pace_ms", 0) == 0
        assert not (isinstance(step, Send) and len(step.payload) > 64 * 1024)
        # No small windows without delays: they cost seconds of zero-window probing.
        assert not (isinstance(step, Connect) and step.rcvbuf is not None)


@FAST
@given(
    scripts(
        max_connections=4,
        max_steps=15,
        allow_floods=False,
        allow_bursts=False,
        allow_resets=False,
        allow_delays=False,
    )
)
def test_scripts_respect_every_switch(script: Script) -> None:
    check_script(script)
    assert len(script) <= 15 and len(script.connection_ids) <= 4
    for step in script:
        assert not isinstance(step, Flood | BurstConnect | Reset | AbortConnect | Pause)
        assert getattr(step, "delay_ms", 0) == 0 and getattr(step, "pace_ms", 0) == 0
    # Without resets no close may leave echo unread: every Close follows a read of all that is owed.
    owed: dict[int, int] = {}
    for step in script:
        if isinstance(step, Send):
            owed[step.conn] = owed.get(step.conn, 0) + len(step.payload)
        elif isinstance(step, ReadToEof) or (isinstance(step, Read) and step.nbytes is None):
            owed[step.conn] = 0
        elif isinstance(step, Read):
            owed[step.conn] = max(0, owed.get(step.conn, 0) - (step.nbytes or 0))
        elif isinstance(step, Close):
            assert not owed.get(step.conn, 0), script


@FAST
@given(scripts(max_connections=1, max_steps=1))
def test_scripts_tiny_budget(script: Script) -> None:
    assert len(script) == 1 and isinstance(script.steps[0], Connect | AbortConnect)


@FAST
@given(st.data())
def test_lifecycles_are_valid_alone_and_end_as_their_kind(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(list(LifecycleKind)))
    steps = data.draw(lifecycles(3, kinds=[kind], max_steps=8))
    Script(steps)
    assert len(steps) <= 8
    assert all(getattr(s, "conn", 3) == 3 for s in steps)
    last = type(steps[-1])
    expected: dict[LifecycleKind, tuple[type[Step], ...]] = {
        LifecycleKind.CLOSE: (Close,),
        LifecycleKind.GRACEFUL_CLOSE: (Close,),
        LifecycleKind.HALF_CLOSE: (Close,),
        LifecycleKind.RESET: (Reset,),
        LifecycleKind.RESET_DRAINED: (Reset,),
        LifecycleKind.RESET_PENDING: (Reset,),
        LifecycleKind.ABORT_CONNECT: (AbortConnect,),
        LifecycleKind.IDLE: (Connect, Send, Read, Pause, Flood),
        LifecycleKind.HALF_CLOSE_PENDING: (Close,),
        LifecycleKind.CLOSE_PENDING: (Close,),
        LifecycleKind.INJECTED_RESET_TO_SERVER: (InjectReset,),
        LifecycleKind.INJECTED_RESET_TO_CLIENT: (InjectReset,),
    }
    assert issubclass(last, expected[kind])
    if kind is LifecycleKind.HALF_CLOSE_PENDING:
        assert [type(s) for s in steps[-4:]] == [Flood, ShutdownWrite, ReadToEof, Close]
    if kind is LifecycleKind.CLOSE_PENDING:
        assert [type(s) for s in steps[-2:]] == [Flood, Close]
    if kind is LifecycleKind.INJECTED_RESET_TO_CLIENT:
        # The server must have output pending, or it would never meet the forged RST.
        assert isinstance(steps[-2], Flood)
    if kind is LifecycleKind.RESET_PENDING:
        assert isinstance(steps[-2], Send) and len(steps[-2].payload) >= 1
    if kind is LifecycleKind.HALF_CLOSE:
        assert [type(s) for s in steps[-3:]] == [ShutdownWrite, ReadToEof, Close]


@FAST
@given(slow_readers(2))
def test_slow_readers(steps: tuple[Step, ...]) -> None:
    Script(steps)
    connect = steps[0]
    assert isinstance(connect, Connect) and connect.rcvbuf is not None
    assert SLOW_RCVBUF_MIN <= connect.rcvbuf <= SLOW_RCVBUF_MAX
    reads = [s for s in steps if isinstance(s, Read)]
    assert reads and all(r.chunk is not None and 1 <= r.pace_ms <= MAX_PACE_MS for r in reads)
    check_owed(steps)


@FAST
@given(sends(1, min_size=1, max_size=5000))
def test_sends(send: Send) -> None:
    assert send.conn == 1 and 1 <= len(send.payload) <= 5000
    assert sum(send.fragments) < len(send.payload)


# -- payloads, fragmentations, floods ------------------------------------------------


@FAST
@given(st.data())
def test_payloads_respect_bounds(data: st.DataObject) -> None:
    low = data.draw(st.integers(0, 3 * LITERAL_MAX_SIZE))
    high = data.draw(st.integers(low, 8 * 1024 * 1024))
    payload = data.draw(payloads(low, high))
    assert low <= len(payload) <= high
    assert bool(payload.literal) or payload.size or len(payload) == 0
    assert (len(payload) <= LITERAL_MAX_SIZE) == (payload.size == 0)
    assert Payload.from_json(payload.to_json()) == payload


@FAST
@given(payloads(allow_generated=False, max_size=LITERAL_MAX_SIZE))
def test_literal_only_payloads(payload: Payload) -> None:
    assert payload.size == 0 and len(payload.literal) <= LITERAL_MAX_SIZE


@FAST
@given(st.data())
def test_fragmentations_cut_within_the_payload(data: st.DataObject) -> None:
    size = data.draw(st.one_of(st.integers(0, 100), st.integers(0, 4 * 1024 * 1024)))
    max_writes = data.draw(st.integers(1, 64))
    cut = data.draw(fragmentations(size, max_writes=max_writes))
    assert isinstance(cut, Fragmentation)
    assert all(f >= 1 for f in cut.fragments)
    assert cut.writes <= max_writes
    assert sum(cut.fragments) < size or not cut.fragments  # the last write is never empty
    assert cut.delay_ms * len(cut.fragments) <= MAX_TOTAL_DELAY_MS
    assert cut.delay_ms == 0 or cut.fragments


@FAST
@given(fragmentations(1000, allow_delays=False))
def test_fragmentations_without_delays(cut: Fragmentation) -> None:
    assert cut.delay_ms == 0


@FAST
@given(floods(5))
def test_floods_exceed_the_echo_path(flood: Flood) -> None:
    assert flood.conn == 5
    low = min_flood_size(DEFAULT_FLOOD_BUFFER_BYTES)
    assert DEFAULT_FLOOD_BUFFER_BYTES < low <= flood.size <= 8 * 1024 * 1024


def test_echo_path_capacity_defaults_to_this_hosts_loopback() -> None:
    # tcp_wmem max 4 MiB + tcp_rmem default 128 KiB; measured 4,243,968 bytes before EAGAIN.
    assert DEFAULT_FLOOD_BUFFER_BYTES == echo_path_capacity() == 4 * 1024 * 1024 + 128 * 1024
    assert echo_path_capacity((4096, 16384, 1 << 20), (4096, 65536, 1 << 22)) == (1 << 20) + 65536


@FAST
@given(floods(buffer_bytes=64 * 1024, max_size=100_000))
def test_floods_follow_buffer_bytes(flood: Flood) -> None:
    assert 80 * 1024 <= flood.size <= 100_000


# -- argument validation ---------------------------------------------------------


BAD_CALLS: list[tuple[str, Callable[[], object]]] = [
    ("min_size=-1", lambda: payloads(min_size=-1)),
    ("max_size=3", lambda: payloads(min_size=5, max_size=3)),
    ("max_size='big'", lambda: payloads(max_size="big")),  # type: ignore[arg-type]
    ("allow_generated=1", lambda: payloads(allow_generated=1)),  # type: ignore[arg-type]
    ("max_size=100000", lambda: payloads(max_size=100_000, allow_generated=False)),
    ("max_size=1099511627776", lambda: payloads(max_size=1 << 40)),
    ("max_size=5", lambda: payload_sizes(10, 5)),
    ("size=-1", lambda: fragmentations(-1)),
    ("size=True", lambda: fragmentations(True)),
    ("max_writes=0", lambda: fragmentations(10, max_writes=0)),
    ("max_delay_ms=-1", lambda: fragmentations(10, max_delay_ms=-1)),
    ("socket_buffer=0", lambda: fragmentations(10, socket_buffer=0)),
    ("buffer_bytes=0", lambda: floods(buffer_bytes=0)),
    ("conn=-1", lambda: floods(-1)),
    ("max_size=1000", lambda: floods(buffer_bytes=1 << 20, max_size=1000)),
    ("kinds=[]", lambda: lifecycles(kinds=[])),
    ("kinds='idle'", lambda: lifecycles(kinds="idle")),  # type: ignore[arg-type]
    ("kinds=", lambda: lifecycles(kinds=[LifecycleKind.RESET], allow_resets=False)),
    ("max_steps=2", lambda: lifecycles(kinds=[LifecycleKind.HALF_CLOSE], max_steps=2)),
    ("max_actions=-1", lambda: lifecycles(max_actions=-1)),
    ("max_payload_size=0", lambda: slow_readers(max_payload_size=0)),
    ("allow_delays=None", lambda: sends(allow_delays=None)),  # type: ignore[arg-type]
    ("max_connections=0", lambda: scripts(max_connections=0)),
    ("max_steps=0", lambda: scripts(max_steps=0)),
    ("allow_bursts='yes'", lambda: scripts(allow_bursts="yes")),  # type: ignore[arg-type]
    ("max_burst_count=0", lambda: scripts(max_burst_count=0)),
    ("flood_buffer_bytes=-5", lambda: scripts(flood_buffer_bytes=-5)),
    ("max_connections=0", lambda: short_scripts(max_connections=0)),
]


@pytest.mark.parametrize(("needle", "call"), BAD_CALLS, ids=[needle for needle, _ in BAD_CALLS])
def test_bad_arguments_raise_at_once_naming_the_argument(needle: str, call: Callable[[], object]) -> None:
    # At the call, not at the first draw: these strategies are never drawn from.
    with pytest.raises(InvalidArgument, match=needle.replace("[", r"\[").replace("]", r"\]")):
        call()


# -- shrinking -------------------------------------------------------------------


def test_minimal_script_is_one_connect() -> None:
    assert minimal(SMALL).steps == (Connect(0),)


def test_minimal_script_with_a_reset_is_connect_then_reset() -> None:
    script = minimal(scripts(), lambda s: any(isinstance(step, Reset) for step in s))
    assert script.steps == (Connect(0), Reset(0))


def test_minimal_script_with_three_connections_is_three_connects() -> None:
    script = minimal(scripts(), lambda s: len(s.connection_ids) >= 3)
    assert script.steps == (Connect(0), Connect(1), Connect(2))


def test_minimal_fd_reuse_is_close_then_connect() -> None:
    def reuses(script: Script) -> bool:
        closed = False
        for step in script:
            closed = closed or isinstance(step, Close | Reset)
            if closed and isinstance(step, Connect):
                return True
        return False

    assert minimal(SMALL, reuses).steps == (Connect(0), Close(0), Connect(1))


def test_minimal_half_close() -> None:
    script = minimal(SMALL, lambda s: any(isinstance(step, ShutdownWrite) for step in s))
    assert script.steps == (Connect(0), ShutdownWrite(0), ReadToEof(0), Close(0))


def test_minimal_reset_with_output_pending() -> None:
    steps = minimal(lifecycles(kinds=[LifecycleKind.RESET_PENDING]))
    assert steps == (Connect(0), Send(0, Payload.pattern(1, 0)), Reset(0))


def test_minimal_flood_is_at_its_minimal_size() -> None:
    assert minimal(floods()) == Flood(0, min_flood_size(DEFAULT_FLOOD_BUFFER_BYTES), 0)


def test_minimal_script_with_a_flood() -> None:
    script = minimal(scripts(), lambda s: any(isinstance(step, Flood) for step in s))
    floods = [step for step in script if isinstance(step, Flood)]
    # (Connect, Flood), or a flooding ending such as (Connect, Flood, Close): one connection, one
    # flood of the minimal size.
    assert floods == [Flood(0, min_flood_size(DEFAULT_FLOOD_BUFFER_BYTES), 0)]
    assert script.connection_ids == (0,)
    assert len(script) <= 6, script


def test_minimal_burst() -> None:
    script = minimal(SMALL, lambda s: any(isinstance(step, BurstConnect) for step in s), tries=3000)
    assert script.steps == (Connect(0), BurstConnect(count=1, size=1))


def test_payloads_shrink_to_empty_and_sizes_shrink_small() -> None:
    assert minimal(payloads()) == Payload()
    assert minimal(payloads(), lambda p: len(p) > 10_000) == Payload.pattern(10_001, 0)
    assert minimal(payloads(), lambda p: p.size > 0) == Payload.pattern(LITERAL_MAX_SIZE + 1, 0)
    assert minimal(payloads(), lambda p: any(b >= 0x80 for b in p.literal)) == Payload.of(b"\x80")


def test_big_sends_shrink_to_the_threshold() -> None:
    script = minimal(SMALL, lambda s: any(isinstance(x, Send) and len(x.payload) > 100_000 for x in s))
    sends = [x for x in script if isinstance(x, Send)]
    # Usually exactly (Connect(0), Send(0, pattern(100_001, 0))); the size is what this pins: how
    # many other steps survive shrinking varies from run to run under load.
    assert [len(x.payload) for x in sends] == [100_001], script
    assert script.steps[0] == Connect(0), script


def test_sends_on_power_of_two_edges_are_drawn() -> None:
    edges = {4095, 4096, 4097}
    script = minimal(
        short_scripts(), lambda s: any(isinstance(x, Send) and len(x.payload) in edges for x in s)
    )
    assert [len(x.payload) for x in script if isinstance(x, Send)] == [4095], script


def test_connection_variants_are_drawn_and_shrink_to_one_each() -> None:
    # Nagle's algorithm on (TCP_NODELAY off): alone, or beside another connection. (Not "on
    # connection 1": ids follow first appearance, and a shuffled script may need two changes at
    # once, delete a thread and unshuffle, to keep the Nagle one second.)
    def nagle(s: Script) -> bool:
        return any(isinstance(x, Connect) and not x.nodelay for x in s)

    assert minimal(SMALL, nagle).steps == (Connect(0, nodelay=False),)
    two = minimal(SMALL, lambda s: nagle(s) and len(s.connection_ids) >= 2)
    assert two.steps == (Connect(0), Connect(1, nodelay=False)), two
    # A small receive window only where delays are allowed (see short_scripts).
    slow = minimal(scripts(), lambda s: any(isinstance(x, Connect) and x.rcvbuf for x in s))
    assert slow.steps == (Connect(0, rcvbuf=SLOW_RCVBUF_MIN),), slow


def test_interleavings_shrink_to_the_fewest_steps_that_overlap() -> None:
    def overlapping(script: Script) -> bool:
        # Connection 1 opens while connection 0 still has steps to come.
        steps = list(script)
        opens = [i for i, x in enumerate(steps) if isinstance(x, Connect) and x.conn == 1]
        return bool(opens) and any(getattr(x, "conn", None) == 0 for x in steps[opens[0] :])

    script = minimal(SMALL, overlapping)
    # Connect, Connect, then one step of connection 0 (a Close, a Reset or an empty Send).
    assert script.steps[:2] == (Connect(0), Connect(1)), script
    assert len(script) == 3 and script.steps[2].conn == 0, script


def test_fragmentations_shrink_to_one_write() -> None:
    assert minimal(fragmentations(100_000)) == Fragmentation()
    assert minimal(fragmentations(100), lambda f: f.writes > 1) == Fragmentation((1,))
    # The cut a delay first appeared with may stay (switching cuts re-reads the choices), the delay does not.
    assert minimal(fragmentations(100_000), lambda f: f.delay_ms > 0).delay_ms == 1
    mss = minimal(fragmentations(100_000), lambda f: ETHERNET_MSS in f.fragments)
    assert set(mss.fragments) == {ETHERNET_MSS}


@FAST
@given(scripts())
def test_no_forged_packets_unless_asked_for(script: Script) -> None:
    assert not any(isinstance(step, InjectReset) for step in script)


def test_injection_shrinks_to_one_forged_reset() -> None:
    script = minimal(
        scripts(allow_injection=True), lambda s: any(isinstance(x, InjectReset) for x in s), tries=3000
    )
    # Usually (Connect(0), InjectReset(0, "server")); shrinking is not always that thorough.
    assert script.steps[0] == Connect(0)
    assert [type(s) for s in script].count(InjectReset) == 1, script
    assert len(script.connection_ids) <= 2, script
