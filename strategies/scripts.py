"""Whole client scripts: :func:`scripts` and :func:`short_scripts`.

A script is drawn as *threads* and then interleaved:

1. one to ``max_connections`` connection lifecycles (:mod:`strategies.lifecycles`),
   each valid on its own, so any interleaving of them is a valid script;
2. now and then a BurstConnect, a thread of one step;
3. an :class:`Interleaving`: round robin, or seeded switches that mostly
   carry on with the current thread. Its shrink target is SEQUENTIAL: the
   threads one after the other, so connection 0 closes before connection 1
   opens and the server hands the new connection the file descriptor it just
   freed, which is exactly where stale per-fd state in a server shows up.

Choices are coarse on purpose: Hypothesis spends tens of microseconds per
choice, and a short script is checked in about two milliseconds, so a script
is drawn in few choices (a size per payload, never its bytes; a count and a
seed for random cuts; one choice for the interleaving) and each of them
shrinks towards the simplest script.

Connection ids are then renumbered in the order the connections open, so a
script reads 0, 1, 2 ... from the top whatever the interleaving.

Shrinking removes whole threads (a connection and all its steps), then steps
inside a lifecycle, then bytes; every intermediate script is valid by
construction, never filtered. Connections that a script leaves open are
closed by the executor at the end, after reading what they are owed.
"""

from __future__ import annotations

import enum
import functools
import random
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from harness.model.script import BurstConnect, Flood, Pause, Script, Step
from strategies._cache import integers, sampled_from, unwrapped
from strategies._validation import check_bool, check_integer
from strategies.floods import DEFAULT_FLOOD_BUFFER_BYTES
from strategies.lifecycles import (
    DEFAULT_FLOOD_PAST_BYTES,
    DEFAULT_MAX_ACTIONS,
    LifecycleKind,
    Limits,
    _lifecycles,
    check_limits,
    fitting_kinds,
)
from strategies.payloads import DEFAULT_MAX_PAYLOAD_SIZE, SEEDS, KiB

DEFAULT_MAX_CONNECTIONS = 8
DEFAULT_MAX_STEPS = 40
#: "Bursts of simultaneous connects": up to this many connections at once, past the 64 to 128 slots
#: (epoll_wait's maxevents, connection tables, listen backlogs) that servers size by constants.
DEFAULT_MAX_BURST_COUNT = 200
#: Each burst connection sends and reads back this many bytes at most: past the echo path of the
#: network lab (about 24 KiB), so a wide burst leaves output pending for every connection at once.
MAX_BURST_SIZE = 64 * KiB
MAX_BURSTS_PER_SCRIPT = 2
#: Floods are the expensive steps; a script has at most this many.
MAX_FLOODS_PER_SCRIPT = 2
MAX_FLOODS_PER_LIFECYCLE = 2

SHORT_MAX_CONNECTIONS = 3
SHORT_MAX_STEPS = 12
SHORT_MAX_PAYLOAD_SIZE = 64 * KiB
SHORT_MAX_BURST_COUNT = 8


def scripts(
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_steps: int = DEFAULT_MAX_STEPS,
    allow_floods: bool = True,
    allow_bursts: bool = True,
    allow_resets: bool = True,
    allow_delays: bool = True,
    max_actions: int = DEFAULT_MAX_ACTIONS,
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    max_burst_count: int = DEFAULT_MAX_BURST_COUNT,
    flood_buffer_bytes: int = DEFAULT_FLOOD_BUFFER_BYTES,
    allow_injection: bool = False,
    flood_past_bytes: int = DEFAULT_FLOOD_PAST_BYTES,
) -> st.SearchStrategy[Script]:
    """Valid scripts of 1..``max_connections`` interleaved connections and at most ``max_steps`` steps.

    ``allow_floods``: Flood steps (at most :data:`MAX_FLOODS_PER_SCRIPT`),
    sized from ``flood_buffer_bytes`` (see :func:`strategies.floods.floods`);
    ``allow_bursts``: BurstConnect steps of up to ``max_burst_count``
    connections; ``allow_resets``: no RST from the client at all when False
    (no Reset, no AbortConnect, no close with unread echo); ``allow_delays``:
    Pause steps, pauses between fragments, paced reads, connections with a
    small SO_RCVBUF (slow readers). Shrinks towards one
    Connect. ``allow_injection``: connections may also end with an RST forged
    on the wire (InjectReset), toward the server or the client; the executor
    needs root for it (the network lab). ``flood_past_bytes``: one flood in
    six goes this much further (the memory bound a server may hold for a
    client that does not read; 0: never).
    """
    check_integer(max_connections, "max_connections", min_value=1)
    check_integer(max_steps, "max_steps", min_value=1)
    check_integer(max_burst_count, "max_burst_count", min_value=1)
    limits = check_limits(
        max_actions=max_actions,
        max_payload_size=max_payload_size,
        allow_floods=allow_floods,
        allow_resets=allow_resets,
        allow_delays=allow_delays,
        flood_buffer_bytes=flood_buffer_bytes,
        allow_injection=allow_injection,
        flood_past_bytes=flood_past_bytes,
    )
    check_bool(allow_bursts, "allow_bursts")

    return _scripts(limits, max_connections, max_steps, allow_bursts, max_burst_count)


