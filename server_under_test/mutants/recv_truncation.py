"""Mutant: only the first 4 KiB of each read are echoed.

The bug: :meth:`read_ready` reads up to 64 KiB but :meth:`echo` echoes at most
:data:`ECHO_LIMIT` bytes of it — the copy into the output path is bounded by a
smaller buffer than the read. Short messages are echoed perfectly; any read
that returns more than 4 KiB loses its tail.

Caught by **echo-exact**: a burst larger than 4 KiB comes back shorter.

Real world: ``n = recv(fd, in, sizeof in, 0); memcpy(out, in, MIN(n, sizeof out));``
with ``in`` and ``out`` of different sizes after a refactoring.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer

ECHO_LIMIT = 4096


class RecvTruncationServer(ReferenceServer):
    def echo(self, conn: Connection, data: memoryview) -> bool:
        return super().echo(conn, data[:ECHO_LIMIT])  # BUG: the tail of a larger read is dropped


if __name__ == "__main__":
    sys.exit(run_mutant(RecvTruncationServer))
