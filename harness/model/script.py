"""Client scripts: plain, versioned, JSON-serialisable descriptions of one run.

A script is an ordered tuple of steps over numbered connections. It says
*what* the client does, never how to judge it: the executor plays it against
a server and the oracle and properties judge the transcript. Strategies build
scripts; reproducers are scripts saved as JSON; replaying a script replays the
same steps in the same order.

Connection ids are small integers, each used by one connection only: a script
that wants fd reuse on the server closes a connection and opens a new id.
Large payloads are not stored byte by byte: a :class:`Payload` is a literal
head (bytes Hypothesis draws and shrinks: CR LF, NUL, invalid UTF-8 ...)
followed by ``size`` bytes of a deterministic pattern derived from ``seed``;
each connection's pattern differs, which is what lets the oracle tell
cross-talk from corruption.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from harness.model.errors import ScriptError

SCRIPT_VERSION = 1


@dataclass(frozen=True)
class Payload:
    """Bytes to send: the ``literal`` head, then ``size`` bytes generated from ``seed``."""

    literal: bytes = b""
    size: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ScriptError(f"Payload size must be >= 0, not {self.size}")

    @classmethod
    def of(cls, data: bytes) -> Payload:
        return cls(literal=bytes(data))

    @classmethod
    def pattern(cls, size: int, seed: int) -> Payload:
        return cls(size=size, seed=seed)

    def __len__(self) -> int:
        return len(self.literal) + self.size

    def materialize(self, conn: int) -> bytes:
        """The bytes themselves. Generated patterns depend on the connection too."""
        if not self.size:
            return self.literal
        return self.literal + pattern_bytes(self.size, self.seed, conn)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.literal or not self.size:
            out["hex"] = self.literal.hex()
        if self.size:
            out.update(size=self.size, seed=self.seed)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Payload:
        if not isinstance(obj, Mapping):
            raise ScriptError(f"a payload is an object with 'hex' and/or 'size', not {obj!r}")
        try:
            return cls(
                literal=bytes.fromhex(obj.get("hex", "")),
                size=int(obj.get("size", 0)),
                seed=int(obj.get("seed", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise ScriptError(f"bad payload {dict(obj)!r}: {exc}") from exc


#: Bulk bytes carry none of the bytes that text and C-string servers treat specially (NUL, LF, CR):
#: those come in payload heads, drawn so that the shrinker cuts a failure down to them. A CR LF
#: that bulk held by chance would make a byte-dependent bug's reproducer kilobytes of bulk that
#: cannot shrink, where a head shrinks to the two bytes that matter.
_BULK = bytes.maketrans(b"\x00\n\r", b"\x01\x0b\x0e")


def pattern_bytes(size: int, seed: int, conn: int) -> bytes:
    """Deterministic, connection-specific, incompressible bytes (with no NUL, LF or CR).

    A window of :func:`_bulk_block` (8 MiB drawn once per process from a
    fixed seed, the same in every process and run) that starts at an offset
    hashed from (seed, connection). Within a payload nothing repeats (up to
    8 MiB), and each connection's stream sits elsewhere in the block, so a
    run of a few dozen bytes found in the wrong place tells where it came
    from, and a server that drops or repeats a block is seen. A slice is a
    copy: 4 MiB in about a millisecond, where drawing them from a seeded
    generator took 25 ms, half of what the harness spent on a large echo
    (``bench/example_time.py``).
    """
    return _window(_bulk_block(), _offset(f"{seed}:{conn}"), size)


BULK_BLOCK = 8 << 20


def _offset(key: str) -> int:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % BULK_BLOCK


def _window(block: bytes, start: int, size: int) -> bytes:
    out = block[start : start + size]
    while len(out) < size:  # past the block's end: on from its start
        out += block[: size - len(out)]
    return out


@functools.cache
def _bulk_block() -> bytes:
    return random.Random("epoll-harness:bulk").randbytes(BULK_BLOCK).translate(_BULK)


@functools.cache
def _flood_block() -> bytes:
    return random.Random("epoll-harness:flood").randbytes(BULK_BLOCK).translate(_BULK)


class FloodBytes:
    """A flood's bytes, handed out a slice at a time as the flood goes.

    Deterministic per (seed, connection) like :func:`pattern_bytes`, but a
    window of a block of their own (:func:`_flood_block`), so that a flood's
    bytes are never a Send pattern's. Floods are tens of MiB at most and a
    bounded server takes a few hundred KiB of one: the window wraps around
    the block's 8 MiB. Drawing each flood's bytes from a seeded generator
    as it went took 7 % of a flood-heavy campaign's time (py-spy).
    """

    def __init__(self, seed: int, conn: int) -> None:
        self._start = _offset(f"flood:{seed}:{conn}")

    def slice(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` of the flood, or fewer: up to the block's end at most."""
        start = (self._start + offset) % BULK_BLOCK
        return _flood_block()[start : start + size]


