"""The echo oracle: what each connection sent and got back, judged with no I/O.

Rules (an echo server, per connection):

* the bytes received are, at every moment, a prefix of the bytes sent;
  a byte that differs, or a byte beyond what was sent, breaks ``echo-exact``,
  unless it is a run of bytes that another connection sent, which breaks
  ``no-crosstalk``;
* what was sent and not yet received is *owed*; the server's EOF or reset
  while something is owed breaks ``echo-complete`` (or ``half-close`` when
  the client had half-closed);
* a reset the client did not cause breaks ``half-close`` after the client's
  SHUT_WR (a graceful close was due) and ``echo-complete`` otherwise;
* but a server that drops (closes or resets) a client that was sending
  without reading its echo applies a policy, legal if impolite: that is a
  *non-strict* ``bounded-memory`` finding, not a broken echo.

Segmentation never matters: feeding ``received(b"ab")`` or ``received(b"a")``
then ``received(b"b")`` gives the same verdicts. The oracle keeps the first
problem of each connection; later bytes on a broken stream say nothing new.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

# A run shorter than this found in another connection's stream could be chance.
CROSSTALK_MIN_RUN = 4
CROSSTALK_PROBE = 32

BOUNDED_MEMORY = "bounded-memory"
ECHO_EXACT = "echo-exact"
ECHO_COMPLETE = "echo-complete"
HALF_CLOSE = "half-close"
NO_CROSSTALK = "no-crosstalk"


@dataclass(frozen=True)
class Problem:
    property_name: str
    conn: Hashable
    message: str
    strict: bool = True  # False: legal but impolite (a non-strict finding)


@dataclass
class _Stream:
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    shut_write: bool = False  # the client half-closed
    client_reset: bool = False  # the client closed or reset: no more verdicts on reception
    eof: bool = False
    reset: bool = False
    problem: Problem | None = None
    mismatch_at: int | None = None  # first wrong byte, judged once enough follows it


class EchoOracle:
    def __init__(self) -> None:
        self._streams: dict[Hashable, _Stream] = {}

    # -- what happened ------------------------------------------------------

    def opened(self, conn: Hashable) -> None:
        self._streams.setdefault(conn, _Stream())

    def sent(self, conn: Hashable, data: bytes) -> None:
        self._stream(conn).sent += data

    def shut_write(self, conn: Hashable) -> None:
        self._stream(conn).shut_write = True

    def client_gone(self, conn: Hashable) -> None:
        """The client closed or reset: what the server does next is not owed to it."""
        self._stream(conn).client_reset = True

    def received(self, conn: Hashable, data: bytes) -> None:
        stream = self._stream(conn)
        start = len(stream.received)
        stream.received += data
        if stream.problem is not None or not data:
            return
        if stream.mismatch_at is None:
            expected = stream.sent[start : start + len(data)]
            if expected == data:
                return
            offset = next(
                (i for i, (a, b) in enumerate(zip(expected, data, strict=False)) if a != b), len(expected)
            )
            stream.mismatch_at = start + offset
        # Judge once enough unexpected bytes are in to recognise a run from
        # another connection, so the verdict does not depend on segmentation.
        if len(stream.received) - stream.mismatch_at >= CROSSTALK_PROBE:
            stream.problem = self._judge_mismatch(conn, stream, stream.mismatch_at)

    def eof(self, conn: Hashable, *, not_reading: bool = False) -> None:
        """The server's FIN; ``not_reading``: the client was sending without reading its echo."""
        stream = self._stream(conn)
        stream.eof = True
        self._settle_mismatch(conn, stream)
        if stream.problem is None and not stream.client_reset:
            owed = len(stream.sent) - len(stream.received)
            if owed > 0 and not_reading and not stream.shut_write:
                stream.problem = _dropped(conn, "closed", owed)
            elif owed > 0:
                prop = HALF_CLOSE if stream.shut_write else ECHO_COMPLETE
                stream.problem = Problem(
                    prop, conn, f"the server closed (FIN) with {owed} of {len(stream.sent)} bytes still owed"
                )

    def reset(self, conn: Hashable, *, not_reading: bool = False) -> None:
        """The server's RST; ``not_reading`` as for :meth:`eof`."""
        stream = self._stream(conn)
        stream.reset = True
        self._settle_mismatch(conn, stream)
        if stream.problem is None and not stream.client_reset:
            owed = len(stream.sent) - len(stream.received)
            if not_reading and not stream.shut_write:
                stream.problem = _dropped(conn, "reset", owed)
            elif stream.shut_write:
                stream.problem = Problem(
                    HALF_CLOSE,
                    conn,
                    f"the server reset the connection after the client's half-close ({owed} bytes owed)"
                    " instead of echoing and closing with FIN",
                )
            else:
                stream.problem = Problem(
                    ECHO_COMPLETE, conn, f"the server reset the connection with {owed} bytes owed"
                )

    # -- questions ----------------------------------------------------------

    def owed(self, conn: Hashable) -> int:
        stream = self._stream(conn)
        return max(0, len(stream.sent) - len(stream.received))

    def sent_count(self, conn: Hashable) -> int:
        return len(self._stream(conn).sent)

    def received_count(self, conn: Hashable) -> int:
        return len(self._stream(conn).received)

    def diverged(self, conn: Hashable) -> bool:
        """Has a received byte already differed from what was sent (or gone beyond it)?"""
        return self._stream(conn).mismatch_at is not None

    def is_prefix(self, conn: Hashable) -> bool:
        stream = self._stream(conn)
        return stream.sent[: len(stream.received)] == stream.received

    def problem(self, conn: Hashable) -> Problem | None:
        """The connection's first problem, judging a pending mismatch on what has arrived."""
        stream = self._stream(conn)
        if stream.problem is None and stream.mismatch_at is not None:
            return self._judge_mismatch(conn, stream, stream.mismatch_at)
        return stream.problem

    def problems(self) -> list[Problem]:
        found = (self.problem(conn) for conn in self._streams)
        return [p for p in found if p is not None]

    def sender_of(self, data: bytes) -> Hashable | None:
        """A connection whose sent bytes contain ``data`` (a run long enough not to be chance), or None."""
        return self._source_of(None, data)

    @property
    def connections(self) -> list[Hashable]:
        return list(self._streams)

    # -- internals ----------------------------------------------------------

    def _stream(self, conn: Hashable) -> _Stream:
        try:
            return self._streams[conn]
        except KeyError:
            raise KeyError(f"connection {conn!r} was never opened in the oracle") from None

    def _settle_mismatch(self, conn: Hashable, stream: _Stream) -> None:
        if stream.problem is None and stream.mismatch_at is not None:
            stream.problem = self._judge_mismatch(conn, stream, stream.mismatch_at)

    def _judge_mismatch(self, conn: Hashable, stream: _Stream, offset: int) -> Problem:
        unexpected = bytes(stream.received[offset : offset + CROSSTALK_PROBE])
        source = self._source_of(conn, unexpected)
        if source is not None:
            return Problem(
                NO_CROSSTALK,
                conn,
                f"received bytes that connection {source!r} sent, at offset {offset}: "
                f"{unexpected[:16].hex()}",
            )
        # Messages name offsets, never running totals: the verdict (and its
        # text) must not depend on how much had arrived when it was judged.
        if offset >= len(stream.sent):
            return Problem(
                ECHO_EXACT,
                conn,
                f"received bytes beyond the {len(stream.sent)} sent, from offset {offset} "
                f"(extra bytes start {unexpected[:16].hex()})",
            )
        want = bytes(stream.sent[offset : offset + 16])
        return Problem(
            ECHO_EXACT,
            conn,
            f"byte {offset} differs: expected {want.hex()}..., received {unexpected[:16].hex()}...",
        )

    def _source_of(self, conn: Hashable, unexpected: bytes) -> Hashable | None:
        if len(unexpected) < CROSSTALK_MIN_RUN:
            return None
        for other, stream in self._streams.items():
            if other != conn and unexpected in stream.sent:
                return other
        return None


def _dropped(conn: Hashable, how: str, owed: int) -> Problem:
    return Problem(
        BOUNDED_MEMORY,
        conn,
        f"the server {how} the connection with {owed} bytes owed while the client sent without reading "
        "its echo: it drops a client that does not read (legal, but the client loses the data)",
        strict=False,
    )
