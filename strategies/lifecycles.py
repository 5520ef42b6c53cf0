"""One connection's life, start to end: :func:`lifecycles`, :func:`slow_readers`, :func:`sends`.

A lifecycle is the tuple of steps of one connection: a Connect, a body of
sends, reads, pauses and at most one flood, and an ending chosen by
:class:`LifecycleKind`. It is valid on its own (see
:func:`harness.model.script.validate`) whatever the other connections do, which is
what lets :func:`strategies.scripts.scripts` interleave lifecycles freely and
the shrinker delete a whole connection without breaking the rest.

The strategy keeps count of the echo each connection is owed, so that a
partial ``Read(nbytes=n)`` never asks for more than the server must send:
``owed_exact`` counts Sends (the server owes exactly their bytes), and
``owed_max`` adds floods, of which the kernel may take only a part. A partial
read stays within ``owed_exact``; reading "everything owed" (``nbytes=None``)
is left to the executor, which knows how much of a flood went out.

Reads with a ``chunk`` and a ``pace_ms`` are slow reads. Their cost is kept
bounded: a chunk is never so small that reading what is owed takes more than
:data:`MAX_CHUNKED_READS` recv calls, so the pacing of one read adds at most
``MAX_CHUNKED_READS * MAX_PACE_MS`` milliseconds.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from harness.model.limits import DEFAULT_LIMITS
from harness.model.script import (
    AbortConnect,
    Close,
    Connect,
    InjectReset,
    Pause,
    Payload,
    Read,
    ReadToEof,
    Reset,
    Send,
    ShutdownWrite,
    Step,
)
from strategies._cache import draw_one_of, integers, sampled_from
from strategies._validation import check_bool, check_choices, check_integer
from strategies.floods import (
    DEFAULT_FLOOD_BUFFER_BYTES,
    DEFAULT_MAX_FLOOD_SIZE,
    MAX_BUFFER_BYTES,
    flood_span,
    min_flood_size,
)
from strategies.fragments import DEFAULT_MAX_DELAY_MS, draw_fragmentation
from strategies.payloads import (
    DEFAULT_MAX_PAYLOAD_SIZE,
    MAX_PAYLOAD_SIZE,
    KiB,
    MiB,
    draw_edge_size,
    draw_head,
    draw_payload,
    draw_plain_size,
    payloads,
)

#: A small SO_RCVBUF for a slow reader (the kernel doubles it, and rounds tiny values up to ~2 KiB).
#: Floods go past this many bytes now and then: the memory bound a server may hold for a client
#: that does not read (harness.model.limits), 64 MiB unless a run says otherwise.
DEFAULT_FLOOD_PAST_BYTES = DEFAULT_LIMITS.memory_bound
MAX_FLOOD_PAST_BYTES = 1024 * MiB
SLOW_RCVBUF_MIN = 1 * KiB
SLOW_RCVBUF_MAX = 16 * KiB
#: The largest chunk a slow read asks recv() for.
SLOW_CHUNK_MAX = 16 * KiB
#: Pauses (``Pause`` steps) and read pacing, in milliseconds.
MAX_PAUSE_MS = 20
MAX_PACE_MS = 5
#: Largest tail sent corked with a half-close's FIN: a request line or two, one segment.
PIGGYBACK_MAX = 1024
#: A chunked read of everything owed takes at most this many recv() calls.
MAX_CHUNKED_READS = 32
#: Sends, reads, pauses and floods between a Connect and its ending.
DEFAULT_MAX_ACTIONS = 6
DEFAULT_MAX_LIFECYCLE_STEPS = 12
#: A slow reader's payloads stay small enough to read back in a few paced chunks.
SLOW_READER_MAX_PAYLOAD = 256 * KiB
#: A small send, half of them: byte-level bugs show at these sizes, and they are quick to check.
SMALL_SEND_MAX = 1 * KiB
SLOW_READER_MAX_ROUNDS = 3


class LifecycleKind(enum.Enum):
    """How a connection ends, in shrink order (simplest first).

    Each kind that floods first comes right after the kind it becomes
    without the flood: the shrinker lowers a choice by one and then deletes
    what is no longer read (the flood, drawn as one span), so that step
    turns HALF_CLOSE_PENDING into HALF_CLOSE rather than into something
    unrelated.
    """

    #: Left open: the server sees an idle connection; the executor closes it at the end.
    IDLE = "idle"
    #: close() right away; echo still unread in the client makes the kernel send RST, not FIN.
    CLOSE = "close"
    #: A flood, then close() at once with the echo unread: the kernel sends RST while the server
    #: holds queued output for this fd (stale per-fd state shows up on the next connection).
    CLOSE_PENDING = "close-pending"
    #: SO_LINGER 0 and close(): RST, whatever was pending.
    RESET = "reset"
    #: Read everything owed, then close(): a FIN after the echo.
    GRACEFUL_CLOSE = "graceful-close"
    #: shutdown(SHUT_WR), read to the server's FIN, close().
    HALF_CLOSE = "half-close"
    #: A flood, then shutdown(SHUT_WR) at once: the half-close arrives while the server's output
    #: queue is full (servers that drop or truncate pending output on EOF are caught here).
    HALF_CLOSE_PENDING = "half-close-pending"
    #: Read everything owed, then RST: nothing pending in the server.
    RESET_DRAINED = "reset-drained"
    #: A Send and at once RST: the server's echo is still pending when the RST arrives.
    RESET_PENDING = "reset-pending"
    #: Connect and RST at once, usually before the server has accepted.
    ABORT_CONNECT = "abort-connect"
    #: An RST forged on the wire toward the server, as if from the client (needs root: the network lab).
    INJECTED_RESET_TO_SERVER = "injected-reset-to-server"
    #: An RST forged toward the client, as if from the server: the server meets it on its next send.
    INJECTED_RESET_TO_CLIENT = "injected-reset-to-client"


#: The kinds that make the client send an RST.
RESETTING_KINDS = frozenset(
    {
        LifecycleKind.RESET,
        LifecycleKind.RESET_DRAINED,
        LifecycleKind.RESET_PENDING,
        LifecycleKind.ABORT_CONNECT,
        LifecycleKind.CLOSE_PENDING,
    }
)
#: The kinds that need a flood.
FLOODING_KINDS = frozenset(
    {LifecycleKind.HALF_CLOSE_PENDING, LifecycleKind.CLOSE_PENDING, LifecycleKind.INJECTED_RESET_TO_CLIENT}
)
#: The kinds that forge packets (the executor needs CAP_NET_RAW and CAP_NET_ADMIN for them).
INJECTING_KINDS = frozenset({LifecycleKind.INJECTED_RESET_TO_SERVER, LifecycleKind.INJECTED_RESET_TO_CLIENT})
ALL_KINDS = tuple(LifecycleKind)


@dataclass(frozen=True)
class Limits:
    """What a lifecycle may contain; :func:`lifecycles` and :func:`strategies.scripts.scripts` share it."""

    max_actions: int = DEFAULT_MAX_ACTIONS
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE
    allow_floods: bool = True
    allow_resets: bool = True
    allow_delays: bool = True
    flood_buffer_bytes: int = DEFAULT_FLOOD_BUFFER_BYTES
    allow_injection: bool = False
    flood_past_bytes: int = DEFAULT_FLOOD_PAST_BYTES  # one flood in six goes this far (the memory bound)

    def kinds(self) -> tuple[LifecycleKind, ...]:
        kinds = ALL_KINDS if self.allow_injection else tuple(k for k in ALL_KINDS if k not in INJECTING_KINDS)
        if not self.allow_floods:
            kinds = tuple(k for k in kinds if k not in FLOODING_KINDS)
        if self.allow_resets:
            return kinds
        return tuple(k for k in kinds if k not in RESETTING_KINDS | INJECTING_KINDS)

    def ending_steps(self, kind: LifecycleKind) -> int:
        """At most how many steps the ending of ``kind`` takes (the Connect not included)."""
        if kind is LifecycleKind.CLOSE:
            # Without resets, an undrained close would RST; it reads what is owed first.
            return 1 if self.allow_resets else 2
        return _ENDING_STEPS[kind]


_ENDING_STEPS = {
    LifecycleKind.IDLE: 0,
    LifecycleKind.RESET: 1,
    LifecycleKind.GRACEFUL_CLOSE: 2,
    LifecycleKind.HALF_CLOSE: 3,
    LifecycleKind.RESET_DRAINED: 2,
    LifecycleKind.RESET_PENDING: 2,
    LifecycleKind.ABORT_CONNECT: 0,
    LifecycleKind.HALF_CLOSE_PENDING: 4,
    LifecycleKind.CLOSE_PENDING: 2,
    LifecycleKind.INJECTED_RESET_TO_SERVER: 1,
    LifecycleKind.INJECTED_RESET_TO_CLIENT: 2,
}


#: What a kind becomes where it cannot be (no room left, no flood allowed, a body
#: before an abort ...): a simpler kind, and so on down to IDLE, which always fits.
_FALLBACK = {
    LifecycleKind.CLOSE: LifecycleKind.IDLE,
    LifecycleKind.CLOSE_PENDING: LifecycleKind.CLOSE,
    LifecycleKind.RESET: LifecycleKind.CLOSE,
    LifecycleKind.GRACEFUL_CLOSE: LifecycleKind.CLOSE,
    LifecycleKind.HALF_CLOSE: LifecycleKind.CLOSE,
    LifecycleKind.HALF_CLOSE_PENDING: LifecycleKind.HALF_CLOSE,
    LifecycleKind.RESET_DRAINED: LifecycleKind.RESET,
    LifecycleKind.RESET_PENDING: LifecycleKind.RESET,
    LifecycleKind.ABORT_CONNECT: LifecycleKind.RESET,
    LifecycleKind.INJECTED_RESET_TO_SERVER: LifecycleKind.RESET,
    LifecycleKind.INJECTED_RESET_TO_CLIENT: LifecycleKind.INJECTED_RESET_TO_SERVER,
}


def check_limits(
    *,
    max_actions: object,
    max_payload_size: object,
    allow_floods: object,
    allow_resets: object,
    allow_delays: object,
    flood_buffer_bytes: object,
    allow_injection: object = False,
    flood_past_bytes: object = None,
) -> Limits:
    """Validate the shared arguments, as the public strategies take them, into a :class:`Limits`."""
    return Limits(
        max_actions=check_integer(max_actions, "max_actions", min_value=0),
        max_payload_size=check_integer(
            max_payload_size, "max_payload_size", min_value=0, max_value=MAX_PAYLOAD_SIZE
        ),
        allow_floods=check_bool(allow_floods, "allow_floods"),
        allow_resets=check_bool(allow_resets, "allow_resets"),
        allow_delays=check_bool(allow_delays, "allow_delays"),
        flood_buffer_bytes=check_integer(
            flood_buffer_bytes, "flood_buffer_bytes", min_value=1, max_value=MAX_BUFFER_BYTES
        ),
        allow_injection=check_bool(allow_injection, "allow_injection"),
        flood_past_bytes=(
            DEFAULT_FLOOD_PAST_BYTES
            if flood_past_bytes is None
            else check_integer(
                flood_past_bytes, "flood_past_bytes", min_value=0, max_value=MAX_FLOOD_PAST_BYTES
            )
        ),
    )


# -- public strategies --------------------------------------------------------


def lifecycles(
    conn: int = 0,
    *,
    kinds: Collection[LifecycleKind] | None = None,
    max_steps: int = DEFAULT_MAX_LIFECYCLE_STEPS,
    max_actions: int = DEFAULT_MAX_ACTIONS,
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    allow_floods: bool = True,
    allow_resets: bool = True,
    allow_delays: bool = True,
    flood_buffer_bytes: int = DEFAULT_FLOOD_BUFFER_BYTES,
) -> st.SearchStrategy[tuple[Step, ...]]:
    """The steps of connection ``conn``, from Connect (or AbortConnect) to its ending.

    ``kinds`` restricts the endings (default: all that ``allow_resets``
    permits); at most ``max_steps`` steps, of which at most ``max_actions``
    are between the Connect and the ending. Shrinks towards a lone Connect.
    """
    check_integer(conn, "conn", min_value=0)
    check_integer(max_steps, "max_steps", min_value=1)
    limits = check_limits(
        max_actions=max_actions,
        max_payload_size=max_payload_size,
        allow_floods=allow_floods,
        allow_resets=allow_resets,
        allow_delays=allow_delays,
        flood_buffer_bytes=flood_buffer_bytes,
    )
    permitted = limits.kinds()
    if kinds is None:
        chosen = permitted
    else:
        check_choices(kinds, "kinds", ALL_KINDS)
        if not allow_resets and not RESETTING_KINDS.isdisjoint(kinds):
            raise InvalidArgument(
                f"Invalid kinds={kinds!r} with allow_resets=False: "
                f"{sorted(k.name for k in RESETTING_KINDS.intersection(kinds))} send an RST"
            )
        chosen = tuple(k for k in ALL_KINDS if k in kinds)
    if not fitting_kinds(chosen, limits, max_steps):
        raise InvalidArgument(
            f"Invalid max_steps={max_steps!r}: none of kinds={[k.name for k in chosen]} fits in so few steps"
        )

    return _lifecycles(conn, limits, chosen, max_steps)


@st.composite
def _lifecycles(
    draw: st.DrawFn,
    conn: int,
    limits: Limits,
    kinds: tuple[LifecycleKind, ...],
    max_steps: int,
    may_flood: bool = True,
    nodelay: bool | None = None,
) -> tuple[Step, ...]:
    return draw_lifecycle(draw, conn, limits, kinds, max_steps, may_flood=may_flood, nodelay=nodelay)


def slow_readers(
    conn: int = 0,
    *,
    max_payload_size: int = SLOW_READER_MAX_PAYLOAD,
    allow_delays: bool = True,
) -> st.SearchStrategy[tuple[Step, ...]]:
    """A connection with a small SO_RCVBUF that sends and reads each echo back in paced chunks.

    ``Connect(rcvbuf=1..16 KiB)``, then one to three rounds of a Send and a
    chunked ``Read`` of everything owed (``pace_ms`` 1..5 ms apart, or 0
    without ``allow_delays``), then a graceful Close or nothing.
    """
    check_integer(conn, "conn", min_value=0)
    check_integer(max_payload_size, "max_payload_size", min_value=1, max_value=MAX_PAYLOAD_SIZE)
    check_bool(allow_delays, "allow_delays")

    return _slow_readers(conn, max_payload_size, allow_delays)


@st.composite
def _slow_readers(draw: st.DrawFn, conn: int, max_payload_size: int, allow_delays: bool) -> tuple[Step, ...]:
    rcvbuf = draw(integers(SLOW_RCVBUF_MIN, SLOW_RCVBUF_MAX))
    state = _Connection(conn, [Connect(conn, rcvbuf=rcvbuf)])
    for round_ in range(SLOW_READER_MAX_ROUNDS):
        if round_ and not more(draw):
            break
        _send(draw, state, max_payload_size, allow_delays, min_size=1)
        low = _min_chunk(state.owed_max)
        chunk = draw(integers(low, max(low, rcvbuf)))
        pace = draw(integers(1, MAX_PACE_MS)) if allow_delays else 0
        state.read_all(Read(conn, chunk=chunk, pace_ms=pace))
    if draw(st.booleans()):
        state.steps.append(Close(conn))
    return tuple(state.steps)


def sends(
    conn: int = 0,
    *,
    min_size: int = 0,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    allow_delays: bool = True,
) -> st.SearchStrategy[Send]:
    """A Send on ``conn``: a payload from :func:`payloads`, cut by :func:`fragmentations`."""
    check_integer(conn, "conn", min_value=0)
    payloads(min_size, max_size)  # validates the sizes
    check_bool(allow_delays, "allow_delays")
    return _sends(conn, min_size, max_size, allow_delays)


@st.composite
def _sends(draw: st.DrawFn, conn: int, min_size: int, max_size: int, allow_delays: bool) -> Send:
    return _send_step(draw, conn, draw_payload(draw, min_size, max_size), allow_delays)


# -- drawing ----------------------------------------------------------------------


@dataclass
class _Connection:
    """A connection's steps so far and what the server owes it."""

    conn: int
    steps: list[Step] = field(default_factory=list)
    owed_exact: int = 0  # echo of Sends: the server owes exactly these bytes
    owed_max: int = 0  # plus floods, which the kernel may have taken only in part
    next_seed: int = 0  # each generated payload or flood of a connection gets its own pattern
    flooded: bool = False

    def seed(self) -> int:
        self.next_seed += 1
        return self.next_seed - 1

    def read_all(self, step: Read | ReadToEof) -> None:
        self.steps.append(step)
        self.owed_exact = self.owed_max = 0


