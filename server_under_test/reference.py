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
    """Single-threaded epoll echo server; ``mode`` is ``"lt"`` or ``"et"``.

    Every step a real server can get wrong is a small method of its own, so
    that a mutant (``server_under_test/mutants``) overrides exactly the step it
    breaks and nothing else:

    * accepting: :meth:`accept_ready` (drain the backlog), :meth:`accept_one`,
      :meth:`on_accept_exhausted` (EMFILE), :meth:`prepare_socket`,
      :meth:`new_connection`;
    * registering: :meth:`connection_flags` (EPOLLET...),
      :meth:`writable_event` (EPOLLOUT, while output is pending);
    * events: :meth:`connection_event`, :meth:`on_hangup` (EPOLLERR/EPOLLHUP);
    * reading: :meth:`read_budget` (recv() calls per event),
      :meth:`on_recv_eagain`, :meth:`on_eof`, :meth:`pause_reading` (high water);
    * writing: :meth:`echo`, :meth:`on_short_send`, :meth:`flush`;
    * errors and closing: :meth:`on_socket_error`, :meth:`finish_half_close`,
      :meth:`close_connection`.

    :meth:`connection_flags`, :meth:`writable_event` and :meth:`read_budget`
    are asked once, at start; the per-read hooks are called only off the
    common path (EOF, a short send, high water, EAGAIN). So a level-triggered
    event costs what a loop written in one piece would, and an edge-triggered
    one a method call more (every edge-triggered event ends with EAGAIN).
    """

    def __init__(self, listener: socket.socket, mode: str = "lt", max_connections: int | None = None) -> None:
        if mode not in ("lt", "et"):
            raise ValueError(f"mode must be 'lt' or 'et', not {mode!r}")
        self.listener = listener
        self.edge_triggered = mode == "et"
        self.trigger = EPOLLET if self.edge_triggered else 0
        # Fixed for the server's life, so asked once (see each hook).
        self.flags = self.connection_flags()
        self.writable = self.writable_event()
        self.reads_per_event = self.read_budget()
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

    def connection_flags(self) -> int:
        """What every connection's registration carries whatever its state: the trigger mode.

        :meth:`update_interest` adds EPOLLIN and :meth:`writable_event` to it
        as needed. (The listener is registered with ``EPOLLIN | self.trigger``
        whatever this says.)
        """
        return self.trigger

    def writable_event(self) -> int:
        """The event asked for while output is pending, to learn when the socket takes more: EPOLLOUT.

        Only while output is pending: a connected socket is almost always
        writable, so an EPOLLOUT armed for nothing would wake a level-triggered
        loop at once, forever.
        """
        return EPOLLOUT

    def read_budget(self) -> int | None:
        """How many ``recv()`` calls one readiness event may make; None: until EAGAIN.

        Edge-triggered: until EAGAIN, since no new edge will report what is
        left. Level-triggered: :data:`LT_READS_PER_EVENT`, and a short read ends
        the event too (the queue was empty); epoll reports the socket again if
        more is left, so stopping early loses nothing, and one busy client
        cannot starve the others.
        """
        return None if self.edge_triggered else LT_READS_PER_EVENT

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
        """The listener is readable: drain the backlog.

        In edge-triggered mode no new edge comes for connections that are
        already queued, so one accept() per event would strand them.
        """
        while self.accepting and self.accept_one():
            pass

    def accept_one(self) -> bool:
        """Accept one pending connection; False when no more can be taken now."""
        if self.max_connections is not None and len(self.connections) >= self.max_connections:
            self._pause_accepting()
            return False
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in ACCEPT_SKIP:
                return True
            if exc.errno in ACCEPT_EXHAUSTED:
                self.on_accept_exhausted()
                return False
            raise
        self.add_connection(sock)
        return True

    def on_accept_exhausted(self) -> None:
        """accept() failed with EMFILE/ENFILE/ENOBUFS/ENOMEM.

        The pending connection stays in the backlog, so a level-triggered
        listener would be reported ready at once, forever: stop polling it
        until a connection closes or ACCEPT_RETRY_SECONDS pass.
        """
        self._pause_accepting()

    def add_connection(self, sock: socket.socket) -> None:
        self.prepare_socket(sock)
        conn = self.new_connection(sock)
        conn.mask = EPOLLIN | self.flags
        self.epoll.register(conn.fd, conn.mask)
        self.connections[conn.fd] = conn

    def prepare_socket(self, sock: socket.socket) -> None:
        """Make an accepted socket fit for the loop.

        Non-blocking: accept() does not pass the listener's O_NONBLOCK on, and
        one blocking send() would freeze every client.
        """
        sock.setblocking(False)
        # Echo is request/response: Nagle would hold back the tail of an echo
        # until the client's delayed ACK, 40 ms later.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def new_connection(self, sock: socket.socket) -> Connection:
        """The state of a new connection: all of it fresh, whatever fd it got."""
        return Connection(sock)

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
        if mask & EPOLL_GONE and self.on_hangup(conn):
            return
        if mask & EPOLLOUT and not self.flush(conn):
            return
        if mask & EPOLLIN and conn.reading and not conn.eof:
            self.read_ready(conn)

    def on_hangup(self, conn: Connection) -> bool:
        """EPOLLERR or EPOLLHUP, which epoll reports whatever the mask.

        A reset, or both directions shut: nobody will read an echo, so close
        (and drop the whole Connection). True when the event needs nothing
        more; False would leave it to send() and recv() to find out.
        """
        self.close_connection(conn)
        return True

    def read_ready(self, conn: Connection) -> None:
        """Read and echo, at most :meth:`read_budget` reads (see there)."""
        recv_into = conn.sock.recv_into
        scratch_view = self.scratch_view
        reads = 0
        while True:
            try:
                n = recv_into(self.scratch)
            except BlockingIOError:
                if self.on_recv_eagain(conn):
                    break
                return
            except OSError as exc:
                self.on_socket_error(conn, exc)
                return
            if n == 0:
                if self.on_eof(conn):
                    break
                return
            if not self.echo(conn, scratch_view[:n]):
                return
            if len(conn.out) > HIGH_WATER and self.pause_reading(conn):
                break
            reads += 1
            budget = self.reads_per_event
            if budget is not None and (n < RECV_CHUNK or reads >= budget):
                break
        self.update_interest(conn)

    def on_recv_eagain(self, conn: Connection) -> bool:
        """recv() would block: nothing more to read for now (the connection goes on).

        True when the connection is still open, False if this closed it.
        """
        return True

    def on_eof(self, conn: Connection) -> bool:
        """recv() returned ``b""``: the peer's FIN, a half-close.

        Stop reading; :meth:`update_interest` closes once everything pending is
        echoed. True when the connection is still open, False if this closed it.
        """
        conn.eof = True
        return True

    def pause_reading(self, conn: Connection) -> bool:
        """More than HIGH_WATER bytes are pending: stop reading (backpressure).

        :meth:`flush` reads again below LOW_WATER. True when reading paused.
        """
        conn.reading = False
        return True

    def on_socket_error(self, conn: Connection, exc: OSError) -> None:
        """recv() or send() failed with something else than EAGAIN (ECONNRESET, EPIPE...): close."""
        self.close_connection(conn)

    def echo(self, conn: Connection, data: memoryview) -> bool:
        """Send ``data`` after what is already queued; False if the connection died."""
        if conn.out:
            conn.out += data
            return True
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.on_socket_error(conn, exc)
            return False
        if sent < len(data):
            self.on_short_send(conn, data[sent:])
        return True

    def on_short_send(self, conn: Connection, rest: memoryview) -> None:
        """send() took fewer bytes than offered (none on EAGAIN): keep the rest, in order.

        :meth:`update_interest` arms EPOLLOUT while it is pending, and :meth:`flush` sends it.
        """
        conn.out += rest

    def flush(self, conn: Connection) -> bool:
        """Send queued output until EAGAIN; False if the connection is gone."""
        out = conn.out
        while out:
            try:
                sent = conn.sock.send(out)
            except BlockingIOError:
                break
            except OSError as exc:
                self.on_socket_error(conn, exc)
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
        mask = self.flags
        if conn.reading and not conn.eof:
            mask |= EPOLLIN
        if conn.out:
            mask |= self.writable
        if mask != conn.mask:
            self.epoll.modify(conn.fd, mask)
            conn.mask = mask

    def finish_half_close(self, conn: Connection) -> None:
        """Everything is echoed after the peer's FIN: send our FIN after the last byte, then let go.

        Never SO_LINGER 0: that would abort the connection with RST.
        """
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
