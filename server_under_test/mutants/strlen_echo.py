"""Mutant: each read is echoed only up to its first NUL byte.

The bug: :meth:`echo` treats the data as a C string — the length echoed is
``strlen(buf)``, not the count ``recv()`` returned. Text is echoed perfectly;
binary data loses everything from the first ``\\0`` of each read.

Caught by **echo-exact**: any payload containing a zero byte comes back short.

Real world: ``send(fd, buf, strlen(buf), 0)`` after ``recv()``, everywhere in
tutorials (and undefined behaviour when the buffer holds no NUL at all).
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class StrlenEchoServer(ReferenceServer):
    def echo(self, conn: Connection, data: memoryview) -> bool:
        nul = data.tobytes().find(0)
        if nul >= 0:
            data = data[:nul]  # BUG: strlen(), not the byte count recv() returned
        return super().echo(conn, data)


if __name__ == "__main__":
    sys.exit(run_mutant(StrlenEchoServer))