def fitting_kinds(
    kinds: Iterable[LifecycleKind], limits: Limits, max_steps: int
) -> tuple[LifecycleKind, ...]:
    # Kinds that need a flood fit only where floods are allowed (a script caps its floods).
    return tuple(
        k
        for k in kinds
        if 1 + limits.ending_steps(k) <= max_steps and (limits.allow_floods or k not in FLOODING_KINDS)
    )


def draw_lifecycle(
    draw: st.DrawFn,
    conn: int,
    limits: Limits,
    kinds: Iterable[LifecycleKind],
    max_steps: int,
    *,
    may_flood: bool = True,
    nodelay: bool | None = None,
) -> tuple[Step, ...]:
    """Draw one lifecycle of at most ``max_steps`` steps (at least one kind must fit).

    Each step of the body, and the ending, is one choice from one list: the
    kinds first, then the actions, repeated so that three choices in four
    carry on (:func:`_step_options`). Hypothesis shrinks a choice towards
    index 0, so an action shrinks into an ending, dropping what followed it,
    and an ending towards IDLE, dropping only trailing steps: a failure that
    needs a Send but not the Reset after it shrinks to the Send.

    Every choice keeps its meaning when the shrinker changes something
    else: the list depends only on ``kinds`` and ``limits``, never on what
    came before. A kind that cannot be here (too few steps left, an abort
    after a body, RESET_PENDING without a Send to reset, a flood where the
    script has had its floods: ``may_flood`` False) becomes a simpler one
    (:data:`_FALLBACK`); an action that cannot (a read with nothing owed, a
    second flood) becomes a Send. RESET_PENDING reuses the body's last Send,
    drawing its own only when it is the one kind asked for.

    ``nodelay`` (TCP_NODELAY on the Connect) is drawn here unless the caller
    has drawn it already (:func:`strategies.scripts` folds it into a choice
    it makes anyway).
    """
    wanted = set(kinds)
    allowed = tuple(k for k in ALL_KINDS if k in wanted and (limits.allow_floods or k not in FLOODING_KINDS))
    fitting = fitting_kinds(allowed, limits, max_steps)
    state = _Connection(conn, [_connect(draw, conn, limits.allow_delays, nodelay)])
    connected = [k for k in fitting if k is not LifecycleKind.ABORT_CONNECT]
    max_body = 0
    if connected:
        shortest_ending = min(limits.ending_steps(k) for k in connected)
        max_body = min(limits.max_actions, max_steps - 1 - shortest_ending)
    options = _step_options(allowed, limits)
    while True:
        # With the body full only the kinds are left: the same first entries.
        chosen = draw_one_of(draw, options if len(state.steps) - 1 < max_body else allowed)
        if isinstance(chosen, LifecycleKind):
            break
        _act(draw, state, limits, chosen, may_flood)
    kind = _possible(chosen, state, limits, fitting, max_steps, may_flood)
    if kind is LifecycleKind.ABORT_CONNECT:
        return (AbortConnect(conn),)
    _ending(draw, state, limits, kind)
    return tuple(state.steps)