@st.composite
def _scripts(
    draw: st.DrawFn,
    limits: Limits,
    max_connections: int,
    max_steps: int,
    allow_bursts: bool,
    max_burst_count: int,
) -> Script:
    threads = _draw_threads(draw, limits, max_connections, max_steps, allow_bursts, max_burst_count)
    return Script(_renumber(_interleave(draw, threads)))


def short_scripts(*, max_connections: int = SHORT_MAX_CONNECTIONS) -> st.SearchStrategy[Script]:
    """A quick mix: a few connections, small payloads and bursts, no deliberate delays and no floods."""
    return scripts(
        max_connections=max_connections,
        max_steps=SHORT_MAX_STEPS,
        allow_floods=False,
        allow_delays=False,
        max_payload_size=SHORT_MAX_PAYLOAD_SIZE,
        max_burst_count=SHORT_MAX_BURST_COUNT,
    )


#: What comes after a thread, in one choice: 0 or 1 ends the script (0 is the
#: shrink target), 7 is a burst of connects (one in eight: rare, and it shrinks
#: to a connection or to the end), anything else one more connection, with
#: Nagle's algorithm on for 5 and 6 (the connection's TCP_NODELAY, a choice
#: fewer per connection; it shrinks to TCP_NODELAY on). The first thread is a
#: connection whatever the value, Nagle's or not by the same rule.
_NEXT = integers(0, 7)
_LAST_END = 1
_NAGLE = range(5, 7)
_BURST = 7


# The same few (conn, limits, kinds, budget) come back in every script: one
# strategy object each (see strategies._cache).
@functools.lru_cache(maxsize=4096)
def _cached_lifecycles(
    conn: int, limits: Limits, kinds: tuple[LifecycleKind, ...], budget: int, may_flood: bool, nodelay: bool
) -> st.SearchStrategy[tuple[Step, ...]]:
    return unwrapped(_lifecycles(conn, limits, kinds, budget, may_flood, nodelay))


@dataclass(frozen=True)
class _Room:
    """What may still come in a script, at the start of a thread."""

    first: bool
    budget: int  # steps left
    connections: int  # opened so far: the next one's id
    can_connect: bool
    can_burst: bool
    may_flood: bool


@functools.lru_cache(maxsize=4096)
def _cached_thread(
    room: _Room, limits: Limits, kinds: tuple[LifecycleKind, ...], max_burst_count: int
) -> st.SearchStrategy[tuple[Step, ...]]:
    return unwrapped(_thread(room, limits, kinds, max_burst_count))


@st.composite
def _thread(
    draw: st.DrawFn, room: _Room, limits: Limits, kinds: tuple[LifecycleKind, ...], max_burst_count: int
) -> tuple[Step, ...]:
    """The what-next choice (see _NEXT) and what it opens: a lifecycle, a burst, or () for the end.

    One draw, so one span: the shrinker deletes a whole thread (choice and
    lifecycle) at once, and what follows keeps its meaning. As two sibling
    draws, a thread in the middle of a shuffled script could be deleted only
    by a two-span deletion, which the shrinker does not always try.
    """
    upcoming = draw(_NEXT)
    if (not room.first and upcoming <= _LAST_END) or not room.budget:
        return ()
    if not room.first and upcoming == _BURST:
        if not room.can_burst:
            return ()
        count = draw(integers(1, max_burst_count))
        size = draw(integers(1, MAX_BURST_SIZE))
        return (BurstConnect(count=count, size=size),)
    if not room.can_connect:
        return ()
    nodelay = upcoming not in _NAGLE
    return draw(_cached_lifecycles(room.connections, limits, kinds, room.budget, room.may_flood, nodelay))


