"""Mutant: per-fd state is not cleared on close; a new connection reusing the fd inherits it.

The bug: connection state lives in a table indexed by fd, like the
``struct conn conns[MAX_FD]`` of a C server. :meth:`close_connection` leaves
the slot's output buffer as it is, and :meth:`add_connection` resets the
flags of the slot it reuses but not its buffer. The kernel hands out the
lowest free descriptor, so the next client usually gets the same fd number,
and with it the bytes that were still queued for the previous client.

Caught by **no-crosstalk**: a client that connects after another one was
reset with output pending receives the other client's bytes before its own
(**echo-exact** sees it too).

Real world: ``conns[fd].state = READING;`` on accept, but ``conns[fd].outlen``
is only zeroed at startup (or a ``memset`` on close was forgotten).
"""

from __future__ import annotations

import contextlib
import socket
import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import EPOLLIN, Connection, ReferenceServer

BUG = "per-fd state is kept after close: a new connection that gets the same fd inherits the old output"
EXPECTED_PROPERTY = "no-crosstalk"
DEFAULT_MODE = "lt"
REAL_WORLD = "a conns[MAX_FD] table whose slot is reinitialised on accept except for its output buffer"


class StaleStateOnFdReuseServer(ReferenceServer):
    def __init__(self, listener: socket.socket, mode: str = "lt", max_connections: int | None = None) -> None:
        # The per-fd table; set before the reference's __init__, which may accept.
        self.slots: dict[int, Connection] = {}
        super().__init__(listener, mode, max_connections)

    def add_connection(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = self.slots.get(sock.fileno())
        if conn is None:
            conn = self.slots[sock.fileno()] = Connection(sock)
        else:
            # BUG: the slot is reinitialised field by field, and conn.out is forgotten
            conn.sock = sock
            conn.fd = sock.fileno()
            conn.reading = True
            conn.eof = False
        conn.mask = EPOLLIN | self.trigger
        self.epoll.register(conn.fd, conn.mask)
        self.connections[conn.fd] = conn

    def close_connection(self, conn: Connection) -> None:
        if self.connections.pop(conn.fd, None) is None:
            return
        with contextlib.suppress(OSError):
            self.epoll.unregister(conn.fd)
        conn.sock.close()
        # (the reference drops conn.out here; the slot keeps it)
        if not self.accepting and not self.stopping:
            self._resume_accepting()


def main(argv: list[str] | None = None) -> int:
    return run_mutant("stale_state_on_fd_reuse", StaleStateOnFdReuseServer, BUG, DEFAULT_MODE, argv)


if __name__ == "__main__":
    sys.exit(main())
