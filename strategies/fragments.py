"""How one payload is cut into writes: :func:`fragmentations`.

An echo server must not care how TCP segments the stream, so the cut is a
strategy rather than a fixed loop (h11's ``test_io.py`` runs every case whole
and byte by byte for the same reason). The shapes that find bugs:

* one write, the common case and the shrink target;
* one byte per write, which breaks any server that assumes a ``recv()``
  returns a whole message (only for small payloads, see ``max_writes``);
* random cuts anywhere;
* Ethernet-MSS (1448) and loopback-MSS (65483) cuts, the sizes the kernel
  itself produces on the wire;
* writes larger than the client's socket buffer, which the kernel only
  partly accepts, so the client's ``send()`` returns short.

A :class:`harness.model.script.Send` writes ``fragments`` in order and "the rest in
one last write"; every cut drawn here leaves at least one byte for that last
write, so no write is empty except the one write of an empty payload.

Delays between writes are mostly zero (Nagle is off on the client by default,
so back-to-back small writes still arrive as separate segments often enough),
sometimes a few milliseconds, which makes the server see each fragment in a
separate ``epoll_wait`` round; their total per Send is bounded.
"""

from __future__ import annotations

import enum
import itertools
import random
from dataclasses import dataclass

from hypothesis import strategies as st

from strategies._cache import draw_one_of, integers
from strategies._validation import check_bool, check_integer
from strategies.payloads import SEEDS

#: A write per example costs a syscall on each side; 64 keeps even byte-by-byte sends fast.
DEFAULT_MAX_WRITES = 64
#: MSS on a 1500-byte Ethernet path with TCP timestamps: 1500 - 20 (IP) - 20 (TCP) - 12 (options).
ETHERNET_MSS = 1448
#: MSS on loopback (MTU 65536) with TCP timestamps, as the kernel segments it.
LOOPBACK_MSS = 65483
#: A fresh TCP socket's SO_SNDBUF on Linux (tcp_wmem's default, 16 KiB); writes above this are
#: taken only partly while the window is small.
DEFAULT_SOCKET_BUFFER = 16 * 1024
#: Largest pause between two fragments, and the most all pauses of one Send may add up to.
DEFAULT_MAX_DELAY_MS = 5
MAX_TOTAL_DELAY_MS = 100
#: Random cuts are few (byte-at-a-time covers the many-writes case): each write costs syscalls.
MAX_RANDOM_CUTS = 15


class Cut(enum.Enum):
    """The shapes of :func:`fragmentations`, in shrink order (simplest first)."""

    ONE_WRITE = "one-write"
    RANDOM = "random"
    ETHERNET_MSS = "ethernet-mss"
    LOOPBACK_MSS = "loopback-mss"
    BYTES = "byte-at-a-time"
    OVER_BUFFER = "over-buffer"


@dataclass(frozen=True)
class Fragmentation:
    """Write sizes for one Send (the rest of the payload goes in one last write) and the pause between."""

    fragments: tuple[int, ...] = ()
    delay_ms: int = 0

    @property
    def writes(self) -> int:
        """How many writes a payload cut like this takes (the last, the rest, included)."""
        return len(self.fragments) + 1


def fragmentations(
    size: int,
    *,
    max_writes: int = DEFAULT_MAX_WRITES,
    allow_delays: bool = True,
    max_delay_ms: int = DEFAULT_MAX_DELAY_MS,
    socket_buffer: int = DEFAULT_SOCKET_BUFFER,
) -> st.SearchStrategy[Fragmentation]:
    """Ways to cut a payload of ``size`` bytes into at most ``max_writes`` writes; shrinks to one write."""
    check_integer(size, "size", min_value=0)
    check_integer(max_writes, "max_writes", min_value=1)
    check_bool(allow_delays, "allow_delays")
    check_integer(max_delay_ms, "max_delay_ms", min_value=0, max_value=MAX_TOTAL_DELAY_MS)
    check_integer(socket_buffer, "socket_buffer", min_value=1)
    return _fragmentations(size, max_writes, max_delay_ms if allow_delays else 0, socket_buffer)


def applicable_cuts(size: int, *, max_writes: int, socket_buffer: int) -> tuple[Cut, ...]:
    """The cuts that make sense for ``size`` bytes (each yields a different write pattern)."""
    cuts = [Cut.ONE_WRITE]
    if max_writes > 1 and size >= 2:
        cuts.append(Cut.RANDOM)
        if size > ETHERNET_MSS:
            cuts.append(Cut.ETHERNET_MSS)
        if size > LOOPBACK_MSS:
            cuts.append(Cut.LOOPBACK_MSS)
        if size <= max_writes:
            cuts.append(Cut.BYTES)
        if size > socket_buffer + 1:
            cuts.append(Cut.OVER_BUFFER)
    return tuple(cuts)


@st.composite
def _fragmentations(
    draw: st.DrawFn, size: int, max_writes: int, max_delay_ms: int, socket_buffer: int
) -> Fragmentation:
    return draw_fragmentation(
        draw, size, max_writes=max_writes, max_delay_ms=max_delay_ms, socket_buffer=socket_buffer
    )


def draw_fragmentation(
    draw: st.DrawFn,
    size: int,
    *,
    max_writes: int = DEFAULT_MAX_WRITES,
    max_delay_ms: int = DEFAULT_MAX_DELAY_MS,
    socket_buffer: int = DEFAULT_SOCKET_BUFFER,
) -> Fragmentation:
    """Draw what :func:`fragmentations` draws (arguments already valid; ``max_delay_ms=0``: no pauses)."""
    cuts = applicable_cuts(size, max_writes=max_writes, socket_buffer=socket_buffer)
    cut = draw_one_of(draw, cuts)
    if cut is Cut.ONE_WRITE:
        return Fragmentation()
    if cut is Cut.RANDOM:
        # One choice whatever the number of cuts (a list of positions costs two
        # per cut): a seed that gives both the count and the places. Seed k
        # below the most cuts means k + 1 cuts, so the shrinker, walking the
        # seed down, walks the count down; seed 0, the shrink target, is one
        # cut after the first byte. The script spells the fragments out, so a
        # reproducer shows where they fell.
        placement = draw(SEEDS)
        count = 1 + placement % min(MAX_RANDOM_CUTS, max_writes - 1, size - 1)
        points = [1] if placement == 0 else random.Random(placement).sample(range(1, size), count)
        edges = [0, *sorted(points)]
        fragments = tuple(b - a for a, b in itertools.pairwise(edges))
    elif cut is Cut.BYTES:
        fragments = (1,) * (size - 1)
    else:
        if cut is Cut.OVER_BUFFER:
            piece = draw(integers(socket_buffer + 1, size - 1))
        else:
            piece = ETHERNET_MSS if cut is Cut.ETHERNET_MSS else LOOPBACK_MSS
        # Whole pieces, leaving at least one byte for the last write, at most max_writes in all.
        fragments = (piece,) * min((size - 1) // piece, max_writes - 1)
    delay_ms = 0
    # Mostly no pause: one draw in four asks for one, and 0 is the shrink target.
    if fragments and max_delay_ms and draw(integers(0, 3)) == 3:
        bound = min(max_delay_ms, MAX_TOTAL_DELAY_MS // len(fragments))
        delay_ms = draw(integers(0, bound))
    return Fragmentation(fragments=fragments, delay_ms=delay_ms)
