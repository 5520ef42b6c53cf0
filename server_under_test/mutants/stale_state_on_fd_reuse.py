"""Mutant: per-fd state is not cleared on close; a new connection reusing the fd inherits it.

The bug: connection state lives in a table indexed by fd, like the
``struct conn conns[MAX_FD]`` of a C server. The slot's output buffer
outlives the connection, and :meth:`new_connection` starts the connection of
the slot it reuses afresh, all but its buffer. The kernel hands out the
lowest free descriptor, so the next client usually gets the same fd number,
and with it the bytes that were still queued for the previous client.

Caught by **no-crosstalk**: a client that connects after another one was
reset with output pending receives the other client's bytes before its own
(**echo-exact** sees it too).

Real world: ``conns[fd].state = READING;`` on accept, but ``conns[fd].outlen``
is only zeroed at startup (or a ``memset`` on close was forgotten).
"""

from __future__ import annotations

import socket
import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer

# The per-fd table's output buffers, ``conns[fd].out``: never cleared on close.
SLOT_OUT: dict[int, bytearray] = {}


class StaleStateOnFdReuseServer(ReferenceServer):
    def new_connection(self, sock: socket.socket) -> Connection:
        conn = super().new_connection(sock)
        # BUG: the fd's slot is reused with the output buffer its last connection left behind
        conn.out = SLOT_OUT.setdefault(conn.fd, conn.out)
        return conn


if __name__ == "__main__":
    sys.exit(run_mutant(StaleStateOnFdReuseServer))
