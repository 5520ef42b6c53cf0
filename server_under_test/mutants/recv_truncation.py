"""Mutant: only the first 4 KiB of each read are echoed.

The bug: :meth:`read_ready` reads up to 64 KiB but echoes at most
:data:`ECHO_LIMIT` bytes of it — the copy into the output path is bounded by
a smaller buffer than the read. Short messages are echoed perfectly; any read
that returns more than 4 KiB loses its tail.

Caught by **echo-exact**: a burst larger than 4 KiB comes back shorter.

Real world: ``n = recv(fd, in, sizeof in, 0); memcpy(out, in, MIN(n, sizeof out));``
with ``in`` and ``out`` of different sizes after a refactoring.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import HIGH_WATER, Connection, ReferenceServer

BUG = "each read is echoed only up to 4 KiB: the tail of every larger read is lost"
EXPECTED_PROPERTY = "echo-exact"
DEFAULT_MODE = "lt"
REAL_WORLD = "recv() into a 64 KiB buffer, copied into a 4 KiB output buffer with MIN(n, sizeof out)"

ECHO_LIMIT = 4096


class RecvTruncationServer(ReferenceServer):
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
                conn.eof = True
                break
            if not self.echo(conn, scratch_view[: min(n, ECHO_LIMIT)]):  # BUG: the tail is dropped
                return
            if len(conn.out) > HIGH_WATER:
                conn.reading = False
                break
            if not self.edge_triggered:
                break
        self.update_interest(conn)


def main(argv: list[str] | None = None) -> int:
    return run_mutant("recv_truncation", RecvTruncationServer, BUG, DEFAULT_MODE, argv)


if __name__ == "__main__":
    sys.exit(main())
