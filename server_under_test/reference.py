"""The reference epoll echo server: the seed's server done right.

How epoll behaves, and what this server does about it
-----------------------------------------------------
* ``recv()`` returning ``b""`` is the peer's FIN. In level-triggered mode the
  socket stays readable forever after it, so a server that does not act on
  EOF spins. We stop reading, echo what is still pending, then
  ``shutdown(SHUT_WR)`` and close: the client sees every byte, then EOF.
* EPOLLHUP and EPOLLERR are reported whatever the mask. Either means the
  connection is over (a reset, or both directions shut): we unregister, close
  and drop the whole :class:`Connection`, so a later connection that gets the
  same fd number starts from nothing.
* ``send()`` may take fewer bytes than offered. The rest is kept, in order,
  in the connection's output buffer; EPOLLOUT is armed only while that buffer
  is non-empty, so an idle server sleeps in ``epoll_wait``.
* Edge-triggered mode reports a *change* of readiness only: every accept,
  read and write loop runs until EAGAIN, and when reading was paused by
  backpressure the server resumes it by itself once output drains, because no
  new EPOLLIN edge will ask it to.
* Backpressure: above :data:`HIGH_WATER` bytes of pending output a connection
  is not read any more; below :data:`LOW_WATER` it is read again. One read adds
  at most :data:`RECV_CHUNK` bytes, so the user-space memory one connection can
  hold is bounded by ``HIGH_WATER + RECV_CHUNK`` (320 KiB), whatever the client
  does; the rest waits in the kernel's buffers and, beyond them, in the
  client's send buffer (TCP flow control).
* EMFILE/ENFILE on ``accept()`` would leave a level-triggered listener ready
  forever. We stop polling the listener instead, and poll it again when one of
  our connections closes, or after :data:`ACCEPT_RETRY_SECONDS` in case the fds
  were freed elsewhere. Pending clients wait in the listen backlog meanwhile.
* A graceful close never uses SO_LINGER 0, so it ends with FIN, not RST.
  Closing a socket whose receive queue is not empty makes the kernel send RST;
  we only close gracefully after EOF, when that queue is empty.
"""

from __future__ import annotations

import errno
import select
import signal
import socket
import sys

from server_under_test.contract import ServerOptions, run

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
RECV_CHUNK = 64 * 1024
PER_CONNECTION_BOUND = HIGH_WATER + RECV_CHUNK
ACCEPT_RETRY_SECONDS = 0.5
LT_READS_PER_EVENT = 4  # full reads per level-triggered event (bulk transfers: fewer epoll_wait calls)
MAX_EVENTS = 1024

# accept() errors that mean "out of descriptors or memory, try later".
ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# accept() errors that concern one pending connection only: skip it.
ACCEPT_SKIP = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENETDOWN})

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLET = select.EPOLLET
EPOLL_GONE = select.EPOLLERR | select.EPOLLHUP


class Connection:
    """Everything the server knows about one client; dropped whole on close."""

    __slots__ = ("sock", "fd", "out", "reading", "eof", "mask")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.out = bytearray()  # echoed bytes the kernel has not taken yet
        self.reading = True  # False while paused by backpressure
        self.eof = False  # the peer's FIN has been read
        self.mask = 0  # the events currently registered with epoll


