"""Mutant: EOF from ``recv()`` is ignored.

The bug: :meth:`on_eof` treats ``recv()`` returning ``b""`` like "nothing
to read" instead of the peer's FIN. The fd stays registered for EPOLLIN,
which level-triggered epoll reports again at once, forever: the loop spins at
100 % CPU, the socket sits in CLOSE_WAIT, the fd is never closed and a
half-closing client never gets EOF.

Caught by **cleanup** (the closed client's fd stays open in the server; also
**idle-cpu** and **half-close**).

Real world: ``if (n > 0) { ... }`` with no ``else if (n == 0) close(fd);`` —
the tutorial server this project started from has exactly this bug.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class IgnoreEofServer(ReferenceServer):
    def on_eof(self, conn: Connection) -> bool:
        return True  # BUG: the peer's FIN is taken for "nothing to read yet": conn.eof is never set


if __name__ == "__main__":
    sys.exit(run_mutant(IgnoreEofServer))
