"""What one write carries: :func:`payloads`.

Small payloads are literal bytes drawn by Hypothesis over all 256 byte values,
so they shrink byte by byte towards short runs of zero bytes, down to the empty
write. Beyond :data:`LITERAL_MAX_SIZE` a payload is *generated*: only a size
and a seed are drawn and the executor expands them with
:func:`harness.model.script.pattern_bytes`. Drawing megabytes literally would blow
Hypothesis's per-example entropy budget and make every shrink step copy them;
a size is one number and shrinks like one.

Generated sizes come from Hypothesis's integer distribution, which is
log-scaled for large values, so kilobytes are common and megabytes not rare;
half of them snap down to 2**k - 1, 2**k or 2**k + 1, where servers' fixed
read buffers (1024, 4096, 65536 bytes ...) split a message.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from harness.model.script import Payload
from strategies._cache import integers, sampled_from
from strategies._validation import check_bool, check_integer, check_interval

KiB = 1024
MiB = 1024 * KiB

#: Above this a payload is generated (size, seed), not literal bytes.
LITERAL_MAX_SIZE = 1 * KiB
#: "Up to several MiB": a Send of this much is echoed back in well under a second on loopback.
DEFAULT_MAX_PAYLOAD_SIZE = 4 * MiB
#: A hard ceiling: a payload is materialised in memory by the executor, twice (sent and expected).
MAX_PAYLOAD_SIZE = 64 * MiB
#: Seeds are small: the pattern also depends on the connection id, and scripts renumber
#: seeds per connection anyway, so a seed only has to tell one payload from the next.
MAX_SEED = (1 << 16) - 1
#: Every seed a strategy draws (payload patterns, floods, cut placements, shuffles).
SEEDS = integers(0, MAX_SEED)
#: Choices 3, 4, 5 of draw_size's second draw snap to 2**k - 1, 2**k, 2**k + 1.
_FIRST_EDGE = 3
_EDGE_CHOICES = integers(0, 5)


def payloads(
    min_size: int = 0,
    max_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
    *,
    allow_generated: bool = True,
) -> st.SearchStrategy[Payload]:
    """Payloads of ``min_size`` to ``max_size`` bytes, shrinking towards short literal ones.

    Sizes up to :data:`LITERAL_MAX_SIZE` are literal bytes (the empty payload
    included when ``min_size`` is 0); larger ones are ``Payload.pattern(size,
    seed)`` and need ``allow_generated``. Without it, ``max_size`` must not
    exceed :data:`LITERAL_MAX_SIZE`.
    """
    check_integer(min_size, "min_size", min_value=0)
    check_integer(max_size, "max_size", min_value=0, max_value=MAX_PAYLOAD_SIZE)
    check_interval(min_size, max_size, "min_size", "max_size")
    check_bool(allow_generated, "allow_generated")
    if not allow_generated and max_size > LITERAL_MAX_SIZE:
        raise InvalidArgument(
            f"Invalid max_size={max_size!r} with allow_generated=False: literal payloads are at most "
            f"LITERAL_MAX_SIZE={LITERAL_MAX_SIZE} bytes; pass allow_generated=True for larger ones"
        )
    return _payloads(min_size, max_size, allow_generated)


@st.composite
def _payloads(draw: st.DrawFn, min_size: int, max_size: int, allow_generated: bool) -> Payload:
    return draw_payload(draw, min_size, max_size, allow_generated=allow_generated)


def draw_payload(draw: st.DrawFn, min_size: int, max_size: int, *, allow_generated: bool = True) -> Payload:
    """Draw what :func:`payloads` draws (arguments already valid); for use inside composites."""
    literal_ok = min_size <= LITERAL_MAX_SIZE
    generated_ok = allow_generated and max_size > LITERAL_MAX_SIZE
    # Literal first: the shrinker prefers it whenever the test still fails with it.
    if literal_ok and not (generated_ok and draw(st.booleans())):
        return Payload.of(draw(st.binary(min_size=min_size, max_size=min(max_size, LITERAL_MAX_SIZE))))
    size = draw_size(draw, max(min_size, LITERAL_MAX_SIZE + 1), max_size)
    return Payload.pattern(size, draw(SEEDS))


#: Pieces of a payload head: bytes that line-based, text-based or C-string servers treat specially.
HEAD_PIECES = (
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff",
    b"\xc3\x28",  # invalid UTF-8: a lead byte with no continuation
    b"\xed\xa0\x80",  # a UTF-16 surrogate encoded as UTF-8
    b"\xf0\x9f\x98",  # a four-byte sequence cut short
    b"a",
    b" ",
    b"\x1b[0m",
    b"%s%n",
)
#: The bytes a run of one byte is made of.
RUN_BYTES = (0x00, 0x0A, 0x0D, 0xFF, 0x80, 0x20, 0x41)
MAX_RUN = 4 * KiB
MAX_HEAD_PIECES = 8
MAX_HEAD_BINARY = 64
#: What a head is, one choice: none half the time (the shrink target), pieces a quarter, else a run
#: of one byte or raw bytes.
_HEAD_KINDS = integers(0, 7)
_NO_HEAD_BELOW = 4
_PIECES_BELOW = 6
_PIECES = sampled_from(HEAD_PIECES)
_RUN_BYTES = sampled_from(RUN_BYTES)
_RUN_LENGTHS = integers(1, MAX_RUN)
_HEAD_BINARY = st.binary(min_size=1, max_size=MAX_HEAD_BINARY)
_PIECE_COUNTS = integers(1, MAX_HEAD_PIECES)


def draw_head(draw: st.DrawFn) -> bytes:
    """A payload's literal head: empty half the time, else special pieces, a run of a byte, raw bytes.

    Every part shrinks: the kind to "none", a list of pieces to the one piece
    that matters (``b"\r\n"``), a run to one byte, raw bytes byte by byte. A
    byte-dependent bug (a server that drops the CR of CR LF) is then found on
    purpose and reported with a payload of a few bytes, not found by luck in
    a random pattern and reported with 48 KiB of it.
    """
    kind = draw(_HEAD_KINDS)
    if kind < _NO_HEAD_BELOW:
        return b""
    if kind < _PIECES_BELOW:
        return b"".join(draw(_PIECES) for _ in range(draw(_PIECE_COUNTS)))
    if kind == _PIECES_BELOW:
        return bytes([draw(_RUN_BYTES)]) * draw(_RUN_LENGTHS)
    return draw(_HEAD_BINARY)


def payload_sizes(min_size: int, max_size: int) -> st.SearchStrategy[int]:
    """Sizes in [min_size, max_size], spread on a log scale and shrinking towards ``min_size``."""
    check_integer(min_size, "min_size", min_value=0)
    check_integer(max_size, "max_size", min_value=0)
    check_interval(min_size, max_size, "min_size", "max_size")
    return _payload_sizes(min_size, max_size)


@st.composite
def _payload_sizes(draw: st.DrawFn, min_size: int, max_size: int) -> int:
    return draw_size(draw, min_size, max_size)


def draw_edge_size(draw: st.DrawFn, min_size: int, max_size: int) -> int:
    """A size on an edge of a power-of-two band (2**k - 1, 2**k, 2**k + 1), in one choice.

    The choice is the same as :func:`draw_plain_size`'s, snapped to the band
    of its value (which of the three edges, from the value itself), so a
    send that needs "at least n bytes" keeps its size when the shrinker
    turns it into a plain send, and then shrinks like one.
    """
    raw = draw(integers(min_size, max_size))
    if raw < 2:
        return raw
    snapped = (1 << (raw.bit_length() - 1)) + raw % 3 - 1
    return snapped if min_size <= snapped <= max_size else raw


def draw_plain_size(draw: st.DrawFn, min_size: int, max_size: int) -> int:
    """A size in [min_size, max_size] in one choice (no snapping to edges; see :func:`draw_edge_size`)."""
    return draw(integers(min_size, max_size))


def draw_size(draw: st.DrawFn, min_size: int, max_size: int) -> int:
    """Draw what :func:`payload_sizes` draws (arguments already valid)."""
    # Hypothesis draws bounded integers from a distribution that is uniform
    # near zero and log-scaled beyond, so kilobytes are common and megabytes
    # not rare; and one integer shrinks straight to the smallest size that
    # still fails.
    size = draw(integers(min_size, max_size))
    # Then, one time in two, snap *down* to an edge of the power-of-two band:
    # 2**k - 1, 2**k or 2**k + 1. Snapping never makes a size larger, so a
    # failure that needs "at least n bytes" shrinks through the raw size.
    edge = draw(_EDGE_CHOICES)
    if edge >= _FIRST_EDGE and size > 0:
        snapped = (1 << (size.bit_length() - 1)) + (edge - _FIRST_EDGE - 1)
        if min_size <= snapped <= size:
            return snapped
    return size