# -- steps ------------------------------------------------------------------


@dataclass(frozen=True)
class Connect:
    """Open connection ``conn``; ``rcvbuf`` sets a small SO_RCVBUF first (a slow reader's window)."""

    op: ClassVar[str] = "connect"
    conn: int
    rcvbuf: int | None = None
    nodelay: bool = True


@dataclass(frozen=True)
class Send:
    """Write ``payload``, cut into writes of the sizes in ``fragments`` (the rest in one last write).

    Echoed bytes are read meanwhile, so a large send cannot deadlock against a
    server that applies backpressure; use :class:`Flood` to send without reading.
    """

    op: ClassVar[str] = "send"
    conn: int
    payload: Payload
    fragments: tuple[int, ...] = ()
    delay_ms: int = 0  # pause between fragments


@dataclass(frozen=True)
class Read:
    """Read ``nbytes`` more bytes (None: everything still owed), ``chunk`` at a time, ``pace_ms`` apart."""

    op: ClassVar[str] = "read"
    conn: int
    nbytes: int | None = None
    chunk: int | None = None
    pace_ms: int = 0


@dataclass(frozen=True)
class ReadToEof:
    """Read until the server's FIN (EOF), ``chunk`` at a time, ``pace_ms`` apart."""

    op: ClassVar[str] = "read_eof"
    conn: int
    chunk: int | None = None
    pace_ms: int = 0


@dataclass(frozen=True)
class Pause:
    op: ClassVar[str] = "pause"
    ms: int


@dataclass(frozen=True)
class ShutdownWrite:
    """Half-close: ``shutdown(SHUT_WR)``; the connection can still read.

    With a ``payload``, those bytes go first, corked, so that they and the
    FIN leave in one segment (an HTTP/1.0 client's request and close): the
    server's first EPOLLIN then finds data and EOF queued together, and an
    edge-triggered server that reads once per event never sees the EOF.
    """

    op: ClassVar[str] = "shutdown_wr"
    conn: int
    payload: Payload | None = None


@dataclass(frozen=True)
class Close:
    """Close. Unread echo in the client's buffer makes the kernel send RST instead of FIN."""

    op: ClassVar[str] = "close"
    conn: int


@dataclass(frozen=True)
class Reset:
    """Abort with RST: SO_LINGER on with a zero timeout, then close."""

    op: ClassVar[str] = "reset"
    conn: int


@dataclass(frozen=True)
class AbortConnect:
    """Connect and reset at once, usually before the server has accepted."""

    op: ClassVar[str] = "abort_connect"
    conn: int


@dataclass(frozen=True)
class Flood:
    """Send up to ``size`` pattern bytes without reading, until the socket stays unwritable.

    With the client not reading, the server's send() must hit EAGAIN and its
    output queue must fill; how many bytes the kernel took is in the transcript.
    """

    op: ClassVar[str] = "flood"
    conn: int
    size: int
    seed: int = 0


@dataclass(frozen=True)
class BurstConnect:
    """Open ``count`` connections at once; each sends ``size`` bytes, reads its echo and closes."""

    op: ClassVar[str] = "burst_connect"
    count: int
    size: int = 16


@dataclass(frozen=True)
class InjectReset:
    """Forge an RST with the right sequence number into connection ``conn`` (scapy, raw socket).

    ``toward="server"``: as if the client had reset; ``toward="client"``: as if
    the server had, so the client's stack answers the server's next segment
    with RST. Needs CAP_NET_RAW and CAP_NET_ADMIN (root, or the network lab).
    """

    op: ClassVar[str] = "inject_reset"
    conn: int
    toward: str = "server"


Step: TypeAlias = (
    Connect
    | Send
    | Read
    | ReadToEof
    | Pause
    | ShutdownWrite
    | Close
    | Reset
    | AbortConnect
    | Flood
    | BurstConnect
    | InjectReset
)
STEP_TYPES: dict[str, type[Step]] = {
    t.op: t
    for t in (
        Connect,
        Send,
        Read,
        ReadToEof,
        Pause,
        ShutdownWrite,
        Close,
        Reset,
        AbortConnect,
        Flood,
        BurstConnect,
        InjectReset,
    )
}


