"""Mutant: output still pending is dropped when the client half-closes.

The bug: :meth:`on_eof` closes the connection the moment ``recv()``
returns EOF, although echoed bytes may still wait in the output buffer (the
client half-closed its sending side but still reads). The client gets a
truncated echo, then EOF.

Caught by **half-close**: a client that sends, shuts down its write side and
then reads must get every byte back before EOF.

Real world: ``if (n == 0) { close(fd); }`` — right for a server that never
buffers output, wrong once writes can be partial.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class DropPendingOnHalfCloseServer(ReferenceServer):
    def on_eof(self, conn: Connection) -> bool:
        self.close_connection(conn)  # BUG: conn.out may still hold echoed bytes
        return False


if __name__ == "__main__":
    sys.exit(run_mutant(DropPendingOnHalfCloseServer))
