"""Mutant: one output buffer shared by all connections.

The bug: :meth:`add_connection` gives every connection the same output
buffer (a single global ``outbuf``). While one client is slow, the bytes
queued for it are sent to whichever connection flushes next: clients receive
each other's data.

Caught by **no-crosstalk**: no client may ever receive a byte another client
sent.

Real world: a global ``static char buf[]`` / ``outbuf`` in a single-client
example that was later made to serve many connections.
"""

from __future__ import annotations

import socket
import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import EPOLLIN, Connection, ReferenceServer

BUG = "one output buffer is shared by all connections: queued bytes go to whichever client flushes"
EXPECTED_PROPERTY = "no-crosstalk"
DEFAULT_MODE = "lt"
REAL_WORLD = "a global output buffer left over from a one-client example"


class SharedOutputBufferServer(ReferenceServer):
    def __init__(self, listener: socket.socket, mode: str = "lt", max_connections: int | None = None) -> None:
        # Set before the reference's __init__, which may accept.
        self.shared_out = bytearray()
        super().__init__(listener, mode, max_connections)

    def add_connection(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock)
        conn.out = self.shared_out  # BUG: every connection queues into the same buffer
        conn.mask = EPOLLIN | self.trigger
        self.epoll.register(conn.fd, conn.mask)
        self.connections[conn.fd] = conn


def main(argv: list[str] | None = None) -> int:
    return run_mutant("shared_output_buffer", SharedOutputBufferServer, BUG, DEFAULT_MODE, argv)


if __name__ == "__main__":
    sys.exit(main())