def _draw_threads(
    draw: st.DrawFn,
    limits: Limits,
    max_connections: int,
    max_steps: int,
    allow_bursts: bool,
    max_burst_count: int,
) -> list[tuple[Step, ...]]:
    threads: list[tuple[Step, ...]] = []
    budget = max_steps
    floods = connections = bursts = 0
    kinds = limits.kinds()
    assert fitting_kinds(kinds, limits, 1), "a one-step lifecycle always fits"
    # One choice before every thread says what comes next (see _NEXT); the
    # first one's value only says TCP_NODELAY or not, a script opens at least
    # one connection. Deleting one thread, whichever it is, leaves the rest as
    # they were. The choice is drawn even where nothing more fits (no steps
    # left, every connection or burst used), and then ends the script: so a
    # script whose shrinking frees room draws no more choices than before.
    while True:
        # Once the script has its floods, later connections flood no more (their
        # flood choices turn into sends and plain endings); the budget shrinks
        # as lifecycles use it, and a lone Connect always fits. A lifecycle
        # floods at most twice (in its body, and in an ending such as
        # HALF_CLOSE_PENDING), so it may flood only while two more fit under the cap.
        room = _Room(
            first=not threads,
            budget=budget,
            connections=connections,
            can_connect=connections < max_connections,
            can_burst=allow_bursts and bursts < MAX_BURSTS_PER_SCRIPT,
            may_flood=floods + MAX_FLOODS_PER_LIFECYCLE <= MAX_FLOODS_PER_SCRIPT,
        )
        steps = draw(_cached_thread(room, limits, kinds, max_burst_count))
        if not steps:
            break
        threads.append(steps)
        budget -= len(steps)
        if isinstance(steps[0], BurstConnect):
            bursts += 1
        else:
            floods += sum(isinstance(step, Flood) for step in steps)
            connections += 1
    return threads


class Interleaving(enum.Enum):
    """How the threads of a script are merged, in shrink order."""

    #: One thread after the other: connection 0 closes before connection 1
    #: opens, so the server hands the new connection the fd it just freed.
    SEQUENTIAL = "sequential"
    #: One step of each thread in turn: every connection open at once, each
    #: step landing between two steps of every other connection.
    ROUND_ROBIN = "round-robin"
    #: Mostly carry on with the current thread, switching to a random one a
    #: step in four, with a drawn seed.
    SHUFFLED = "shuffled"


# Shuffled half the time; one choice (and a seed) per script instead of a
# choice per step, and the shrinker turns it into SEQUENTIAL.
_INTERLEAVINGS = sampled_from(
    (Interleaving.SEQUENTIAL, Interleaving.ROUND_ROBIN, Interleaving.SHUFFLED, Interleaving.SHUFFLED)
)


def _interleave(draw: st.DrawFn, threads: list[tuple[Step, ...]]) -> list[Step]:
    """Merge the threads, keeping each one's order; the shrink target is one thread after another."""
    active = [i for i, thread in enumerate(threads) if thread]
    how = draw(_INTERLEAVINGS) if len(active) > 1 else Interleaving.SEQUENTIAL
    if how is Interleaving.SEQUENTIAL:
        return [step for thread in threads for step in thread]
    switches = random.Random(draw(SEEDS)) if how is Interleaving.SHUFFLED else None
    positions = [0] * len(threads)
    current = 0  # an index into active
    merged: list[Step] = []
    while active:
        if switches is not None and len(active) > 1 and switches.randrange(4) == 3:
            current = switches.randrange(len(active))
        index = active[current]
        merged.append(threads[index][positions[index]])
        positions[index] += 1
        if positions[index] == len(threads[index]):
            del active[current]
        elif switches is None:
            current += 1  # round robin: the next thread, whose turn it is
        if active:
            current %= len(active)
    return merged


def _renumber(steps: list[Step]) -> tuple[Step, ...]:
    """Connection ids in order of first appearance: 0, 1, 2 ... from the top of the script."""
    ids: dict[int, int] = {}
    out: list[Step] = []
    for step in steps:
        if isinstance(step, Pause | BurstConnect):
            out.append(step)
            continue
        new = ids.setdefault(step.conn, len(ids))
        out.append(step if new == step.conn else replace(step, conn=new))
    return tuple(out)