@dataclass(frozen=True)
class Script:
    steps: tuple[Step, ...]
    version: int = SCRIPT_VERSION
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        validate(self)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def connection_ids(self) -> tuple[int, ...]:
        return tuple(s.conn for s in self.steps if isinstance(s, Connect | AbortConnect))

    @property
    def bytes_sent(self) -> int:
        total = 0
        for s in self.steps:
            if isinstance(s, Send):
                total += len(s.payload)
            elif isinstance(s, ShutdownWrite):
                total += len(s.payload) if s.payload is not None else 0
            elif isinstance(s, Flood):
                total += s.size
            elif isinstance(s, BurstConnect):
                total += s.count * s.size
        return total

    # -- JSON ---------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "steps": [step_to_json(s) for s in self.steps],
            **({"meta": dict(self.meta)} if self.meta else {}),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Script:
        version = obj.get("version")
        if version != SCRIPT_VERSION:
            raise ScriptError(
                f"script version {version!r} is not supported: this harness reads version {SCRIPT_VERSION}"
            )
        steps = obj.get("steps")
        if not isinstance(steps, list):
            raise ScriptError("a script needs a list of 'steps'")
        return cls(tuple(step_from_json(s) for s in steps), meta=obj.get("meta", {}))

    @classmethod
    def loads(cls, text: str) -> Script:
        try:
            return cls.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ScriptError(f"not a JSON script: {exc}") from exc


def step_to_json(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"op": step.op}
    for name, value in vars(step).items():
        if isinstance(value, Payload):
            out[name] = value.to_json()
        elif isinstance(value, tuple):
            out[name] = list(value)
        elif value is not None:
            out[name] = value
    return out


def step_from_json(obj: Mapping[str, Any]) -> Step:
    op = obj.get("op")
    step_type = STEP_TYPES.get(str(op))
    if step_type is None:
        raise ScriptError(f"unknown step op {op!r}; known: {', '.join(sorted(STEP_TYPES))}")
    kwargs: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "op":
            continue
        if key == "payload":
            kwargs[key] = Payload.from_json(value)
        elif key == "fragments":
            kwargs[key] = tuple(int(v) for v in value)
        else:
            kwargs[key] = value
    try:
        return step_type(**kwargs)
    except TypeError as exc:
        raise ScriptError(f"bad {op!r} step {dict(obj)!r}: {exc}") from exc


def validate(script: Script) -> None:
    """Raise ScriptError unless every step refers to a connection in a state that allows it."""
    if script.version != SCRIPT_VERSION:
        raise ScriptError(f"script version must be {SCRIPT_VERSION}, not {script.version}")
    open_: set[int] = set()
    used: set[int] = set()
    write_shut: set[int] = set()
    for index, step in enumerate(script.steps):
        where = f"step {index} ({step.op})"
        if isinstance(step, Connect | AbortConnect):
            if step.conn in used:
                raise ScriptError(f"{where}: connection id {step.conn} is used twice; open a new id")
            used.add(step.conn)
            if isinstance(step, Connect):
                if step.rcvbuf is not None and step.rcvbuf < 1:
                    raise ScriptError(f"{where}: rcvbuf must be positive, not {step.rcvbuf}")
                open_.add(step.conn)
        elif isinstance(step, Pause):
            if step.ms < 0:
                raise ScriptError(f"{where}: ms must be >= 0, not {step.ms}")
        elif isinstance(step, BurstConnect):
            if step.count < 1 or step.size < 1:
                raise ScriptError(f"{where}: count and size must be >= 1, not {step.count}, {step.size}")
        else:
            if step.conn not in open_:
                raise ScriptError(f"{where}: connection {step.conn} is not open here")
            if isinstance(step, Close | Reset):
                open_.discard(step.conn)
            elif isinstance(step, InjectReset):
                if step.toward not in ("server", "client"):
                    raise ScriptError(f"{where}: toward must be 'server' or 'client', not {step.toward!r}")
                open_.discard(step.conn)
            elif isinstance(step, Send | Flood | ShutdownWrite):
                if step.conn in write_shut:
                    raise ScriptError(f"{where}: connection {step.conn} was half-closed already")
                if isinstance(step, ShutdownWrite):
                    write_shut.add(step.conn)
            elif isinstance(step, ReadToEof) and step.conn not in write_shut:
                # The server owes EOF only after the client's own FIN: without it, a correct
                # server keeps the connection open, and the wait would be judged a stall.
                raise ScriptError(f"{where}: connection {step.conn} must be half-closed (shutdown_wr) first")
            if isinstance(step, Send) and any(f < 1 for f in step.fragments):
                raise ScriptError(f"{where}: fragment sizes must be >= 1, not {step.fragments}")
            if isinstance(step, Flood) and step.size < 1:
                raise ScriptError(f"{where}: flood size must be >= 1, not {step.size}")
            if isinstance(step, Read) and step.nbytes is not None and step.nbytes < 0:
                raise ScriptError(f"{where}: nbytes must be >= 0, not {step.nbytes}")
