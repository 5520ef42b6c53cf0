"""Mutant: output still pending is dropped when the client half-closes.

The bug: :meth:`read_ready` closes the connection the moment ``recv()``
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
from server_under_test.reference import HIGH_WATER, Connection, ReferenceServer

BUG = "the connection is closed as soon as recv() returns EOF, dropping output still pending"
EXPECTED_PROPERTY = "half-close"
DEFAULT_MODE = "lt"
REAL_WORLD = "if (n == 0) close(fd); written for a server that assumed every send() completes"


class DropPendingOnHalfCloseServer(ReferenceServer):
    def read_ready(self, conn: Connection) -> None:
        recv_into = conn.sock.recv_into
        scratch_view = self.scratch_view
        while True:
            try:
                n = recv_into(self.scratch)
            except BlockingIOError:
                break
            except OSError:
                self.close_connection(conn)
                return
            if n == 0:
                self.close_connection(conn)  # BUG: conn.out may still hold echoed bytes
                return
            if not self.echo(conn, scratch_view[:n]):
                return
            if len(conn.out) > HIGH_WATER:
                conn.reading = False
                break
            if not self.edge_triggered:
                break
        self.update_interest(conn)


def main(argv: list[str] | None = None) -> int:
    return run_mutant("drop_pending_on_half_close", DropPendingOnHalfCloseServer, BUG, DEFAULT_MODE, argv)


if __name__ == "__main__":
    sys.exit(main())
