"""Connections: open, register, close, reset, abort; the socket primitives every concern uses.

:class:`Connections` holds the executor's state (the clients by connection
id, the transcript being written) and the plumbing under every step: opening
a client socket, one ``recv()`` into the oracle, a broken connection, a close.
The other concerns (waits, data, faults) build on it, one class each.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
import termios
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Protocol

from harness.model.limits import DEFAULT_LIMITS, Limits
from harness.model.oracle import EchoOracle
from harness.model.script import AbortConnect, Close, Connect, Reset, Script
from harness.model.transcript import CONNECT_FAILED, SEND_FAILED, AcceptQueue, Transcript

RECV_SIZE = 256 * 1024
LINGER_ZERO = struct.pack("ii", 1, 0)

Checkpoint = Callable[[str, "Connections"], None]


class ServerWatch(Protocol):
    """What the executor asks about the server while a client waits on it (a Checker answers)."""

    def blocked_on(self, executor: Connections, stalled: Client) -> str | None:
        """What the server is blocked on elsewhere (a write to another client's full socket), or None."""

    def quiescent(self) -> bool:
        """Can the server do nothing more without new input (so no byte can come)?"""

    def accept_queue(self) -> AcceptQueue | None:
        """The server's listen backlog now: connections waiting for accept(), and the limit."""

    def caught_up(self, *, first_look: bool = False) -> bool:
        """Has the server read all it was sent and gone back to waiting for events?"""

    def asleep(self) -> bool:
        """Does the server sleep until an event comes (no timer, not running, not blocked)?"""

    def asleep_between_looks(self) -> bool:
        """Did the server sleep until an event at the last two caught_up looks, not running between?"""

    def stopped_reading(self, client: Client) -> bool:
        """Has the server stopped reading ``client`` for good (bytes waiting, the server asleep)?"""


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
    in_flood: bool = False  # a Flood step is sending, not reading
    small_rcvbuf: bool = False  # a slow reader's SO_RCVBUF is in force

    @property
    def not_reading(self) -> bool:
        """Is the client sending without reading its echo (flooding, or a flood left unread)?"""
        return self.in_flood or self.flooded > 0


class Connections:
    """The executor's state and its connection steps: connect, close, reset, abort."""

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
        # Past this moment (time.monotonic()) a script is abandoned before its next step: a search's
        # time is up, and one example of megabytes to a slow server can take twenty seconds.
        self.give_up_at: float | None = None

    @property
    def oracle(self) -> EchoOracle:
        return self.transcript.oracle

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
            self.transcript.add(self.step_index, step.conn, CONNECT_FAILED, describe_os_error(exc))
            return
        sock.setblocking(False)
        self._register(step.conn, sock).small_rcvbuf = step.rcvbuf is not None

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
            self.transcript.add(self.step_index, step.conn, CONNECT_FAILED, describe_os_error(exc))
        finally:
            sock.close()  # RST, most likely before the server's accept()
        self.oracle.opened(step.conn)
        self.oracle.client_gone(step.conn)

    # -- plumbing -------------------------------------------------------------

    def _pending_in_server(self, client: Client) -> int:
        """Echo bytes owed that are not in the client's receive queue: still in the server."""
        try:
            queued = bytes_queued_in(client.sock)
        except OSError:
            return 0
        return self.oracle.owed(client.conn) - queued

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
            self.oracle.eof(client.conn, not_reading=client.not_reading)
            return False
        self.oracle.received(client.conn, data)
        return True

    def _broken(self, client: Client, exc: OSError) -> None:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
            client.reset = True
            self.oracle.reset(client.conn, not_reading=client.not_reading)
        else:
            self.transcript.add(self.step_index, client.conn, SEND_FAILED, describe_os_error(exc))
            client.reset = True
            self.oracle.client_gone(client.conn)

    def _close(self, client: Client) -> None:
        if client.closed:
            return
        client.sock.close()
        client.closed = True
        self.oracle.client_gone(client.conn)


def bytes_queued_in(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive queue (SIOCINQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


def describe_os_error(exc: OSError) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name}: {exc.strerror}" if name else str(exc)
