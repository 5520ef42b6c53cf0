"""Floods that make the server's ``send()`` really return EAGAIN: :func:`floods`.

A :class:`harness.model.script.Flood` writes without reading. The bytes travel
client send buffer -> server receive buffer -> (the server's own queue) ->
server send buffer -> client receive buffer. The server's ``send()`` returns
EAGAIN only once the last two, the *echo path*, are full, so a flood has to
be larger than what the kernel holds there, and by a margin: otherwise a
server that never handles EAGAIN passes every flood.

How much that is depends on the host. On Linux loopback the server's send
buffer autotunes up to ``tcp_wmem[2]`` (4 MiB here) even when the client
reads nothing, while the client's receive buffer stays near ``tcp_rmem[1]``
(128 KiB here) because receive autotuning only grows a buffer that the
application drains; a small ``SO_RCVBUF`` on the client shrinks it further.
Measured on this host: 4,243,968 bytes before EAGAIN with a default client,
about 1.7 MiB with a 1 KiB client SO_RCVBUF. :func:`echo_path_capacity` does
that sum from the sysctls, so a caller that knows the real ones (a network
namespace with other settings) passes them in as ``buffer_bytes``.
"""

from __future__ import annotations

import functools

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from harness.model.script import Flood
from strategies._cache import integers, unwrapped
from strategies._validation import check_integer
from strategies.payloads import SEEDS, MiB, draw_size

KiB = 1024
#: net.ipv4.tcp_wmem on this host: min, default, max.
LOOPBACK_TCP_WMEM = (4 * KiB, 16 * KiB, 4 * MiB)
#: net.ipv4.tcp_rmem on this host: min, default, max.
LOOPBACK_TCP_RMEM = (4 * KiB, 128 * KiB, 32 * MiB)
#: A flood this much larger than the echo path (a quarter) leaves no doubt that it overflows.
FLOOD_OVERSHOOT_DIVISOR = 4
#: Floods stay bounded: each one costs the executor and the server real copying.
DEFAULT_MAX_FLOOD_SIZE = 8 * MiB
#: One flood in this many is drawn past the memory bound (``past_bytes``).
PAST_ONE_IN = 6
_PAST_CHOICES = integers(0, PAST_ONE_IN - 1)
#: A sanity ceiling on ``buffer_bytes``, far above any real tcp_wmem.
MAX_BUFFER_BYTES = 1024 * MiB


def echo_path_capacity(
    tcp_wmem: tuple[int, int, int] = LOOPBACK_TCP_WMEM,
    tcp_rmem: tuple[int, int, int] = LOOPBACK_TCP_RMEM,
) -> int:
    """Bytes the kernel holds on the echo path before the server's send() returns EAGAIN.

    The server's send buffer at its autotuning ceiling plus a client receive
    buffer that is not being read (its default size): an upper bound for a
    client that sets no SO_RCVBUF, and a generous one for a client that does.
    """
    return tcp_wmem[2] + tcp_rmem[1]


DEFAULT_FLOOD_BUFFER_BYTES = echo_path_capacity()


def min_flood_size(buffer_bytes: int) -> int:
    """The smallest flood :func:`floods` draws for an echo path of ``buffer_bytes``."""
    return buffer_bytes + buffer_bytes // FLOOD_OVERSHOOT_DIVISOR


def floods(
    conn: int = 0,
    *,
    buffer_bytes: int = DEFAULT_FLOOD_BUFFER_BYTES,
    max_size: int | None = None,
    past_bytes: int = 0,
) -> st.SearchStrategy[Flood]:
    """Flood steps on ``conn`` larger than ``buffer_bytes``; sizes shrink to :func:`min_flood_size`.

    ``max_size`` defaults to :data:`DEFAULT_MAX_FLOOD_SIZE`, or to the
    minimum flood if ``buffer_bytes`` is so large that the minimum exceeds it.
    With ``past_bytes``, one flood in :data:`PAST_ONE_IN` goes that much
    further (the memory bound: only a flood past it tells a server that
    buffers a lot from one that buffers without bound); it shrinks to a
    plain flood.
    """
    check_integer(conn, "conn", min_value=0)
    check_integer(buffer_bytes, "buffer_bytes", min_value=1, max_value=MAX_BUFFER_BYTES)
    low = min_flood_size(buffer_bytes)
    if max_size is None:
        max_size = max(DEFAULT_MAX_FLOOD_SIZE, low)
    check_integer(max_size, "max_size", min_value=1)
    if max_size < low:
        raise InvalidArgument(
            f"Cannot have max_size={max_size!r} < {low}: buffer_bytes={buffer_bytes!r} needs floods "
            f"of at least buffer_bytes + buffer_bytes // {FLOOD_OVERSHOOT_DIVISOR} = {low} bytes"
        )
    check_integer(past_bytes, "past_bytes", min_value=0)
    return _floods(conn, low, max_size, past_bytes)


@st.composite
def _floods(draw: st.DrawFn, conn: int, min_size: int, max_size: int, past_bytes: int) -> Flood:
    return draw_flood(draw, conn, min_size, max_size, past_bytes)


def draw_flood(draw: st.DrawFn, conn: int, min_size: int, max_size: int, past_bytes: int = 0) -> Flood:
    """A Flood of ``min_size`` to ``max_size`` bytes, now and then ``past_bytes`` more (arguments valid)."""
    size = draw_size(draw, min_size, max_size)
    seed = draw(SEEDS)
    if past_bytes and draw(_PAST_CHOICES) == PAST_ONE_IN - 1:
        size += past_bytes
    return Flood(conn, size=size, seed=seed)


@functools.lru_cache(maxsize=256)
def flood_span(conn: int, min_size: int, max_size: int, past_bytes: int = 0) -> st.SearchStrategy[Flood]:
    """What :func:`floods` draws (arguments already valid), one strategy object per arguments.

    A composite that draws it gets the whole flood as one span, which the
    shrinker deletes in one step.
    """
    return unwrapped(_floods(conn, min_size, max_size, past_bytes))