class ReferenceServer:
    """Single-threaded epoll echo server; ``mode`` is ``"lt"`` or ``"et"``."""

    def __init__(self, listener: socket.socket, mode: str = "lt", max_connections: int | None = None) -> None:
        if mode not in ("lt", "et"):
            raise ValueError(f"mode must be 'lt' or 'et', not {mode!r}")
        self.listener = listener
        self.edge_triggered = mode == "et"
        self.trigger = EPOLLET if self.edge_triggered else 0
        self.max_connections = max_connections
        self.epoll = select.epoll()
        self.connections: dict[int, Connection] = {}
        self.accepting = False
        self.stopping = False
        # One scratch buffer for every read: the common case echoes straight
        # from it, so a short request costs no allocation at all.
        self.scratch = bytearray(RECV_CHUNK)
        self.scratch_view = memoryview(self.scratch)
        # Signals wake epoll_wait through this pair (see serve_forever).
        self.wakeup_r, self.wakeup_w = socket.socketpair()
        self.wakeup_r.setblocking(False)
        self.wakeup_w.setblocking(False)
        self.epoll.register(self.wakeup_r.fileno(), EPOLLIN)
        self._resume_accepting()

    # -- the loop ---------------------------------------------------------

    def request_stop(self) -> None:
        self.stopping = True
        try:
            self.wakeup_w.send(b"\0")
        except OSError:
            pass  # the pipe is full: a wake-up is already pending

    def serve_forever(self) -> None:
        # A signal interrupts epoll_wait, but Python retries the call after
        # running the handler (PEP 475); the wakeup fd makes it return.
        previous = signal.set_wakeup_fd(self.wakeup_w.fileno(), warn_on_full_buffer=False)
        try:
            self._loop()
        finally:
            signal.set_wakeup_fd(previous)
            self.close_all()

    def _loop(self) -> None:
        listener_fd = self.listener.fileno()
        wakeup_fd = self.wakeup_r.fileno()
        connections = self.connections
        poll = self.epoll.poll
        while not self.stopping:
            timeout = -1 if self.accepting else ACCEPT_RETRY_SECONDS
            events = poll(timeout, MAX_EVENTS)
            if not events and not self.accepting:
                self._resume_accepting()
            for fd, mask in events:
                if fd == listener_fd:
                    self.accept_ready()
                elif fd == wakeup_fd:
                    self._drain_wakeup()
                else:
                    conn = connections.get(fd)
                    # An earlier event of this batch may have closed it.
                    if conn is not None:
                        self.connection_event(conn, mask)

    def _drain_wakeup(self) -> None:
        try:
            while self.wakeup_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # -- accepting ----------------------------------------------------------

    def accept_ready(self) -> None:
        # Drain the backlog: in edge-triggered mode no new edge comes for
        # connections that are already queued.
        while self.accepting:
            if self.max_connections is not None and len(self.connections) >= self.max_connections:
                self._pause_accepting()
                return
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in ACCEPT_SKIP:
                    continue
                if exc.errno in ACCEPT_EXHAUSTED:
                    self._pause_accepting()
                    return
                raise
            self.add_connection(sock)

    def add_connection(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        # Echo is request/response: Nagle would hold back the tail of an echo
        # until the client's delayed ACK, 40 ms later.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock)
        conn.mask = EPOLLIN | self.trigger
        self.epoll.register(conn.fd, conn.mask)
        self.connections[conn.fd] = conn

    def _pause_accepting(self) -> None:
        if self.accepting:
            self.epoll.unregister(self.listener.fileno())
            self.accepting = False

    def _resume_accepting(self) -> None:
        if not self.accepting:
            self.epoll.register(self.listener.fileno(), EPOLLIN | self.trigger)
            self.accepting = True
            # Connections may have queued while we were not looking; in
            # edge-triggered mode no edge would announce them.
            if self.edge_triggered:
                self.accept_ready()

    # -- one connection -------------------------------------------------------

    def connection_event(self, conn: Connection, mask: int) -> None:
        if mask & EPOLL_GONE:
            # A reset or both directions shut: nobody will read an echo.
            self.close_connection(conn)
            return
        if mask & EPOLLOUT and not self.flush(conn):
            return
        if mask & EPOLLIN and conn.reading and not conn.eof:
            self.read_ready(conn)

    def read_ready(self, conn: Connection) -> None:
        """Read and echo: until EAGAIN in edge-triggered mode; in level-triggered
        mode while reads come back full, at most LT_READS_PER_EVENT times (epoll
        reports the socket again if more is left, so stopping early loses nothing
        and keeps one busy client from starving the others)."""
        recv_into = conn.sock.recv_into
        scratch_view = self.scratch_view
        reads = 0
        while True:
            try:
                n = recv_into(self.scratch)
            except BlockingIOError:
                break
            except OSError:
                self.close_connection(conn)
                return
            if n == 0:
                conn.eof = True
                break
            if not self.echo(conn, scratch_view[:n]):
                return
            if len(conn.out) > HIGH_WATER:
                conn.reading = False
                break
            reads += 1
            if not self.edge_triggered and (n < RECV_CHUNK or reads >= LT_READS_PER_EVENT):
                break
        self.update_interest(conn)

    def echo(self, conn: Connection, data: memoryview) -> bool:
        """Send ``data`` after what is already queued; False if the connection died."""
        if conn.out:
            conn.out += data
            return True
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close_connection(conn)
            return False
        if sent < len(data):
            conn.out += data[sent:]
        return True

    def flush(self, conn: Connection) -> bool:
        """Send queued output until EAGAIN; False if the connection is gone."""
        out = conn.out
        while out:
            try:
                sent = conn.sock.send(out)
            except BlockingIOError:
                break
            except OSError:
                self.close_connection(conn)
                return False
            del out[:sent]
        if not conn.reading and len(out) < LOW_WATER:
            conn.reading = True
            if self.edge_triggered and not conn.eof:
                # No EPOLLIN edge will come for input that is already
                # queued: resume reading ourselves, until EAGAIN.
                self.read_ready(conn)
                return conn.fd in self.connections
        self.update_interest(conn)
        return conn.fd in self.connections

    def update_interest(self, conn: Connection) -> None:
        """Close after a finished half-close, else register exactly what is needed."""
        if conn.eof and not conn.out:
            self.finish_half_close(conn)
            return
        mask = self.trigger
        if conn.reading and not conn.eof:
            mask |= EPOLLIN
        if conn.out:
            mask |= EPOLLOUT
        if mask != conn.mask:
            self.epoll.modify(conn.fd, mask)
            conn.mask = mask

    def finish_half_close(self, conn: Connection) -> None:
        # Everything is echoed: send our FIN after the last byte, then let go.
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer reset meanwhile; closing is all that is left
        self.close_connection(conn)

    def close_connection(self, conn: Connection) -> None:
        if self.connections.pop(conn.fd, None) is None:
            return
        try:
            self.epoll.unregister(conn.fd)
        except OSError:
            pass
        conn.sock.close()
        conn.out = bytearray()
        if not self.accepting and not self.stopping:
            self._resume_accepting()

    def close_all(self) -> None:
        for conn in list(self.connections.values()):
            self.close_connection(conn)
        self._pause_accepting()
        self.listener.close()
        self.epoll.close()
        self.wakeup_r.close()
        self.wakeup_w.close()


def make_server(listener: socket.socket, options: ServerOptions) -> ReferenceServer:
    return ReferenceServer(listener, options.mode, options.max_connections)


def main(argv: list[str] | None = None) -> int:
    return run(
        "python -m server_under_test",
        "The reference epoll echo server of epoll-harness.",
        make_server,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
