"""Play a client script against a server address, and write down what happened.

The executor is single-threaded and deterministic: steps run in script order,
each on non-blocking sockets with a deadline, so no server behaviour can hang
it. Every byte sent and received goes to an :class:`EchoOracle`; everything
else worth judging (a read that stalled, a connect that failed, a flood that
filled the pipe) becomes an :class:`Event` in the :class:`Transcript`.

At the end of a script the executor *settles*: it reads everything still
owed on every open connection, calls the ``checkpoint`` hook at that quiet
moment (with connections open and idle), then reads half-closed connections
to EOF and closes the rest gracefully.

The executor does not look at the server process: the optional
``checkpoint(name, executor)`` hook is where an observer does that (after a
flood, at the quiet moment), in the spirit of trio's stream hooks.
"""

from __future__ import annotations

import errno
import fcntl
import selectors
import socket
import struct
import termios
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

from harness.limits import DEFAULT_LIMITS, Limits
from harness.oracle import EchoOracle
from harness.quiescence import QUIET_REASON, HopelessWait
from harness.script import (
    AbortConnect,
    BurstConnect,
    Close,
    Connect,
    Flood,
    InjectReset,
    Pause,
    Read,
    ReadToEof,
    Reset,
    Script,
    Send,
    ShutdownWrite,
    Step,
    pattern_bytes,
)

RECV_SIZE = 256 * 1024
FLOOD_CHUNK = 64 * 1024
BURST_ID_BASE = 1_000_000
FAST_READ_RCVBUF = 1024 * 1024
# While a read or a burst waits: select() in slices this long, so that a
# HopelessWait is asked about as often as it may be.
SELECT_SLICE = 0.02
SETTLE_STEP = -1  # the step index recorded for events of the settle phase
LINGER_ZERO = struct.pack("ii", 1, 0)

# Event kinds (the properties module maps them to property names).
CONNECT_FAILED = "connect-failed"
READ_STALLED = "read-stalled"
HOL_STALLED = "read-stalled-behind-flood"  # stalled while another client was not reading
EOF_MISSING = "eof-missing"
INJECTION_UNAVAILABLE = "injection-unavailable"  # no property: the harness lacked a capability
STEP_TIMEOUT = "step-timeout"  # no property: the server was slow, not stuck
SEND_FAILED = "send-failed"
BURST_FAILED = "burst-failed"
FLOOD = "flood"

Checkpoint = Callable[[str, "Executor"], None]


class ServerWatch(Protocol):
    """What the executor asks about the server while a client waits on it (a Checker answers)."""

    def blocked_on(self, executor: Executor, stalled: Client) -> str | None:
        """What the server is blocked on elsewhere (a write to another client's full socket), or None."""

    def quiescent(self) -> bool:
        """Can the server do nothing more without new input (so no byte can come)?"""


@dataclass(frozen=True)
class Event:
    step: int
    conn: Hashable | None
    kind: str
    detail: str


@dataclass
class Client:
    conn: Hashable
    sock: socket.socket
    port: int
    write_shut: bool = False
    eof: bool = False
    reset: bool = False
    closed: bool = False
    flooded: int = 0  # bytes sent by floods, not read back yet when the flood ended
    small_rcvbuf: bool = False  # a slow reader's SO_RCVBUF is in force


@dataclass
class Transcript:
    script: Script
    oracle: EchoOracle = field(default_factory=EchoOracle)
    events: list[Event] = field(default_factory=list)
    evidence: set[str] = field(default_factory=set)
    client_ports: dict[Hashable, int] = field(default_factory=dict)
    max_pending: int = 0  # largest amount owed to a client at a checkpoint (a target for Hypothesis)
    stalled: bool = False  # a deadline expired: the script stops there

    def add(self, step: int, conn: Hashable | None, kind: str, detail: str) -> None:
        self.events.append(Event(step, conn, kind, detail))