#: An action is this many times as likely as an ending: a body has three actions on average.
_ACTION_WEIGHT = 3
#: Floods take about one step in sixteen where they are allowed (they are the slowest steps).
_FLOOD_SHARE = 12


@functools.lru_cache(maxsize=256)
def _step_options(kinds: tuple[LifecycleKind, ...], limits: Limits) -> tuple[LifecycleKind | _Action, ...]:
    """The kinds, then the actions weighted by repetition, floods last.

    Sends and reads are common, pauses rare, floods rarer; a small Send is the
    first action, what the shrinker turns actions into. Half the sends are
    small (at most :data:`SMALL_SEND_MAX` bytes), where byte-level bugs show
    and checks are quick; one in four has a size on a power-of-two edge
    (1023, 1024, 1025 ...), where servers' fixed read buffers split a
    message; the rest have any size up to the limit.
    """
    actions = [
        _Action.SEND_SMALL,
        _Action.SEND,
        _Action.SEND_AT_EDGE,
        _Action.SEND_SMALL,
        _Action.READ_ALL,
        _Action.READ_PART,
    ]
    if limits.allow_delays:
        actions.append(_Action.PAUSE)
    body = tuple(actions) * max(1, round(_ACTION_WEIGHT * len(kinds) / len(actions)))
    floods = (_Action.FLOOD,) * max(1, len(body) // _FLOOD_SHARE) if limits.allow_floods else ()
    return kinds + body + floods


def _possible(
    kind: LifecycleKind,
    state: _Connection,
    limits: Limits,
    fitting: tuple[LifecycleKind, ...],
    max_steps: int,
    may_flood: bool,
) -> LifecycleKind:
    """``kind``, or the first of its fallbacks that can end this connection here."""
    left = max_steps - len(state.steps)
    last = state.steps[-1]
    ends_in_send = isinstance(last, Send) and len(last.payload) > 0

    def can(k: LifecycleKind) -> bool:
        return (
            k in fitting
            and limits.ending_steps(k) <= left
            and (k is not LifecycleKind.ABORT_CONNECT or len(state.steps) == 1)
            and (k is not LifecycleKind.RESET_PENDING or ends_in_send or fitting == (k,))
            and (may_flood or k not in FLOODING_KINDS)
        )

    candidate: LifecycleKind | None = kind
    while candidate is not None:
        if can(candidate):
            return candidate
        candidate = _FALLBACK.get(candidate)
    # Only kinds the caller restricted to, none of them a fallback of this one.
    return next(k for k in fitting if can(k))


#: "Another one?", true three times in four (any value but 0, see :func:`more`).
MORE = integers(0, 3)


def more(draw: st.DrawFn) -> bool:
    """Draw "another one?": the shrinker drives it to 0 (no), and deleting one
    (flag, element) pair leaves the rest aligned. A plain integer, not a
    ``.map(bool)``: a map is one more strategy layer at every draw."""
    return draw(MORE) != 0


#: (small SO_RCVBUF?, TCP_NODELAY?) in one choice: with delays allowed one
#: connection in four reads through a small window, Nagle is on in half of
#: them; shrinks to a plain, no-delay one.
_CONNECT_VARIANTS = sampled_from(((False, True),) * 3 + ((False, False),) * 3 + ((True, True), (True, False)))
#: Without delays, no small windows: a receive buffer far below loopback's MSS
#: leaves the server's sends to the kernel's zero-window probes, which back off
#: to seconds (22 s measured for a 64 KiB echo into a 1448-byte SO_RCVBUF).
_QUICK_CONNECT_VARIANTS = sampled_from(((False, True), (False, False)))
#: Small SO_RCVBUF?, when TCP_NODELAY is known: the same one in four.
_SLOW_WINDOW = sampled_from((False, False, False, True))
_SLOW_RCVBUFS = integers(SLOW_RCVBUF_MIN, SLOW_RCVBUF_MAX)


def _connect(draw: st.DrawFn, conn: int, allow_delays: bool, nodelay: bool | None = None) -> Connect:
    if nodelay is None:
        slow, nodelay = draw(_CONNECT_VARIANTS if allow_delays else _QUICK_CONNECT_VARIANTS)
    else:
        slow = allow_delays and draw(_SLOW_WINDOW)
    rcvbuf = draw(_SLOW_RCVBUFS) if slow else None
    return Connect(conn, rcvbuf=rcvbuf, nodelay=nodelay)


class _Action(enum.Enum):
    SEND_SMALL = "send-small"
    SEND = "send"
    SEND_AT_EDGE = "send-at-edge"
    READ_ALL = "read-all"
    READ_PART = "read-part"
    PAUSE = "pause"
    FLOOD = "flood"


def _act(draw: st.DrawFn, state: _Connection, limits: Limits, action: _Action, may_flood: bool) -> None:
    if action is _Action.FLOOD and not (may_flood and not state.flooded):
        action = _Action.SEND
    elif action is _Action.READ_ALL or action is _Action.READ_PART:
        if not state.owed_max:
            action = _Action.SEND_SMALL
        elif not state.owed_exact:
            action = _Action.READ_ALL
    if action is _Action.SEND_SMALL:
        _send(draw, state, min(SMALL_SEND_MAX, limits.max_payload_size), limits.allow_delays)
    elif action is _Action.SEND or action is _Action.SEND_AT_EDGE:
        _send(
            draw, state, limits.max_payload_size, limits.allow_delays, at_edge=action is _Action.SEND_AT_EDGE
        )
    elif action is _Action.READ_ALL or action is _Action.READ_PART:
        _read(draw, state, limits.allow_delays, partial=action is _Action.READ_PART)
    elif action is _Action.PAUSE:
        state.steps.append(Pause(draw(integers(1, MAX_PAUSE_MS))))
    else:
        _append_flood(draw, state, limits)


def _send(
    draw: st.DrawFn,
    state: _Connection,
    max_size: int,
    allow_delays: bool,
    *,
    min_size: int = 0,
    at_edge: bool = False,
) -> None:
    # Mostly a size: a connection's payloads are patterns of its own (its id
    # and a per-connection seed), so echoes crossed between connections never
    # match by chance, and bulk costs one choice. Now and then a head of bytes
    # servers treat specially (CR LF, NUL, invalid UTF-8, runs of one byte)
    # comes first, drawn so that the shrinker cuts it down to what matters.
    head = draw_head(draw)[:max_size]
    # The head counts toward the payload's size: head and bulk together stay within max_size.
    room = max_size - len(head)
    low = min(room, max(0, min_size - len(head)))
    size = (draw_edge_size if at_edge else draw_plain_size)(draw, low, room)
    payload = Payload(head, size, state.seed() if size else 0)
    state.steps.append(_send_step(draw, state.conn, payload, allow_delays))
    state.owed_exact += len(payload)
    state.owed_max += len(payload)


def _send_step(draw: st.DrawFn, conn: int, payload: Payload, allow_delays: bool) -> Send:
    cut = draw_fragmentation(draw, len(payload), max_delay_ms=DEFAULT_MAX_DELAY_MS if allow_delays else 0)
    return Send(conn, payload, fragments=cut.fragments, delay_ms=cut.delay_ms)


def _read(draw: st.DrawFn, state: _Connection, allow_delays: bool, *, partial: bool) -> None:
    """A Read of part of what is owed, or of all of it, sometimes in paced chunks."""
    if partial:
        nbytes = draw(integers(1, state.owed_exact))
        chunk, pace = _pacing(draw, nbytes, allow_delays)
        state.steps.append(Read(state.conn, nbytes=nbytes, chunk=chunk, pace_ms=pace))
        state.owed_exact -= nbytes
        state.owed_max -= nbytes
    else:
        chunk, pace = _pacing(draw, state.owed_max, allow_delays)
        state.read_all(Read(state.conn, chunk=chunk, pace_ms=pace))


def _drain(draw: st.DrawFn, state: _Connection, allow_delays: bool) -> None:
    if state.owed_max:
        chunk, pace = _pacing(draw, state.owed_max, allow_delays)
        state.read_all(Read(state.conn, chunk=chunk, pace_ms=pace))


def _min_chunk(amount: int) -> int:
    return max(1, -(-amount // MAX_CHUNKED_READS))


def _pacing(draw: st.DrawFn, amount: int, allow_delays: bool) -> tuple[int | None, int]:
    """(chunk, pace_ms) for reading ``amount`` bytes: mostly plain, one time in three slow.

    Without delays a read is always plain: unpaced chunks only change how the
    client's recv() calls are cut, which the server cannot tell apart.
    """
    if not allow_delays or not amount or draw(integers(0, 2)) != 2:
        return None, 0
    low = _min_chunk(amount)
    chunk = draw(integers(low, max(low, SLOW_CHUNK_MAX)))
    return chunk, draw(integers(0, MAX_PACE_MS))


def _append_flood(draw: st.DrawFn, state: _Connection, limits: Limits) -> None:
    low = min_flood_size(limits.flood_buffer_bytes)
    # One span for the whole flood, so that the shrinker can delete it in one step.
    flood = draw(flood_span(state.conn, low, max(DEFAULT_MAX_FLOOD_SIZE, low), limits.flood_past_bytes))
    state.steps.append(replace(flood, seed=state.seed()))
    state.owed_max += flood.size
    state.flooded = True


def _ending(draw: st.DrawFn, state: _Connection, limits: Limits, kind: LifecycleKind) -> None:
    conn = state.conn
    if kind is LifecycleKind.IDLE:
        return
    if kind is LifecycleKind.CLOSE:
        if not limits.allow_resets:
            _drain(draw, state, limits.allow_delays)
        state.steps.append(Close(conn))
    elif kind is LifecycleKind.RESET:
        state.steps.append(Reset(conn))
    elif kind is LifecycleKind.GRACEFUL_CLOSE:
        _drain(draw, state, limits.allow_delays)
        state.steps.append(Close(conn))
    elif kind is LifecycleKind.HALF_CLOSE:
        # One in three: the last bytes and the FIN in one segment (shrinks to a plain half-close).
        tail = draw_payload(draw, 1, PIGGYBACK_MAX) if draw(integers(0, 2)) == 2 else None
        state.steps.append(ShutdownWrite(conn, tail))
        chunk, pace = _pacing(draw, state.owed_max, limits.allow_delays)
        state.read_all(ReadToEof(conn, chunk=chunk, pace_ms=pace))
        state.steps.append(Close(conn))
    elif kind is LifecycleKind.RESET_DRAINED:
        _drain(draw, state, limits.allow_delays)
        state.steps.append(Reset(conn))
    elif kind is LifecycleKind.HALF_CLOSE_PENDING:
        _append_flood(draw, state, limits)
        state.steps.append(ShutdownWrite(conn))
        state.read_all(ReadToEof(conn))
        state.steps.append(Close(conn))
    elif kind is LifecycleKind.CLOSE_PENDING:
        _append_flood(draw, state, limits)
        state.steps.append(Close(conn))
    elif kind is LifecycleKind.INJECTED_RESET_TO_SERVER:
        state.steps.append(InjectReset(conn, "server"))
    elif kind is LifecycleKind.INJECTED_RESET_TO_CLIENT:
        # A flood first: the server must have output pending, or nothing it
        # does would ever meet the RST (an idle half-open connection is legal).
        _append_flood(draw, state, limits)
        state.steps.append(InjectReset(conn, "client"))
    elif kind is LifecycleKind.RESET_PENDING:
        last = state.steps[-1]
        if not (isinstance(last, Send) and len(last.payload)):
            _send(draw, state, limits.max_payload_size, limits.allow_delays, min_size=1)
        state.steps.append(Reset(conn))
    else:  # pragma: no cover - ABORT_CONNECT replaces the Connect instead
        raise AssertionError(kind)
