"""Mutant: one output buffer shared by all connections.

The bug: :meth:`new_connection` gives every connection the same output
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
from server_under_test.reference import Connection, ReferenceServer

# The global output buffer of a one-client example, ``static char outbuf[]``.
OUTBUF = bytearray()


class SharedOutputBufferServer(ReferenceServer):
    def new_connection(self, sock: socket.socket) -> Connection:
        conn = super().new_connection(sock)
        conn.out = OUTBUF  # BUG: every connection queues into the same buffer
        return conn


if __name__ == "__main__":
    sys.exit(run_mutant(SharedOutputBufferServer))