def bytes_queued_in(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive queue (SIOCINQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


class Executor:
    def __init__(
        self,
        address: tuple[str, int],
        limits: Limits = DEFAULT_LIMITS,
        checkpoint: Checkpoint | None = None,
        watch: ServerWatch | None = None,
    ) -> None:
        self.address = address
        self.limits = limits
        self.checkpoint = checkpoint
        self.watch = watch
        self.clients: dict[Hashable, Client] = {}
        self.orphans: list[socket.socket] = []  # sockets whose connection was reset on the wire
        self.transcript = Transcript(Script(()))
        self.step_index = 0

    @property
    def oracle(self) -> EchoOracle:
        return self.transcript.oracle

    # -- running ------------------------------------------------------------

    def run(self, script: Script) -> Transcript:
        self.transcript = Transcript(script)
        try:
            for index, step in enumerate(script.steps):
                self.step_index = index
                self.run_step(step)
                if self.transcript.stalled:
                    # The verdict is in; every later read would only wait out
                    # its own deadline, and shrinking replays this many times.
                    return self.transcript
            self.step_index = SETTLE_STEP
            self.settle()
        finally:
            self.abort_all()
        return self.transcript

    def run_step(self, step: Step) -> None:
        handler = _HANDLERS[type(step)]
        handler(self, step)

    def settle(self) -> None:
        live = [c for c in self.clients.values() if not c.closed]
        for client in live:
            if not (client.eof or client.reset):
                self._read_until(client, lambda c: self.oracle.owed(c.conn) == 0)
            client.flooded = 0
        if self.checkpoint is not None:
            self._note_pending()
            self.checkpoint("quiescent", self)
        for client in live:
            if client.write_shut and not (client.eof or client.reset):
                self._read_until(client, lambda c: c.eof or c.reset, stall_kind=EOF_MISSING)
            self._close(client)

    def abort_all(self) -> None:
        for sock in self.orphans:
            sock.close()
        self.orphans.clear()
        for client in self.clients.values():
            if not client.closed:
                client.sock.close()
                client.closed = True

    # -- steps --------------------------------------------------------------

    def _connect(self, step: Connect) -> None:
        sock = self._open_socket(step.rcvbuf, step.nodelay)
        try:
            sock.settimeout(self.limits.connect_timeout)
            sock.connect(self.address)
        except OSError as exc:
            sock.close()
            self.oracle.opened(step.conn)
            self.oracle.client_gone(step.conn)
            self.transcript.add(self.step_index, step.conn, CONNECT_FAILED, _describe_os_error(exc))
            return
        sock.setblocking(False)
        self._register(step.conn, sock).small_rcvbuf = step.rcvbuf is not None

    def _open_socket(self, rcvbuf: int | None, nodelay: bool) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so that the window offered in the SYN is small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _register(self, conn: Hashable, sock: socket.socket) -> Client:
        port = sock.getsockname()[1]
        client = Client(conn, sock, port)
        self.clients[conn] = client
        self.oracle.opened(conn)
        self.transcript.client_ports[conn] = port
        return client

    def _live(self, conn: Hashable) -> Client | None:
        client = self.clients.get(conn)
        if client is None or client.closed:
            return None  # its connect failed: the event is recorded already
        return client

    def _send(self, step: Send) -> None:
        client = self._live(step.conn)
        if client is None:
            return
        data = step.payload.materialize(step.conn) if step.payload.size else step.payload.literal
        pieces = _cut(data, step.fragments)
        for i, piece in enumerate(pieces):
            if i and step.delay_ms:
                time.sleep(step.delay_ms / 1000)
            if not self._send_all(client, piece):
                return

    def _send_all(self, client: Client, data: bytes) -> bool:
        """Send everything, reading the echo meanwhile; False if the connection broke."""
        view = memoryview(data)
        # Most writes go out in one send(): a selector is made only when the
        # socket is full and the echo has to be read to make room.
        sel: selectors.BaseSelector | None = None
        try:
            started = last_progress = time.monotonic()
            while view:
                try:
                    sent = client.sock.send(view)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._broken(client, exc)
                    return False
                if sent:
                    self.oracle.sent(client.conn, bytes(view[:sent]))
                    view = view[sent:]
                    last_progress = time.monotonic()
                    continue
                now = time.monotonic()
                if now - started > self.limits.step_timeout:
                    self._cut_short(client)
                    return False
                if now - last_progress > self.limits.stall_timeout:
                    detail = (
                        f"the server took no bytes for {self.limits.stall_timeout:.1f} s "
                        f"({len(view)} of {len(data)} bytes unsent) while the client kept reading"
                    )
                    # As for reads: stuck while the server blocks on another client.
                    blocker = self._blocker(client)
                    if blocker:
                        detail += f", while {blocker}"
                    self.transcript.add(
                        self.step_index, client.conn, HOL_STALLED if blocker else SEND_FAILED, detail
                    )
                    self.transcript.stalled = True
                    return False
                # The server's echo fills this client's window: the client reads
                # it in bulk now, so a slow reader's small window has done its job.
                self._read_fast(client)
                if sel is None:
                    sel = selectors.DefaultSelector()
                    sel.register(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                for _key, mask in sel.select(self.limits.stall_timeout / 10):
                    if mask & selectors.EVENT_READ and not self._recv_once(client):
                        return False
        finally:
            if sel is not None:
                sel.close()
        return True

    def _flood(self, step: Flood) -> None:
        client = self._live(step.conn)
        if client is None:
            return
        # Negative seeds: a flood's bytes never equal a Send pattern's on the same connection.
        data = memoryview(pattern_bytes(step.size, -1 - step.seed, step.conn))
        offset = 0
        sel = selectors.DefaultSelector()
        sel.register(client.sock, selectors.EVENT_WRITE)
        started = time.monotonic()
        full = False
        try:
            while offset < len(data) and time.monotonic() - started < self.limits.step_timeout:
                try:
                    sent = client.sock.send(data[offset : offset + FLOOD_CHUNK])
                except BlockingIOError:
                    if not sel.select(self.limits.flood_stall):
                        full = True  # nothing moves: every buffer on the way is full
                        break
                    continue
                except OSError as exc:
                    self._broken(client, exc)
                    break
                self.oracle.sent(client.conn, bytes(data[offset : offset + sent]))
                offset += sent
        finally:
            sel.close()
        client.flooded = self.oracle.owed(client.conn)
        self.transcript.add(
            self.step_index, client.conn, FLOOD, f"{offset} of {step.size} bytes taken; pipe full: {full}"
        )
        if full:
            self.transcript.evidence.add("flood filled every buffer up to the client")
        if self.checkpoint is not None:
            self._note_pending()
            self.checkpoint("flood", self)

    def _read(self, step: Read) -> None:
        client = self._live(step.conn)
        if client is None or client.eof or client.reset:
            return
        oracle = self.oracle
        owed = oracle.owed(step.conn)
        want = owed if step.nbytes is None else min(step.nbytes, owed)
        target = oracle.received_count(step.conn) + want
        self._read_until(client, lambda c: oracle.received_count(c.conn) >= target, step.chunk, step.pace_ms)
        client.flooded = min(client.flooded, oracle.owed(step.conn))

    def _read_to_eof(self, step: ReadToEof) -> None:
        client = self._live(step.conn)
        if client is None or client.eof or client.reset:
            return
        kind = EOF_MISSING if client.write_shut else READ_STALLED
        self._read_until(client, lambda c: c.eof or c.reset, step.chunk, step.pace_ms, stall_kind=kind)
        client.flooded = 0

    def _pause(self, step: Pause) -> None:
        time.sleep(step.ms / 1000)

    def _shutdown(self, step: ShutdownWrite) -> None:
        client = self._live(step.conn)
        if client is None:
            return
        if self._pending_in_server(client) > 0:
            self.transcript.evidence.add("half-close with output pending in the server")
        try:
            client.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._broken(client, exc)
            return
        client.write_shut = True
        self.oracle.shut_write(client.conn)

    def _close_step(self, step: Close) -> None:
        client = self._live(step.conn)
        if client is not None:
            self._close(client)

    def _reset(self, step: Reset) -> None:
        client = self._live(step.conn)
        if client is None:
            return
        if self._pending_in_server(client) > 0:
            self.transcript.evidence.add("reset with output pending in the server")
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        self._close(client)

    def _abort_connect(self, step: AbortConnect) -> None:
        sock = self._open_socket(None, True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        try:
            sock.settimeout(self.limits.connect_timeout)
            sock.connect(self.address)
        except OSError as exc:
            self.transcript.add(self.step_index, step.conn, CONNECT_FAILED, _describe_os_error(exc))
        finally:
            sock.close()  # RST, most likely before the server's accept()
        self.oracle.opened(step.conn)
        self.oracle.client_gone(step.conn)

    def _inject_reset(self, step: InjectReset) -> None:
        """An RST forged on the wire (scapy), not sent by either socket."""
        client = self._live(step.conn)
        if client is None:
            return
        from harness.wire import InjectionUnavailable, inject_reset

        if step.toward == "client" and self._pending_in_server(client) <= 0:
            # Nothing the server still has to send: it would never meet the
            # RST, and an idle half-open connection is not a server bug.
            self.transcript.evidence.add("no RST forged toward the client: nothing was pending in the server")
            self._close(client)
            return
        try:
            inject_reset(client.sock, step.toward)
        except InjectionUnavailable as exc:
            self.transcript.add(self.step_index, client.conn, INJECTION_UNAVAILABLE, str(exc))
        else:
            self.transcript.evidence.add(f"RST injected toward the {step.toward}")
        # Either way the connection is over for the script: the server owes it
        # nothing. The socket stays open until the end, so that what the
        # server sees is the forged RST alone, not a FIN from our close.
        self.oracle.client_gone(client.conn)
        client.closed = True
        self.orphans.append(client.sock)

    def _burst(self, step: BurstConnect) -> None:
        """Connect ``count`` sockets at once, echo a message on each, close them all."""
        base = BURST_ID_BASE + self.step_index * 1000
        sel = selectors.DefaultSelector()
        pending: dict[int, tuple[Hashable, socket.socket, bytes]] = {}
        problems: list[str] = []
        try:
            for k in range(step.count):
                conn = base + k
                sock = self._open_socket(None, True)
                sock.setblocking(False)
                err = sock.connect_ex(self.address)
                if err not in (0, errno.EINPROGRESS):
                    problems.append(f"connect {k}: {errno.errorcode.get(err, err)}")
                    sock.close()
                    continue
                message = pattern_bytes(step.size, 0, conn)
                pending[sock.fileno()] = (conn, sock, message)
                sel.register(sock, selectors.EVENT_WRITE)
            connected = self._burst_exchange(sel, pending, problems)
            if connected < step.count or problems:
                detail = f"{connected} of {step.count} burst connections echoed; " + "; ".join(problems[:3])
                self.transcript.add(self.step_index, None, BURST_FAILED, detail)
        finally:
            for _conn, sock, _message in pending.values():
                sock.close()
            sel.close()

    def _burst_exchange(
        self,
        sel: selectors.BaseSelector,
        pending: dict[int, tuple[Hashable, socket.socket, bytes]],
        problems: list[str],
    ) -> int:
        got: dict[int, bytearray] = {fd: bytearray() for fd in pending}
        sent: set[int] = set()
        done = 0
        wait = self._hopeless_wait()
        deadline = wait.last_progress + self.limits.connect_timeout + self.limits.stall_timeout
        # As for a read: a server asleep for good will accept and echo no more.
        while done < len(pending) and time.monotonic() < deadline and not wait.check():
            events = sel.select(SELECT_SLICE)
            if events:
                wait.progress()
            for key, mask in events:
                fd = key.fd
                conn, sock, message = pending[fd]
                if mask & selectors.EVENT_WRITE and fd not in sent:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        problems.append(f"connection {conn}: {errno.errorcode.get(err, err)}")
                        sel.unregister(sock)
                        continue
                    self.oracle.opened(conn)
                    sock.sendall(message)  # small: fits the socket buffer at once
                    self.oracle.sent(conn, message)
                    sent.add(fd)
                    sel.modify(sock, selectors.EVENT_READ)
                elif mask & selectors.EVENT_READ:
                    try:
                        data = sock.recv(RECV_SIZE)
                    except OSError as exc:
                        problems.append(f"connection {conn}: {_describe_os_error(exc)}")
                        self.oracle.reset(conn)
                        sel.unregister(sock)
                        continue
                    if not data:
                        self.oracle.eof(conn)
                        sel.unregister(sock)
                        continue
                    self.oracle.received(conn, data)
                    got[fd] += data
                    if len(got[fd]) >= len(message):
                        done += 1
                        sel.unregister(sock)
        if done < len(pending):
            late = f"{len(pending) - done} got no complete echo in time"
            problems.append(late + (f" (none could come: {QUIET_REASON})" if wait.hopeless else ""))
        return done

    # -- reading and closing --------------------------------------------------

    def _read_until(
        self,
        client: Client,
        done: Callable[[Client], bool],
        chunk: int | None = None,
        pace_ms: int = 0,
        stall_kind: str = READ_STALLED,
    ) -> bool:
        """Read until ``done(client)``; False (and an event) when the server stalls."""
        sel = selectors.DefaultSelector()
        sel.register(client.sock, selectors.EVENT_READ)
        since_pause = 0
        paced = 0.0
        if not pace_ms:
            self._read_fast(client)
        try:
            wait = self._hopeless_wait()
            started = wait.last_progress
            while not done(client):
                if client.eof or client.reset:
                    return False
                now = time.monotonic()
                if now - started > self.limits.step_timeout:
                    self._cut_short(client)
                    return False
                waited = now - wait.last_progress
                # A server that can do nothing more without new input will send
                # nothing: no need to wait out stall_timeout (see harness.quiescence).
                quiet = waited <= self.limits.stall_timeout and wait.check()
                if quiet or waited > self.limits.stall_timeout:
                    owed = self.oracle.owed(client.conn)
                    detail = f"no byte for {waited:.2f} s with {owed} bytes owed"
                    if stall_kind == EOF_MISSING:
                        detail = (
                            f"no EOF {waited:.2f} s after the client's half-close ({owed} bytes still owed)"
                        )
                    elif blocker := self._blocker(client):
                        stall_kind = HOL_STALLED
                        detail += f", while {blocker}"
                    if quiet:
                        detail += f"; none could come: {QUIET_REASON}"
                    self.transcript.add(self.step_index, client.conn, stall_kind, detail)
                    self.transcript.stalled = True
                    return False
                if not sel.select(min(SELECT_SLICE, self.limits.stall_timeout)):
                    continue
                before = self.oracle.received_count(client.conn)
                if not self._recv_once(client, chunk):
                    return done(client)
                wait.progress()
                # A slow reader pauses after each ``chunk`` bytes, not after
                # each recv(): with a small SO_RCVBUF one recv returns a few
                # KiB, and pausing after each would make a flood last minutes.
                since_pause += self.oracle.received_count(client.conn) - before
                if pace_ms and since_pause >= (chunk or 1):
                    if paced >= self.limits.pace_budget:
                        self._read_fast(client)  # slow enough: read the rest at full speed
                    else:
                        time.sleep(pace_ms / 1000)
                        paced += pace_ms / 1000
                    since_pause = 0
            return True
        finally:
            sel.close()

    def _blocker(self, client: Client) -> str | None:
        """Why ``client`` stalls, if it is another client: head-of-line blocking, described.

        Another open connection that flooded and has not read its echo back
        (the server may wait on it, or write to it, whatever it does); else
        what the stall probe sees: the server asleep in a write to another
        client's socket (a big Send left unread fills it just as well).
        """
        flooded = [c.conn for c in self.clients.values() if c is not client and c.flooded and not c.closed]
        if flooded:
            return f"connection(s) {flooded} had a flood unread"
        return self.watch.blocked_on(self, client) if self.watch is not None else None

    def _hopeless_wait(self) -> HopelessWait:
        return HopelessWait(self.watch.quiescent if self.watch is not None else None)

    def _cut_short(self, client: Client) -> None:
        """A step outlived step_timeout while bytes kept moving: slow, not stalled.

        That is no verdict on the server, so no property is charged; the
        script stops here and the evidence says so.
        """
        self.transcript.add(self.step_index, client.conn, STEP_TIMEOUT, "bytes still moving at step_timeout")
        self.transcript.evidence.add("script cut short: a step outlived step_timeout")
        self.transcript.stalled = True

    def _read_fast(self, client: Client) -> None:
        """Before an unpaced read (or once the pace budget is spent), undo a slow reader's small SO_RCVBUF.

        The small window did its job while the client was not reading (the
        server's send() hit EAGAIN). Reading megabytes back through a 2 KiB
        window runs into silly-window avoidance and delayed ACKs, tens of
        KiB/s, which says nothing about the server.
        """
        if client.small_rcvbuf:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FAST_READ_RCVBUF)
            client.small_rcvbuf = False

    def _recv_once(self, client: Client, chunk: int | None = None) -> bool:
        """One recv into the oracle; False on EOF or error (recorded)."""
        try:
            data = client.sock.recv(chunk or RECV_SIZE)
        except BlockingIOError:
            return True
        except OSError as exc:
            self._broken(client, exc)
            return False
        if not data:
            client.eof = True
            self.oracle.eof(client.conn)
            return False
        self.oracle.received(client.conn, data)
        return True

    def _broken(self, client: Client, exc: OSError) -> None:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
            client.reset = True
            self.oracle.reset(client.conn)
        else:
            self.transcript.add(self.step_index, client.conn, SEND_FAILED, _describe_os_error(exc))
            client.reset = True
            self.oracle.client_gone(client.conn)

    def _close(self, client: Client) -> None:
        if client.closed:
            return
        client.sock.close()
        client.closed = True
        self.oracle.client_gone(client.conn)

    def _pending_in_server(self, client: Client) -> int:
        """Echo bytes owed that are not in the client's receive queue: still in the server."""
        try:
            queued = bytes_queued_in(client.sock)
        except OSError:
            return 0
        return self.oracle.owed(client.conn) - queued

    def _note_pending(self) -> None:
        pending = max((self._pending_in_server(c) for c in self.clients.values() if not c.closed), default=0)
        self.transcript.max_pending = max(self.transcript.max_pending, pending)


def _cut(data: bytes, fragments: tuple[int, ...]) -> list[bytes]:
    pieces: list[bytes] = []
    offset = 0
    for size in fragments:
        if offset >= len(data):
            break
        pieces.append(data[offset : offset + size])
        offset += size
    if offset < len(data) or not pieces:
        pieces.append(data[offset:])
    return pieces


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name}: {exc.strerror}" if name else str(exc)


_HANDLERS: dict[type, Callable[[Executor, object], None]] = {
    Connect: Executor._connect,  # type: ignore[dict-item]
    Send: Executor._send,  # type: ignore[dict-item]
    Flood: Executor._flood,  # type: ignore[dict-item]
    Read: Executor._read,  # type: ignore[dict-item]
    ReadToEof: Executor._read_to_eof,  # type: ignore[dict-item]
    Pause: Executor._pause,  # type: ignore[dict-item]
    ShutdownWrite: Executor._shutdown,  # type: ignore[dict-item]
    Close: Executor._close_step,  # type: ignore[dict-item]
    Reset: Executor._reset,  # type: ignore[dict-item]
    AbortConnect: Executor._abort_connect,  # type: ignore[dict-item]
    BurstConnect: Executor._burst,  # type: ignore[dict-item]
    InjectReset: Executor._inject_reset,  # type: ignore[dict-item]
}

__all__ = ["Event", "Executor", "Transcript"]
